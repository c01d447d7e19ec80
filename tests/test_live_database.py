"""OpenCode's database read in place where ocsight may not write: another user's files (as in the
stack, where the sidecar runs as another uid) or a read-only mount, while OpenCode writes to it.

A process that is not the files' owner is made here with `setpriv --bounding-set=-all`: root
without capabilities is held to the files' permission bits like any other user, so the data (owned
by uid 65534, 0755 / 0644) can be read and not written.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import storegen
from conftest import run_ocsight

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv to act as a user who does not own the data")

OTHER_UID = 65534


def _as_non_owner(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--bounding-set=-all", "--", sys.executable, "-m", "ocsight", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def _owned_by_another(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        os.chown(p, OTHER_UID, OTHER_UID)
        p.chmod(0o755 if p.is_dir() else 0o644)


def test_a_database_being_written_is_read_in_place_by_a_user_who_cannot_write_beside_it(tmp_path: Path):
    data = tmp_path / "data"
    db = data / "opencode.db"
    storegen.write_sqlite(storegen.plan_store(seed=11, sessions=30), db)
    writer = sqlite3.connect(db, check_same_thread=False)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # the WAL keeps everything written while we read
    extra = storegen.plan_store(seed=12, sessions=10)
    storegen.write_sqlite(extra, tmp_path / "extra.db")  # the rows OpenCode goes on writing, in its schema
    writer.execute("ATTACH DATABASE ? AS extra", (str(tmp_path / "extra.db"),))
    writer.commit()
    _owned_by_another(data)
    stop = threading.Event()

    def write() -> None:
        # OpenCode at work: one session at a time committed into the WAL, until the reads are done
        ids = [r[0] for r in writer.execute("SELECT id FROM extra.session ORDER BY id")]
        for sid in ids:
            if stop.is_set():
                break
            for table in ("session", "message", "part"):
                key = "id" if table == "session" else "session_id"
                writer.execute(f"INSERT OR IGNORE INTO main.{table} SELECT * FROM extra.{table} WHERE {key} = ?",
                               (sid,))
            writer.commit()
            time.sleep(0.05)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        assert Path(f"{db}-wal").exists() and Path(f"{db}-shm").exists()
        env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
        (tmp_path / "cache").mkdir()
        during = _as_non_owner(["stats", "--json", "--data-dir", str(data)], env)
    finally:
        stop.set()
        thread.join()
    assert during.returncode == 0, during.stderr
    assert not (tmp_path / "cache" / "ocsight" / "snapshots").exists()  # read in place, not copied
    assert sorted(p.name for p in data.iterdir()) == ["opencode.db", "opencode.db-shm", "opencode.db-wal"]
    after = _as_non_owner(["stats", "--json", "--data-dir", str(data)], env)  # the writer still has it open
    expected = run_ocsight("stats", "--json", "--no-cache", "--data-dir", str(data))
    writer.close()
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["totals"] == json.loads(expected.out)["totals"]
    sessions = json.loads(during.stdout)["totals"]["sessions"]
    assert 30 <= sessions <= json.loads(expected.out)["totals"]["sessions"]  # a consistent snapshot of the writes


def test_an_idle_database_another_user_owns_is_read_without_a_copy(tmp_path: Path):
    data = tmp_path / "data"
    storegen.write_sqlite(storegen.plan_store(seed=13, sessions=20), data / "opencode.db")
    _owned_by_another(data)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    (tmp_path / "cache").mkdir()
    got = _as_non_owner(["stats", "--json", "--data-dir", str(data)], env)
    assert got.returncode == 0, got.stderr
    assert not (tmp_path / "cache" / "ocsight" / "snapshots").exists()
    assert sorted(p.name for p in data.iterdir()) == ["opencode.db"]  # nothing written beside it
    expected = run_ocsight("stats", "--json", "--no-cache", "--data-dir", str(data))
    assert json.loads(got.stdout)["totals"] == json.loads(expected.out)["totals"]
