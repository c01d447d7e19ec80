"""A first read's work on another core (a database's tool calls on a second connection, SQLite's
memory statistics off so the two connections do not contend) gives what one connection gives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import storegen
from conftest import stats, without_source, write_store

from ocsight.store.sqlite import Database
from ocsight.store.tools_ahead import ToolCallsAhead


@pytest.fixture
def store(tmp_path: Path) -> Path:
    # a database and a legacy tree holding some of the same sessions: ranks and de-duplication at work
    plan = storegen.plan_store(seed=19, sessions=40, eras=("1.18", "1.1"))
    root = write_store(plan, tmp_path / "s", "db")
    storegen.write_legacy(plan, root / "storage", {s["id"] for s in plan.sessions[::3]})
    return root


def _stats(cli, root: Path) -> dict:
    return without_source(stats(cli, "--no-cache", "--data-dir", str(root)))


def _in_one_connection(cli, root: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    with monkeypatch.context() as m:
        m.setattr(Database, "stage_tool_calls_ahead", lambda self, then=None: False)
        return _stats(cli, root)


def test_tool_calls_staged_on_a_second_connection_equal_those_staged_in_one(cli, store: Path, monkeypatch):
    copied: list[bool] = []
    copy_into = ToolCallsAhead.copy_into
    monkeypatch.setattr(ToolCallsAhead, "copy_into", lambda self, con: copied.append(copy_into(self, con)) or copied[-1])
    ahead = _stats(cli, store)
    assert copied == [True]
    assert ahead["by_tool"] and ahead == _in_one_connection(cli, store, monkeypatch)


def test_a_scan_ahead_that_fails_leaves_the_tool_calls_to_the_reading_connection(cli, store: Path, monkeypatch):
    monkeypatch.setattr(ToolCallsAhead, "run", lambda self: None)  # as if its statement had failed
    doc = _stats(cli, store)
    assert doc["by_tool"] and doc == _in_one_connection(cli, store, monkeypatch)


def test_a_database_written_during_the_scan_leaves_the_tool_calls_to_the_reading_connection(
        cli, store: Path, monkeypatch):
    # The reading connection's snapshot is the one before the write: only its own scan matches it.
    from ocsight.store import sqlite as sqlite_store

    stamps = iter([[1], [2]])  # the stamp taken before the read, then the one checked after the scan
    monkeypatch.setattr(Database, "changed_under_us", lambda self: False)
    monkeypatch.setattr(sqlite_store, "file_stamp", lambda path: next(stamps, [2]))
    copied: list[bool] = []
    monkeypatch.setattr(ToolCallsAhead, "copy_into", lambda self, con: copied.append(True) or True)
    doc = _stats(cli, store)
    assert copied == [] and doc["by_tool"] and doc == _in_one_connection(cli, store, monkeypatch)


PROBE = """
import ctypes, sqlite3, sys
from ocsight import sqlite_tuning
done = sqlite_tuning.disable_memory_statistics() if sys.argv[1] == "off" else None
con = sqlite3.connect(":memory:")
con.execute("CREATE TABLE t (x)")
con.executemany("INSERT INTO t VALUES (?)", [(str(i) * 20,) for i in range(2000)])
lib = ctypes.CDLL(sqlite_tuning._loaded_library())
lib.sqlite3_memory_used.restype = ctypes.c_int64
print(done, lib.sqlite3_memory_used())
"""


@pytest.mark.parametrize("setting", ["on", "off"])
def test_the_ocsight_process_turns_sqlites_memory_statistics_off(setting: str):
    out = subprocess.run([sys.executable, "-c", PROBE, setting], capture_output=True, text=True, check=True).stdout
    done, used = out.split()
    if setting == "off":
        assert (done, used) == ("True", "0")
    else:
        assert int(used) > 100_000  # kept by default: the probe can tell


def test_long_running_consumers_stage_their_tool_calls_in_one_connection(store: Path, monkeypatch):
    from ocsight import reader

    started: list[bool] = []
    ahead = Database.stage_tool_calls_ahead
    monkeypatch.setattr(Database, "stage_tool_calls_ahead",
                        lambda self, then=None: started.append(True) or ahead(self, then))
    reader.open_index(reader.ReadOptions(data_dirs=(str(store),), use_cache=False, lean_memory=True)).close()
    assert started == []
    reader.open_index(reader.ReadOptions(data_dirs=(str(store),), use_cache=False)).close()
    assert started == [True]


def test_a_legacy_tree_read_in_small_batches_ahead_equals_its_database_copy(cli, tmp_path: Path, monkeypatch):
    from ocsight.store import legacy

    plan = storegen.plan_store(seed=23, sessions=12, eras=("1.1", "0.x", "1.0"))
    docs = {k: _stats(cli, write_store(plan, tmp_path / k, k)) for k in ("db", "json")}
    monkeypatch.setattr(legacy, "BATCH_FILES", 3)  # many batches, each a message with all its parts
    assert _stats(cli, tmp_path / "json") == docs["json"] == docs["db"]


def test_an_error_while_reading_ahead_is_raised_in_the_reader():
    from ocsight.store.legacy import _Ahead

    def files():
        yield 1
        raise PermissionError("no")

    items = []
    with pytest.raises(PermissionError, match="no"):
        for item in _Ahead(files()):
            items.append(item)
    assert items == [1]


def test_a_reader_that_stops_early_stops_the_reading_thread():
    import itertools

    from ocsight.store.legacy import _Ahead

    ahead = _Ahead(itertools.count())
    assert ahead.first() == 0
    ahead.join(timeout=5)
    assert not ahead.is_alive()
