"""The benchmark's own tools: `bench/treerun.py` (a process tree's peak memory and a command's wall
time) and `storegen.write_sqlite_in_chunks` (large stores a chunk at a time)."""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import pytest

import storegen

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench  # noqa: E402


def _measure(*args: str) -> dict:
    import os

    return bench.measure([sys.executable, "-S", "-c", bench._PROBE if args[0] != "self" else _SELF, *args],
                         dict(os.environ))


_SELF = """
b = bytearray(200 << 20)
for i in range(0, len(b), 4096):
    b[i] = 1
"""


@pytest.mark.parametrize("mode", ["waited", "orphan"])
def test_the_peak_is_the_largest_process_of_the_tree(mode: str) -> None:
    """A small parent whose child allocates 200 MB: the child's peak is reported, whether the
    parent waits for it or leaves it behind (the wrapper adopts and waits for it)."""
    rep = _measure(mode)
    assert rep["exit"] == 0
    assert 200 <= rep["peak_kb"] // 1024 < 260
    assert rep["stragglers"] == (1 if mode == "orphan" else 0)


def test_the_time_is_the_commands_own() -> None:
    """The wrapper's start-up (tens of ms) is not in the time; the command's own work is."""
    import os

    env = dict(os.environ)
    assert bench.measure(["true"], env)["seconds"] < 0.05
    assert 0.3 <= bench.measure(["sleep", "0.3"], env)["seconds"] < 0.5
    assert bench.measure(["true"], env)["peak_kb"] // 1024 < 30  # the wrapper's floor
    assert 200 <= _measure("self")["peak_kb"] // 1024 < 260


def test_a_store_written_in_chunks(tmp_path: Path) -> None:
    """IDs unique and ascending, times ascending, sessions numbered throughout, projects once."""
    db = tmp_path / "opencode.db"
    started = time.perf_counter()
    counts = storegen.write_sqlite_in_chunks(db, 250, chunk=100, seed=9, turns=(2, 4), projects=4, days=5,
                                             era_of=lambda n: "1.1" if n < 100 else "1.18")
    assert time.perf_counter() - started < 30
    con = sqlite3.connect(db)
    sessions = con.execute("SELECT id, time_created, slug, version FROM session ORDER BY rowid").fetchall()
    assert len(sessions) == counts["sessions"] == 250
    assert [s[0] for s in sessions] == sorted(s[0] for s in sessions)
    assert [s[1] for s in sessions] == sorted(s[1] for s in sessions)
    assert {s[2] for s in sessions} == {f"slug-{n}" for n in range(250)}
    assert {s[3] for s in sessions[:100]} == {"1.1.65"} and {s[3] for s in sessions[100:]} == {"1.18.33"}
    assert con.execute("SELECT count(*) FROM project").fetchone()[0] == 4
    for table in ("message", "part"):
        n, distinct = con.execute(f"SELECT count(*), count(DISTINCT id) FROM {table}").fetchone()
        assert n == distinct == counts[f"{table}s"]
    assert con.execute("SELECT count(*) FROM message WHERE data LIKE '%\"role\":\"assistant\"%'").fetchone()[0] \
        == counts["assistant_messages"]


def test_one_chunk_is_the_plan_itself(tmp_path: Path) -> None:
    """A store of one chunk is what `plan_store` and `write_sqlite` write for the same arguments."""
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    storegen.write_sqlite_in_chunks(a, 40, chunk=100, seed=3, projects=2)
    storegen.write_sqlite(storegen.plan_store(seed=3, sessions=40, projects=2), b)
    rows = lambda db: [sqlite3.connect(db).execute(f"SELECT * FROM {t} ORDER BY id").fetchall()  # noqa: E731
                       for t in ("project", "session", "message", "part")]
    assert rows(a) == rows(b)
