"""Reading OpenCode's SQLite database (1.2+): read-only, alongside a running OpenCode, incrementally.

The database is attached to the index connection without ever writing into OpenCode's data
directory: a read-only open of a WAL database creates `-wal` and `-shm` files when they are
missing, so an idle database (no `-wal`) is opened `immutable` and its stamp checked after the
read; a live one (both files present) is opened `mode=ro`; anything else (a `-wal` without its
`-shm`, a read-only directory) is read from a private snapshot copy under ocsight's cache.

New rows are found by rowid, rewritten rows (a message streaming in) by `time_updated`, deleted
rows by comparing row counts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import time
import urllib.parse
from pathlib import Path

from ocsight.errors import OcsightError
from ocsight.store import extract, locate

BUSY_RETRY_SECONDS = float(os.environ.get("OCSIGHT_BUSY_TIMEOUT", "10"))
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


def _snapshot(path: Path) -> Path:
    """A private copy of the database and its WAL, for when it cannot be read in place."""
    target = locate.cache_home() / "ocsight" / "snapshots" / hashlib.sha256(str(path).encode()).hexdigest()[:16]
    target.mkdir(parents=True, exist_ok=True)
    copy = target / path.name
    for suffix in ("-shm", "-wal", ""):
        Path(f"{copy}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(path, copy)
    if Path(f"{path}-wal").exists():
        shutil.copyfile(f"{path}-wal", f"{copy}-wal")
    return copy


def _uri(path: Path, immutable: bool) -> str:
    return "file:" + urllib.parse.quote(str(path)) + ("?immutable=1" if immutable else "?mode=ro")


def _header(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(100)
    except OSError as e:
        raise OcsightError(f"cannot read {path}: {e.strerror}") from None


def attach(con: sqlite3.Connection, path: Path, alias: str) -> tuple[set[str], bool]:
    """Attaches the database as `alias`; returns its tables and whether the read must be stamp-checked.

    A database attached inside a transaction can only be detached after it: see `detach_all`.
    """
    header = _header(path)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        raise OcsightError(f"cannot read {path}: not an SQLite database (truncated or foreign file?)")
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    if header[18] != 2:
        # Rollback journal: a read-only open creates no files, and it honours a writer's locks.
        uri, immutable = _uri(path, False), False
    elif not wal.exists():
        # WAL mode, no writer: opening it in any other way would leave -wal and -shm files behind.
        uri, immutable = _uri(path, True), True
    elif shm.exists() and os.access(path.parent, os.W_OK):
        uri, immutable = _uri(path, False), False
    else:
        uri, immutable = _uri(_snapshot(path), False), False
    try:
        con.execute(f"ATTACH DATABASE ? AS {alias}", (uri,))
        tables = {r[0] for r in con.execute(f"SELECT name FROM {alias}.sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as e:
        raise OcsightError(f"cannot read {path}: {_explain(e)}") from None
    return tables, immutable


def detach_all(con: sqlite3.Connection) -> None:
    """Detaches every database attached for reading (call outside a transaction)."""
    for _seq, name, _file in con.execute("PRAGMA database_list").fetchall():
        if name.startswith("oc_"):
            con.execute(f"DETACH DATABASE {name}")


def _explain(e: sqlite3.Error) -> str:
    text = str(e)
    if "locked" in text or "busy" in text:
        return (
            f"the database stayed locked for {BUSY_RETRY_SECONDS:g} s (is another program holding an exclusive "
            "lock on it? OCSIGHT_BUSY_TIMEOUT sets the wait)"
        )
    if "not a database" in text or "malformed" in text:
        return f"{text} (truncated or corrupt?)"
    if "unable to open" in text:
        return f"{text} (missing, unreadable, or in a read-only directory without its -shm file?)"
    return text


def _columns(con: sqlite3.Connection, alias: str, table: str) -> set[str]:
    return {r[1] for r in con.execute(f"PRAGMA {alias}.table_info({table})")}


def _col(cols: set[str], name: str) -> str:
    return name if name in cols else f"NULL AS {name}"


def _create_views(con: sqlite3.Connection, alias: str) -> None:
    """Views in the shape extraction reads, whatever columns this OpenCode version's tables have."""
    pc = _columns(con, alias, "project")
    sc = _columns(con, alias, "session")
    con.execute(
        f"CREATE TEMP VIEW src_project AS SELECT id, {_col(pc, 'worktree')}, {_col(pc, 'name')} FROM {alias}.project"
    )
    cols = ", ".join(
        _col(sc, c)
        for c in ("project_id", "parent_id", "directory", "title", "version", "time_created", "time_updated")
    )
    con.execute(f"CREATE TEMP VIEW src_session AS SELECT id, {cols} FROM {alias}.session")
    con.execute(
        f"CREATE TEMP VIEW src_message AS SELECT rowid AS rid, id, session_id, time_created, time_updated, data "
        f"FROM {alias}.message"
    )
    con.execute(
        f"CREATE TEMP VIEW src_part AS SELECT rowid AS rid, id, message_id, session_id, time_created, time_updated, "
        f"data FROM {alias}.part"
    )


