from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import storegen  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = FIXTURES / "samples"
# The SQLite version `make test-sqlite336` runs the tests on (tests/old_sqlite.py), else empty.
EXPECT_SQLITE = os.environ.get("OCSIGHT_EXPECT_SQLITE", "")


@pytest.fixture(autouse=True, scope="session")
def expected_sqlite() -> None:
    """A tier on an old SQLite gets it through LD_LIBRARY_PATH, which fails silently: a wrong path
    would test the system's SQLite. So this process must report the version the tier expects."""
    if EXPECT_SQLITE:
        import sqlite3

        assert sqlite3.sqlite_version == EXPECT_SQLITE


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own HOME and XDG directories, in UTC, with no OpenCode variables set (nor
    the ones that name the sidecar)."""
    for var, sub in (("HOME", "home"), ("XDG_DATA_HOME", "xdg-data"), ("XDG_CACHE_HOME", "xdg-cache"),
                     ("XDG_CONFIG_HOME", "xdg-config"), ("XDG_STATE_HOME", "xdg-state")):
        d = tmp_path / sub
        d.mkdir()
        monkeypatch.setenv(var, str(d))
    for var in ("OPENCODE_DATA_DIR", "OPENCODE_DB", "OPENCODE_MODELS_PATH", "OPENCODE_CONFIG", "OCSIGHT_PRICES",
                "OCSIGHT_DEBUG", "NO_COLOR", "OCSIGHT_USER_NAME", "OCSIGHT_HOST_NAME", "OCSIGHT_INSTANCE_ID",
                "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield tmp_path
    time.tzset()


@pytest.fixture
def receiver():
    """A real OTLP receiver in this process; each test starts the protocols it needs."""
    from otlp_receiver import Receiver

    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def rotel(receiver, tmp_path: Path):
    """The real collector rotel forwarding to the test's receiver (its gRPC side started); yields its
    ports by protocol."""
    from rotel_process import start_rotel

    r = start_rotel(receiver.start_grpc(), tmp_path)
    yield r.ports
    r.stop()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A copy of what OpenCode 1.18 recorded (tests/fixtures/corpora), free to change."""
    import shutil

    from corpus import store_dir

    target = tmp_path / "opencode-data"
    shutil.copytree(store_dir("opencode-1.18"), target)
    return target


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        assert self.code == 0, f"exit {self.code}: {self.err}"
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture):
    """Runs `ocsight ARGS` in-process; returns exit code, stdout and stderr."""
    from ocsight.cli import main

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def run_ocsight(*args: str, env: dict | None = None, timeout: float = 120) -> Result:
    """Runs the real console entry point in a child process (what a user's shell runs)."""
    p = subprocess.run(
        [sys.executable, "-m", "ocsight", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return Result(p.returncode, p.stdout, p.stderr)


def stats(cli, *args: str) -> dict:
    return cli("stats", "--json", *args).json()


def without_source(doc: dict) -> dict:
    """The parts of `stats --json` that must not depend on where the records were read from."""
    return {k: v for k, v in doc.items() if k != "source"}


def write_store(plan: storegen.Plan, root: Path, kind: str) -> Path:
    """Writes a plan as a data directory holding a database (`db`), a legacy tree (`json`) or both."""
    root.mkdir(parents=True, exist_ok=True)
    if kind in ("db", "both"):
        storegen.write_sqlite(plan, root / "opencode.db")
    if kind in ("json", "both"):
        storegen.write_legacy(plan, root / "storage")
    return root


@pytest.fixture
def models_json(isolated: Path) -> Path:
    """OpenCode's models.dev cache with the generator's prices, where OpenCode keeps it."""
    path = Path(os.environ["XDG_CACHE_HOME"]) / "opencode" / "models.json"
    storegen.write_models_json(path)
    return path


def records(*data_dirs: Path | str, sessions: list[str] | None = None, every_step: bool = True, **options):
    """Every normalised record of a store (or of some sessions), as consumers read them."""
    from ocsight import reading

    with reading.open_index(reading.ReadOptions(data_dirs=tuple(str(d) for d in data_dirs), **options)) as idx:
        return reading.read_records(idx, sessions, every_step)


def open_index(*data_dirs: Path | str, **options):
    """The refreshed index of a store (a context manager)."""
    from ocsight import reading

    return reading.open_index(reading.ReadOptions(data_dirs=tuple(str(d) for d in data_dirs), **options))
