"""OpenCode's SQLite database (1.2+): opened read-only beside a running OpenCode, read incrementally.

Nothing is ever written into OpenCode's data directory: a read-only open of a WAL database creates
`-wal` and `-shm` files when they are missing, so an idle database (WAL mode, no `-wal`) is opened
`immutable` and its stamp checked after the read; a live one (both files present) and a
rollback-journal one are opened `mode=ro`, which honours a writer's locks, in place even where
ocsight may not write (a read-only mount, another user's files): SQLite (3.22+) then maps the `-shm`
read-only, or reads the WAL into memory when the `-shm` cannot be trusted. Only a `-wal` without its
`-shm` (a writer that crashed: none runs, since a writer keeps its `-shm`) is read from a private
snapshot copy under ocsight's cache.

What changed since the last refresh is found from columns alone, without parsing JSON: new rows by
rowid, rewritten rows (a message streaming in, a tool call finishing) by `time_updated`, deletions
by row counts.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocsight import paths
from ocsight.errors import OcsightError

BUSY_RETRY_SECONDS = float(os.environ.get("OCSIGHT_BUSY_TIMEOUT", "10"))
# Rows re-read on every refresh: long enough for any transaction OpenCode has open while we read.
UPDATE_MARGIN_MS = 120_000
# OpenCode 2.x's message table, not read yet: its rows carrying usage are counted as skipped.
# (1.15 already writes agent and model switches there, which carry none.)
V2_MESSAGES = "session_message"
REQUIRED_TABLES = frozenset({"project", "session", "message", "part"})
SESSION_FIELDS = ("project_id", "parent_id", "directory", "title", "version", "time_created", "time_updated")

State = dict[str, Any]  # what the index remembers of a database between refreshes (JSON)


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
    import hashlib  # rarely needed: most databases are read in place
    import shutil

    target = paths.ocsight_cache() / "snapshots" / hashlib.sha256(str(path).encode()).hexdigest()[:16]
    paths.private_dir(paths.ocsight_cache())  # a copy of the user's sessions: theirs alone
    paths.private_dir(target)
    copy = target / path.name
    for suffix in ("-shm", "-wal", ""):
        Path(f"{copy}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(path, copy)
    if Path(f"{path}-wal").exists():
        shutil.copyfile(f"{path}-wal", f"{copy}-wal")
    return copy


def explain(e: sqlite3.Error) -> str:
    text = str(e)
    if "locked" in text or "busy" in text:
        return (
            f"the database stayed locked for {BUSY_RETRY_SECONDS:g} s (is another program holding an exclusive "
            "lock on it? OCSIGHT_BUSY_TIMEOUT sets the wait)"
        )
    if "not a database" in text or "malformed" in text:
        return f"{text} (truncated or corrupt?)"
    if "unable to open" in text:
        return f"{text} (missing or unreadable?)"
    return text


@dataclass
class Changes:
    """What a database holds that the index does not: its new state, how much to read ("unchanged",
    "incremental" or "full"), the sessions with new or rewritten rows, notes for the user, and
    problems with the whole database (reference, reason)."""

    state: State
    mode: str
    touched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    vanished: bool = False  # rows were deleted: sessions it no longer holds must be forgotten
    # incremental: the sessions whose records to merge again are those after this rowid or
    # updated since this time (ms); None: all of them
    sessions_since: tuple[int, int] | None = None


class OpenCodeDatabase:
    """One OpenCode database for the length of a refresh, attached to a connection of the index's."""

    def __init__(self, path: Path, rank: int) -> None:
        self.path, self.rank = path, rank
        self.source = f"db:{path}"
        self.stamp = file_stamp(path)  # taken before anything is read
        self.immutable = False
        self._uri: str | None = None
        self.alias: str | None = None
        self.tables: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        """SQLite treats an empty file as an empty database; OpenCode leaves one if it dies creating it."""
        return self.stamp[0] == 0

    @property
    def readable(self) -> bool:
        """Whether it holds OpenCode 1.x's tables (once attached)."""
        return REQUIRED_TABLES <= self.tables

    @property
    def uri(self) -> str:
        """How to open it: read-only, immutable, or a snapshot copy (decided, and copied, once)."""
        if self._uri is None:
            self._uri = self._open_uri()
        return self._uri

    def _open_uri(self) -> str:
        try:
            with open(self.path, "rb") as f:
                header = f.read(100)
        except OSError as e:
            raise OcsightError(f"cannot read {self.path}: {e.strerror}") from None
        if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
            raise OcsightError(f"cannot read {self.path}: not an SQLite database (truncated or foreign file?)")
        wal, shm = Path(f"{self.path}-wal"), Path(f"{self.path}-shm")
        target = self.path
        if header[18] == 2 and not wal.exists():
            # WAL mode, no writer: opening it any other way would leave -wal and -shm files behind.
            self.immutable = True
        elif header[18] == 2 and not shm.exists():
            target = _snapshot(self.path)  # no writer runs: the copy cannot tear
        return "file:" + urllib.parse.quote(str(target)) + ("?immutable=1" if self.immutable else "?mode=ro")

    def attach(self, con: sqlite3.Connection, alias: str) -> None:
        """Attaches it to `con` (once) as `alias`."""
        if self.alias is not None:
            return
        try:
            con.execute(f"ATTACH DATABASE ? AS {alias}", (self.uri,))
            self.tables = frozenset(r[0] for r in con.execute(
                f"SELECT name FROM {alias}.sqlite_master WHERE type = 'table'"))
        except sqlite3.DatabaseError as e:
            raise OcsightError(f"cannot read {self.path}: {explain(e)}") from None
        self.alias = alias

    def written_since_stamp(self) -> bool:
        """Whether OpenCode wrote to the database since this read began (its stamp was taken)."""
        return file_stamp(self.path) != self.stamp

    def changed_under_us(self) -> bool:
        """An immutable read is only valid if OpenCode did not write meanwhile."""
        return self.immutable and self.written_since_stamp()

    # -- what changed --------------------------------------------------------------------------------

    def changes(self, con: sqlite3.Connection, alias: str, state: State) -> Changes:
        """What changed since the read `state` describes (attaching the database to `con` unless it
        is unchanged or empty)."""
        if state.get("stamp") == self.stamp and state.get("rank") == self.rank:
            return Changes(state, "unchanged", notes=list(state.get("notes", [])))
        if self.empty:
            notes = [f"{self.path} is an empty file: no records in it"]
            return Changes({"stamp": self.stamp, "rank": self.rank, "notes": notes}, "full", notes=notes)
        self.attach(con, alias)
        con.execute(f"PRAGMA busy_timeout = {int(BUSY_RETRY_SECONDS * 1000)}")
        try:
            return self._changes(con, alias, state)
        except sqlite3.DatabaseError as e:
            raise OcsightError(f"cannot read {self.path}: {explain(e)}") from None
        finally:
            con.execute("PRAGMA busy_timeout = 30000")

    def _changes(self, con: sqlite3.Connection, a: str, state: State) -> Changes:
        started_ms = int(time.time() * 1000)
        out = Changes({}, "full")
        if V2_MESSAGES in self.tables:
            v2_rows = con.execute(
                f"SELECT count(*) FROM {a}.{V2_MESSAGES} WHERE instr(data, '\"tokens\"') OR instr(data, '\"cost\"')"
            ).fetchone()[0]
            if v2_rows:
                out.problems.append(("opencode-2.x-tables",
                                     f"{v2_rows:,} row{'' if v2_rows == 1 else 's'} with usage in OpenCode 2.x "
                                     "tables (not read by this ocsight)"))
        if not self.readable:
            missing = ", ".join(sorted(REQUIRED_TABLES - self.tables))
            reason = f"not an OpenCode 1.x database (no table {missing})"
            out.problems.append(("database", reason))
            out.notes.append(f"{self.path}: {reason}; skipped")
            out.state = {"stamp": self.stamp, "rank": self.rank, "notes": out.notes}
            return out
        # Parts are only deleted with their message (a revert, a removed session), so message and
        # session counts reveal deletions; counting every part would cost as much as reading them.
        # (two statements: together they scan the table; count(*) alone counts a smaller index)
        marks: dict[str, dict[str, Any]] = {
            t: {"rowid": con.execute(f"SELECT max(rowid) FROM {a}.{t}").fetchone()[0],
                "count": con.execute(f"SELECT count(*) FROM {a}.{t}").fetchone()[0]}
            for t in ("message", "session")
        }
        for t in marks:  # the ID at the last row read: another ID there means another database
            marks[t]["id"] = self._id_at(con, t, marks[t]["rowid"])
        marks["part"] = {"rowid": con.execute(f"SELECT max(rowid) FROM {a}.part").fetchone()[0]}
        out.state = {"stamp": self.stamp, "rank": self.rank, "marks": marks, "started_ms": started_ms,
                     "notes": out.notes}
        prev = state.get("marks") if state.get("rank") == self.rank else None
        if not prev:
            return out
        grown = {
            t: con.execute(f"SELECT count(*) FROM {a}.{t} WHERE rowid > ?", (prev[t]["rowid"] or 0,)).fetchone()[0]
            for t in ("message", "session")
        }
        rewritten = any(self._id_at(con, t, prev[t]["rowid"]) != prev[t].get("id") for t in grown)
        if rewritten or any(marks[t]["count"] != prev[t]["count"] + grown[t] for t in grown):
            # Rows were deleted (a session removed, a message reverted), or the file now holds
            # another database: read everything afresh.
            out.vanished = True
            return out
        since = state["started_ms"] - UPDATE_MARGIN_MS
        # OpenCode's tables have no index on `time_updated`: rewritten rows take a scan of each table.
        touched: set[str] = set()
        for t in ("message", "part"):
            touched.update(r[0] for r in con.execute(
                f"SELECT DISTINCT session_id FROM {a}.{t} WHERE rowid > ? OR time_updated >= ?",
                (prev[t]["rowid"] or 0, since)))
        out.mode, out.touched = "incremental", sorted(touched)
        out.sessions_since = (prev["session"]["rowid"] or 0, since)
        return out

    def _id_at(self, con: sqlite3.Connection, table: str, rowid: int | None) -> str | None:
        if rowid is None:
            return None
        row = con.execute(f"SELECT id FROM {self.alias}.{table} WHERE rowid = ?", (rowid,)).fetchone()
        return row[0] if row else None

    # -- metadata ------------------------------------------------------------------------------------

    def sessions_select(self, con: sqlite3.Connection, since: tuple[int, int] | None = None) -> tuple[str, tuple]:
        """A SELECT of its sessions as (id, project_id, parent_id, directory, title, version,
        time_created, time_updated), whatever columns its OpenCode version has, and its parameters;
        with `since` (`Changes.sessions_since`), only those added or updated since."""
        cols = {r[1] for r in con.execute(f"PRAGMA {self.alias}.table_info(session)")}
        sql = "SELECT id, " + ", ".join(c if c in cols else f"NULL AS {c}" for c in SESSION_FIELDS) + \
            f" FROM {self.alias}.session"
        if since is None:
            return sql, ()
        return sql + " WHERE rowid > ? OR time_updated >= ?", since

    def projects_select(self, con: sqlite3.Connection) -> str:
        """A SELECT of its projects as (id, worktree, name)."""
        cols = {r[1] for r in con.execute(f"PRAGMA {self.alias}.table_info(project)")}
        return "SELECT id, " + ", ".join(c if c in cols else f"NULL AS {c}" for c in ("worktree", "name")) + \
            f" FROM {self.alias}.project"

    def message_sample(self, con: sqlite3.Connection, size: int) -> list[str]:
        """The sessions of about `size` messages spread evenly over the table (by rowid), sorted: where
        the messages are, for cutting a read into ranges of about equal work."""
        top = con.execute(f"SELECT max(rowid) FROM {self.alias}.message").fetchone()[0]
        if not isinstance(top, int) or top < 1:
            return []
        step = max(1, top // size)
        # a probe of the rowid a sample row (rather than `rowid IN (...)`, which SQLite may read by a scan)
        return sorted(r[0] for r in con.execute(
            f"SELECT m.session_id FROM json_each(?) j JOIN {self.alias}.message m ON m.rowid = j.value",
            (json.dumps(list(range(1, top + 1, step))),)) if isinstance(r[0], str))

    def message_count_estimate(self, con: sqlite3.Connection) -> int:
        row = con.execute(f"SELECT max(rowid) FROM {self.alias}.message").fetchone()
        return int(row[0] or 0)


def ranked(databases: tuple[Path, ...]) -> list[OpenCodeDatabase]:
    """A set of sources' databases for one read, ranked in their order: the first wins among
    databases, and every legacy tree ranks after them (`locate.LEGACY_RANK_BASE`)."""
    return [OpenCodeDatabase(p, rank) for rank, p in enumerate(databases)]
