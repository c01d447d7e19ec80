"""The command line: finding data, help, version, the analyze overview and the demo store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import storegen
from conftest import run_ocsight, stats, write_store


def _default_dir() -> Path:
    return Path(os.environ["XDG_DATA_HOME"]) / "opencode"


def test_data_is_found_where_opencode_keeps_it(cli):
    write_store(storegen.plan_store(seed=1, sessions=3), _default_dir(), "db")
    assert stats(cli)["totals"]["sessions"] == 3


def test_opencode_data_dir_overrides_the_default(cli, tmp_path: Path, monkeypatch):
    write_store(storegen.plan_store(seed=1, sessions=3), _default_dir(), "db")
    other = write_store(storegen.plan_store(seed=2, sessions=5), tmp_path / "other", "db")
    monkeypatch.setenv("OPENCODE_DATA_DIR", str(other))
    assert stats(cli)["totals"]["sessions"] == 5


def test_data_dir_flag_overrides_the_environment(cli, tmp_path: Path, monkeypatch):
    env = write_store(storegen.plan_store(seed=1, sessions=3), tmp_path / "env", "db")
    flag = write_store(storegen.plan_store(seed=2, sessions=5), tmp_path / "flag", "db")
    monkeypatch.setenv("OPENCODE_DATA_DIR", str(env))
    assert stats(cli, "--data-dir", str(flag))["totals"]["sessions"] == 5


def test_several_data_directories_are_read_together_without_double_counting(cli, tmp_path: Path):
    plan = storegen.plan_store(seed=3, sessions=10)
    ids = [s["id"] for s in plan.sessions]
    a, b = tmp_path / "laptop", tmp_path / "desktop"
    storegen.write_sqlite(plan, a / "opencode.db", session_ids=set(ids[:7]))
    storegen.write_sqlite(plan, b / "opencode.db", session_ids=set(ids[4:]))  # 3 sessions on both
    doc = stats(cli, "--data-dir", str(a), "--data-dir", str(b))
    assert doc["totals"]["sessions"] == 10
    assert doc["totals"] == stats(cli, "--data-dir", str(write_store(plan, tmp_path / "all", "db")))["totals"]


def test_every_channel_database_in_the_data_directory_is_read(cli, tmp_path: Path):
    plan = storegen.plan_store(seed=4, sessions=6)
    ids = [s["id"] for s in plan.sessions]
    root = tmp_path / "channels"
    storegen.write_sqlite(plan, root / "opencode.db", session_ids=set(ids[:3]))
    storegen.write_sqlite(plan, root / "opencode-dev.db", session_ids=set(ids[3:]))
    doc = stats(cli, "--data-dir", str(root))
    assert doc["totals"]["sessions"] == 6
    assert [Path(p).name for p in doc["source"]["databases"]] == ["opencode.db", "opencode-dev.db"]


def test_a_data_dir_may_name_a_database_file_or_a_storage_tree(cli, tmp_path: Path):
    plan = storegen.plan_store(seed=5, sessions=4)
    root = write_store(plan, tmp_path / "both", "both")
    by_db = stats(cli, "--data-dir", str(root / "opencode.db"))
    by_tree = stats(cli, "--data-dir", str(root / "storage"))
    assert by_db["totals"] == by_tree["totals"]


def test_help_lists_the_commands_with_examples(cli):
    r = cli("--help")
    assert r.code == 0
    assert "analyze" in r.out and "stats" in r.out and "Examples" in r.out


@pytest.mark.parametrize("command", ["analyze", "stats"])
def test_every_command_has_help_with_examples(cli, command):
    r = cli(command, "--help")
    assert r.code == 0 and "Examples" in r.out and "--data-dir" in r.out


def test_version(cli):
    from ocsight import __version__

    r = cli("--version")
    assert r.code == 0 and __version__ in r.out


def test_stats_json_is_documented_in_the_readme(cli):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    doc = stats(cli, "--demo")

    def keys(obj, prefix=""):
        for k, v in obj.items():
            yield prefix + k
            if isinstance(v, dict) and k not in ("by_reason", "filters"):
                yield from keys(v, prefix + k + ".")

    for key in keys({k: v for k, v in doc.items() if not isinstance(v, list)}):
        assert f"`{key.split('.')[-1]}`" in readme, f"README does not document {key}"
    for key in ("by_provider", "by_model", "by_agent", "by_project", "by_tool", "by_error", "unpriced_models"):
        assert f"`{key}`" in readme


def test_analyze_shows_the_overview(cli):
    r = cli("analyze", "--demo")
    assert r.code == 0, r.err
    for heading in ("Sessions", "Tokens input", "Cache hit ratio", "Cost", "By provider", "By model", "By agent",
                    "By project", "Tools"):
        assert heading in r.out, heading


def test_analyze_falls_back_to_the_demo_store_when_there_is_no_data(cli):
    r = cli("analyze")
    assert r.code == 0
    assert "demo store" in r.err and "the bundled demo store (not your data)" in r.out.splitlines()[0]


def test_stats_without_demo_does_not_fall_back(cli):
    r = cli("stats", "--json")
    assert r.code == 1 and "no OpenCode data" not in r.out


def test_analyze_reads_the_users_data_when_there_is_some(cli):
    write_store(storegen.plan_store(seed=1, sessions=3), _default_dir(), "db")
    r = cli("analyze")
    assert r.code == 0 and "demo" not in r.err.lower() and "Demo" not in r.out


def test_the_console_script_runs_the_demo(tmp_path: Path):
    r = run_ocsight("stats", "--json", "--demo")
    assert r.code == 0 and '"totals"' in r.out


def test_ocsight_alone_prints_the_help_and_succeeds(cli):
    r = cli()
    assert r.code == 0 and "Commands:" in r.out and "analyze" in r.out


@pytest.mark.parametrize("command", [("stats",), ("analyze",), ("daily", "--breakdown"), ("session",), ("export",),
                                     ("stats", "--json"), ("config",)])
def test_a_reader_that_stops_reading_ends_every_command_quietly_with_0(tmp_path: Path, command: tuple[str, ...]):
    """`ocsight ... | head -1`: here the reader is gone before the first line, so every write fails."""
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)
    demo = () if command == ("config",) else ("--demo",)
    with os.fdopen(write, "wb") as out:
        p = subprocess.run([sys.executable, "-m", "ocsight", *command, *demo], stdout=out,
                           stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    assert (p.returncode, p.stderr) == (0, "")
