"""A first run starts the genai-prices helper at launch, before the command line loads (`ocsight.launch`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_ocsight, stats
from ocsight import launch
from test_pricing import _one_message_store


def _cache() -> Path:
    return Path(os.environ["XDG_CACHE_HOME"]) / "ocsight"


@pytest.fixture(autouse=True)
def no_helper_left():
    yield
    launch._kill_unclaimed()


def test_a_reading_command_is_a_first_run_while_the_cache_holds_no_index():
    assert launch.is_first_run(["stats", "--json"])  # no cache directory
    _cache().mkdir()
    (_cache() / "index-0123456789abcdef.sqlite-wal").touch()
    assert launch.is_first_run(["daily", "--days", "7"])
    (_cache() / "index-0123456789abcdef.sqlite").touch()
    assert not launch.is_first_run(["stats", "--json"])


@pytest.mark.parametrize("args", [[], ["--version"], ["watch"], ["mcp"], ["config"], ["stats", "--help"],
                                  ["export", "-h"]])
def test_other_commands_and_help_are_not_first_runs(args: list[str]):
    assert not launch.is_first_run(args)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="genai-prices needs Python 3.11")
def test_the_helper_started_at_launch_is_the_one_the_read_asks(cli, tmp_path: Path, monkeypatch):
    from ocsight import genai_lookup

    spawned: list[int] = []
    spawn = launch.spawn_helper
    monkeypatch.setattr(launch, "spawn_helper", lambda: spawned.append(1) or spawn())
    launch.start_helper()
    early = launch._helper
    root = _one_message_store(tmp_path, "anthropic", "claude-sonnet-4-5-20250929", input=100_000, total=100_000)
    doc = stats(cli, "--cost-mode", "calculate", "--data-dir", str(root))
    assert doc["pricing"]["models"][0]["source"] == "genai-prices"
    assert doc["totals"]["cost"]["estimated_usd"] == pytest.approx(0.3)
    assert spawned == [1] and launch.take_helper() is None  # claimed, not a second one started
    assert early.wait(timeout=10) == 0  # it answered and ended
    assert genai_lookup.lookup("anthropic", "claude-sonnet-4-5-20250929") is not None


@pytest.mark.parametrize("end", ["", "; launch._exit_without_teardown()"])
def test_a_helper_nobody_asks_ends_with_the_process(end: str):
    probe = "from ocsight import launch; launch.start_helper(); print(launch._helper.pid, flush=True)" + end
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=30)
    assert not Path(f"/proc/{int(out.stdout)}").exists()


def test_the_console_script_starts_at_launch():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "ocsight"]
    assert script.value == "ocsight.launch:entry"


def test_only_a_first_run_of_the_command_starts_a_helper_at_launch(tmp_path: Path, monkeypatch, capsys):
    started: list[int] = []
    start = launch.start_helper
    monkeypatch.setattr(launch, "start_helper", lambda: started.append(1) or start())
    monkeypatch.setattr(launch, "_exit_without_teardown", lambda: None)  # not this test process
    root = _one_message_store(tmp_path, "anthropic", "claude-sonnet-4-5-20250929", input=100_000, total=100_000)
    for _run in range(2):
        monkeypatch.setattr(sys, "argv", ["ocsight", "stats", "--json", "--data-dir", str(root)])
        launch.entry()
        assert '"sessions": 1' in capsys.readouterr().out
    assert started == [1]
    assert launch.take_helper() is None  # the first run's read claimed it


def _helpers() -> set[int]:
    """Running genai-prices helper processes."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"ocsight.genai_lookup" in (proc / "cmdline").read_bytes():
                found.add(int(proc.name))
        except OSError:
            pass  # ended meanwhile
    return found


def test_a_first_run_ends_with_its_whole_output_and_no_helper_left(tmp_path: Path, models_json, monkeypatch):
    import json

    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # output to a pipe is then buffered
    before = _helpers()
    root = _one_message_store(tmp_path, "anthropic", "claude-sonnet-4-5", input=100, total=100)
    result = run_ocsight("stats", "--json", "--data-dir", str(root))  # priced by models.json: no helper asked
    assert result.code == 0 and result.err == ""
    assert json.loads(result.out)["totals"]["sessions"] == 1  # flushed, though the process skipped its teardown
    assert len(result.out) < 8192  # less than a pipe's buffer: lost unless flushed
    assert _helpers() <= before


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling policy")
def test_the_helper_runs_only_on_cores_the_read_leaves_idle():
    # nice 19 alone left a core busy to the scheduler, which then ran the read's two threads on one core
    import time

    proc = launch.spawn_helper()
    try:
        deadline = time.monotonic() + 10
        while os.sched_getscheduler(proc.pid) != os.SCHED_IDLE and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.sched_getscheduler(proc.pid) == os.SCHED_IDLE
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == 19
    finally:
        proc.kill()
        proc.wait()
