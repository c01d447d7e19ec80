"""What tells the sidecar that OpenCode wrote something (`telemetry.changes`)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ocsight.telemetry import changes


def _database(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    db = d / "opencode.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (x)")
    con.commit()
    return db


def test_a_read_of_the_database_leaves_its_stamp_unchanged(tmp_path: Path):
    db = _database(tmp_path)
    writer = sqlite3.connect(db)
    writer.execute("INSERT INTO t VALUES (1)")
    writer.commit()  # the WAL holds a frame; the writer stays open, as OpenCode does
    before = changes.stamp([db])
    reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    reader.execute("SELECT count(*) FROM t").fetchall()
    reader.close()
    assert changes.stamp([db]) == before


def test_a_write_changes_the_stamp(tmp_path: Path):
    db = _database(tmp_path)
    before = changes.stamp([db])
    con = sqlite3.connect(db)
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()
    assert changes.stamp([db]) != before


def test_events_under_a_legacy_tree_count_and_others_do_not(tmp_path: Path):
    roots = [tmp_path / "storage"]
    assert changes.legacy_written({(1, str(tmp_path / "storage" / "message" / "ses_1" / "msg_1.json"))}, roots)
    assert not changes.legacy_written({(1, str(tmp_path / "opencode.db-shm")), (2, str(tmp_path / "log" / "x.log"))},
                                      roots)
