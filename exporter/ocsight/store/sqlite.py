"""Reading OpenCode's SQLite database (1.2+): read-only, alongside a running OpenCode, incrementally.

The database is attached to the index connection through a read-only URI, so OpenCode's file is
never written (no migrations, no checkpoints, no journal). New rows are found by rowid, rewritten
rows (a message streaming in) by `time_updated`, deleted rows by comparing row counts.
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.parse
from pathlib import Path

from ocsight.errors import OcsightError
from ocsight.store import extract

ALIAS = "oc"
BUSY_RETRY_SECONDS = 10.0
# Rows re-read on every refresh: long enough for any transaction OpenCode has open while we read.
UPDATE_MARGIN_MS = 120_000
# Tables of OpenCode 2.x, not read yet: rows in them are counted as skipped.
V2_TABLES = ("session_message", "session_input")


def file_stamp(path: Path) -> list[int]:
    """Size and mtime of the database and its WAL: unchanged stamps mean nothing to read."""
    out = []
    for p in (path, Path(f"{path}-wal")):
        try:
            st = p.stat()
            out += [st.st_size, st.st_mtime_ns]
        except FileNotFoundError:
            out += [-1, -1]
    return out


def _retrying(fn, what: str):
    deadline = time.monotonic() + BUSY_RETRY_SECONDS
    delay = 0.02
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as e:
            text = str(e)
            if "locked" not in text and "busy" not in text:
                raise
            if time.monotonic() > deadline:
                raise OcsightError(
                    f"{what}: the database stayed locked for {BUSY_RETRY_SECONDS:.0f} s (is another program holding "
                    "an exclusive lock on it?)"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def attach(con: sqlite3.Connection, path: Path) -> None:
    uri = "file:" + urllib.parse.quote(str(path)) + "?mode=ro"
    try:
        _retrying(lambda: con.execute(f"ATTACH DATABASE ? AS {ALIAS}", (uri,)), str(path))
        tables = _retrying(
            lambda: {r[0] for r in con.execute(f"SELECT name FROM {ALIAS}.sqlite_master WHERE type = 'table'")},
            str(path),
        )
    except sqlite3.DatabaseError as e:
        _detach(con)
        raise OcsightError(f"cannot read {path}: {_explain(e)}") from None
    return tables


def _detach(con: sqlite3.Connection) -> None:
    try:
        con.execute(f"DETACH DATABASE {ALIAS}")
    except sqlite3.Error:
        pass


def _explain(e: sqlite3.Error) -> str:
    text = str(e)
    if "not a database" in text or "malformed" in text:
        return f"{text} (truncated or corrupt?)"
    if "unable to open" in text:
        return f"{text} (missing, unreadable, or in a read-only directory without its -shm file?)"
    return text


def _columns(con: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in con.execute(f"PRAGMA {ALIAS}.table_info({table})")}


def _col(cols: set[str], name: str) -> str:
    return name if name in cols else f"NULL AS {name}"


def _create_views(con: sqlite3.Connection) -> None:
    """Views in the shape extraction reads, whatever columns this OpenCode version's tables have."""
    pc = _columns(con, "project")
    sc = _columns(con, "session")
    con.execute(
        f"CREATE TEMP VIEW src_project AS SELECT id, {_col(pc, 'worktree')}, {_col(pc, 'name')} FROM {ALIAS}.project"
    )
    cols = ", ".join(
        _col(sc, c)
        for c in ("project_id", "parent_id", "directory", "title", "version", "time_created", "time_updated")
    )
    con.execute(f"CREATE TEMP VIEW src_session AS SELECT id, {cols} FROM {ALIAS}.session")
    con.execute(
        f"CREATE TEMP VIEW src_message AS SELECT rowid AS rid, id, session_id, time_created, time_updated, data "
        f"FROM {ALIAS}.message"
    )
    con.execute(
        f"CREATE TEMP VIEW src_part AS SELECT rowid AS rid, id, message_id, session_id, time_created, time_updated, "
        f"data FROM {ALIAS}.part"
    )


def drop_views(con: sqlite3.Connection) -> None:
    for v in ("src_project", "src_session", "src_message", "src_part"):
        con.execute(f"DROP VIEW IF EXISTS temp.{v}")