def drop_views(con: sqlite3.Connection) -> None:
    for v in ("src_project", "src_session", "src_message", "src_part"):
        con.execute(f"DROP VIEW IF EXISTS temp.{v}")


def _table_marks(con: sqlite3.Connection, alias: str, table: str) -> dict:
    row = con.execute(f"SELECT max(rowid), count(*) FROM {alias}.{table}").fetchone()
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
    if stamp[0] == 0:
        # SQLite treats an empty file as an empty database; OpenCode leaves one if it dies creating it.
        for table in ("message", "step", "tool_call", "session", "project"):
            con.execute(f"DELETE FROM {table} WHERE rank = ?", (rank,))
        notes = [f"{path} is an empty file: no records in it"]
        return {"stamp": stamp, "ocsight_rank": rank, "notes": notes}, notes, "full"
    # SQLite's busy handler waits for a writer's lock to go; the index's own (longer) wait is restored after.
    con.execute(f"PRAGMA busy_timeout = {int(BUSY_RETRY_SECONDS * 1000)}")
    try:
        return _read(con, path, rank, state, stamp, source)
    finally:
        con.execute("PRAGMA busy_timeout = 30000")


def _read(con, path, rank, state, stamp, source):
    for attempt in range(3):
        notes: list[str] = []
        started_ms = int(time.time() * 1000)
        con.execute("SAVEPOINT oc_read")
        alias = f"oc_{rank}_{attempt}"
        tables, immutable = attach(con, path, alias)
        try:
            result = _refresh_attached(con, alias, path, rank, state, stamp, tables, started_ms, source, notes)
        except sqlite3.DatabaseError as e:
            con.execute("ROLLBACK TO oc_read")
            con.execute("RELEASE oc_read")
            if immutable and file_stamp(path) != stamp and attempt < 2:
                stamp = file_stamp(path)  # OpenCode started writing under us: read again
                continue
            raise OcsightError(f"cannot read {path}: {_explain(e)}") from None
        finally:
            drop_views(con)
        if immutable and file_stamp(path) != stamp and attempt < 2:
            # Written while read without locks: the read may be torn, so it is thrown away.
            con.execute("ROLLBACK TO oc_read")
            con.execute("RELEASE oc_read")
            stamp = file_stamp(path)
            continue
        con.execute("RELEASE oc_read")
        return result
    raise OcsightError(f"cannot read {path}: it kept changing while being read; try again")


def _refresh_attached(con, alias, path, rank, state, stamp, tables, started_ms, source, notes):
    con.execute("DELETE FROM skipped WHERE source = ?", (source,))
    v2_rows = sum(
        con.execute(f"SELECT count(*) FROM {alias}.{t}").fetchone()[0] for t in V2_TABLES if t in tables
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

    _create_views(con, alias)
    marks = {t: _table_marks(con, alias, t) for t in ("message", "part", "session")}
    prev = state.get("marks") if state.get("ocsight_rank") == rank else None
    deleted = False
    if prev:
        # Rows only ever appear with higher rowids; a lower count than expected means deletions.
        expected = {
            t: prev[t]["count"]
            + con.execute(f"SELECT count(*) FROM {alias}.{t} WHERE rowid > ?", (prev[t]["rowid"],)).fetchone()[0]
            for t in marks
        }
        deleted = any(marks[t]["count"] != expected[t] for t in marks)
        if deleted:
            _drop_vanished(con, alias, rank)
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


def _drop_vanished(con: sqlite3.Connection, alias: str, rank: int) -> None:
    """Removes index rows of this database whose source rows are gone (deleted sessions, reverts)."""
    for table, src in (("message", "message"), ("step", "part"), ("tool_call", "part"), ("session", "session"),
                       ("project", "project")):
        con.execute(f"DELETE FROM {table} WHERE rank = ? AND id NOT IN (SELECT id FROM {alias}.{src})", (rank,))