def _table_marks(con: sqlite3.Connection, table: str) -> dict:
    row = con.execute(f"SELECT max(rowid), count(*) FROM {ALIAS}.{table}").fetchone()
    return {"rowid": row[0] or 0, "count": row[1]}


def refresh(con: sqlite3.Connection, path: Path, rank: int, state: dict) -> tuple[dict, list[str], str]:
    """Reads what changed in one database since `state`.

    Returns the new state, notes for the user, and what was read: "unchanged", "incremental" (the
    sessions it touched are recorded in `temp.touched`) or "full" (every summary must be redone).
    """
    source = f"db:{path}"
    if not os.access(path, os.R_OK):
        raise OcsightError(f"cannot read {path}: permission denied")
    stamp = file_stamp(path)
    if state.get("stamp") == stamp and state.get("ocsight_rank") == rank:
        return state, state.get("notes", []), "unchanged"
    notes: list[str] = []
    started_ms = int(time.time() * 1000)
    tables = attach(con, path)
    try:
        return _refresh_attached(con, path, rank, state, stamp, tables, started_ms, source, notes)
    except sqlite3.DatabaseError as e:
        raise OcsightError(f"cannot read {path}: {_explain(e)}") from None
    finally:
        drop_views(con)
        _detach(con)


def _refresh_attached(con, path, rank, state, stamp, tables, started_ms, source, notes) -> tuple[dict, list[str]]:
    con.execute("DELETE FROM skipped WHERE source = ?", (source,))
    v2_rows = sum(
        con.execute(f"SELECT count(*) FROM {ALIAS}.{t}").fetchone()[0] for t in V2_TABLES if t in tables
    )
    if v2_rows:
        con.execute(
            "INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, NULL)",
            (source, "opencode-2.x-tables", f"{v2_rows} rows in OpenCode 2.x tables (not read by this ocsight)"),
        )
    needed = {"project", "session", "message", "part"}
    if not needed <= tables:
        missing = ", ".join(sorted(needed - tables))
        con.execute(
            "INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, NULL)",
            (source, "database", f"not an OpenCode 1.x database (no table {missing})"),
        )
        notes.append(f"{path}: not an OpenCode 1.x database (no table {missing}); skipped")
        return {"stamp": stamp, "ocsight_rank": rank, "notes": notes}, notes, "full"

    _create_views(con)
    marks = {t: _table_marks(con, t) for t in ("message", "part", "session")}
    prev = state.get("marks") if state.get("ocsight_rank") == rank else None
    deleted = False
    if prev:
        # Rows only ever appear with higher rowids; a lower count than expected means deletions.
        expected = {
            t: prev[t]["count"]
            + con.execute(f"SELECT count(*) FROM {ALIAS}.{t} WHERE rowid > ?", (prev[t]["rowid"],)).fetchone()[0]
            for t in marks
        }
        deleted = any(marks[t]["count"] != expected[t] for t in marks)
        if deleted:
            _drop_vanished(con, rank)
        params = {
            "since_ms": prev["started_ms"] - UPDATE_MARGIN_MS,
            "message_rowid": prev["message"]["rowid"],
            "part_rowid": prev["part"]["rowid"],
        }
        bad = extract.run(
            con,
            rank,
            "r.rid > :message_rowid OR r.time_updated >= :since_ms",
            "r.rid > :part_rowid OR r.time_updated >= :since_ms",
            params,
            track_parts=True,
        )
    else:
        bad = extract.run(con, rank)
    for table, rid in bad:
        con.execute("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, NULL)", (source, f"{table}:{rid}", "malformed JSON"))
    new_state = {"stamp": stamp, "ocsight_rank": rank, "marks": {**marks, "started_ms": started_ms}, "notes": notes}
    if deleted:
        new_state["deleted"] = True
    return new_state, notes, "full" if deleted or not prev else "incremental"


def _drop_vanished(con: sqlite3.Connection, rank: int) -> None:
    """Removes index rows of this database whose source rows are gone (deleted sessions, reverts)."""
    for table, src in (("message", "message"), ("step", "part"), ("tool_call", "part"), ("session", "session"),
                       ("project", "project")):
        con.execute(f"DELETE FROM {table} WHERE rank = ? AND id NOT IN (SELECT id FROM {ALIAS}.{src})", (rank,))
