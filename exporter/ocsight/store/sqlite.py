"""Reading OpenCode's SQLite database (1.2+): read-only, alongside a running OpenCode, incrementally.

The database is attached to the index connection without ever writing into OpenCode's data
directory: a read-only open of a WAL database creates `-wal` and `-shm` files when they are
missing, so an idle database (WAL mode, no `-wal`) is opened `immutable` and its stamp checked after
the read; a live one (both files present) and a rollback-journal one are opened `mode=ro`, which
honours a writer's locks; anything else (a `-wal` without its `-shm`, a read-only directory) is read
from a private snapshot copy under ocsight's cache.

What changed since the last refresh is found from columns alone, without parsing JSON: new rows by
rowid, rewritten rows (a message streaming in, a tool call finishing) by `time_updated`, deletions
by row counts.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from ocsight.errors import OcsightError
from ocsight.sqlite_library import read_beside, sqlite3
from ocsight.store import extract, locate
from ocsight.store.half_ahead import HalfAhead, SplitFailed

BUSY_RETRY_SECONDS = float(os.environ.get("OCSIGHT_BUSY_TIMEOUT", "10"))
# Rows re-read on every refresh: long enough for any transaction OpenCode has open while we read.
UPDATE_MARGIN_MS = 120_000
# OpenCode 2.x's message table, not read yet: its rows carrying usage are counted as skipped.
# (1.15 already writes agent and model switches there, which carry none.)
V2_MESSAGES = "session_message"
REQUIRED_TABLES = {"project", "session", "message", "part"}


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
    import hashlib  # both rarely needed, and slow to import (OpenSSL; compression modules)
    import shutil

    target = locate.cache_home() / "ocsight" / "snapshots" / hashlib.sha256(str(path).encode()).hexdigest()[:16]
    target.mkdir(parents=True, exist_ok=True)
    copy = target / path.name
    for suffix in ("-shm", "-wal", ""):
        Path(f"{copy}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(path, copy)
    if Path(f"{path}-wal").exists():
        shutil.copyfile(f"{path}-wal", f"{copy}-wal")
    return copy


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
        return f"{text} (missing or unreadable?)"
    return text


def detach_all(con: sqlite3.Connection) -> None:
    """Detaches every database attached for reading (only possible outside a transaction)."""
    for _seq, name, _file in con.execute("PRAGMA database_list").fetchall():
        if name.startswith("oc_"):
            con.execute(f"DETACH DATABASE {name}")


class Database:
    """One OpenCode database, attached (at most once) for the length of a refresh."""

    def __init__(self, con: sqlite3.Connection, path: Path, rank: int, attempt: int,
                 wanted: str | None = None) -> None:
        self.con, self.path, self.rank = con, path, rank
        self.alias = f"oc_{rank}_{attempt}"
        self.source = f"db:{path}"
        self.stamp = file_stamp(path)
        self.immutable = False
        self.tables: set[str] | None = None
        self.uri = ""
        self.half: HalfAhead | None = None  # the second half of a first read (`stage_half_ahead`)
        # with a half: IDs of the messages this connection could not stage (malformed JSON), and
        # the half's, once taken (`finish_half`)
        self.unstaged_here: set[str] = set()
        self._half_unstaged: list[str] | None = None
        # a table of the only sessions wanted (records of some sessions): only theirs are merged
        self.wanted = wanted

    # -- opening ---------------------------------------------------------------------------------

    def _attach(self) -> set[str]:
        if self.tables is not None:
            return self.tables
        try:
            with open(self.path, "rb") as f:
                header = f.read(100)
        except OSError as e:
            raise OcsightError(f"cannot read {self.path}: {e.strerror}") from None
        if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
            raise OcsightError(f"cannot read {self.path}: not an SQLite database (truncated or foreign file?)")
        wal, shm = Path(f"{self.path}-wal"), Path(f"{self.path}-shm")
        target, self.immutable = self.path, False
        if header[18] == 2 and not wal.exists():
            # WAL mode, no writer: opening it any other way would leave -wal and -shm files behind.
            self.immutable = True
        elif header[18] == 2 and not (shm.exists() and os.access(self.path.parent, os.W_OK)):
            target = _snapshot(self.path)
        uri = "file:" + urllib.parse.quote(str(target)) + ("?immutable=1" if self.immutable else "?mode=ro")
        self.uri = uri
        try:
            self.con.execute(f"ATTACH DATABASE ? AS {self.alias}", (uri,))
            self.tables = {
                r[0] for r in self.con.execute(f"SELECT name FROM {self.alias}.sqlite_master WHERE type = 'table'")
            }
        except sqlite3.DatabaseError as e:
            raise OcsightError(f"cannot read {self.path}: {_explain(e)}") from None
        return self.tables

    def _guard(self, fn):
        """Runs a read with this database's busy timeout, turning SQLite errors into one-line messages."""
        self.con.execute(f"PRAGMA busy_timeout = {int(BUSY_RETRY_SECONDS * 1000)}")
        try:
            return fn()
        except sqlite3.DatabaseError as e:
            raise OcsightError(f"cannot read {self.path}: {_explain(e)}") from None
        finally:
            self.con.execute("PRAGMA busy_timeout = 30000")

    def written_since_stamp(self) -> bool:
        """Whether OpenCode wrote to the database since this read began (its stamp was taken)."""
        return file_stamp(self.path) != self.stamp

    def changed_under_us(self) -> bool:
        """An immutable read is only valid if OpenCode did not write meanwhile."""
        return self.immutable and self.written_since_stamp()

    def _create_views(self) -> None:
        a = self.alias
        cols = {t: {r[1] for r in self.con.execute(f"PRAGMA {a}.table_info({t})")} for t in ("project", "session")}

        def col(table: str, name: str) -> str:
            return name if name in cols[table] else f"NULL AS {name}"

        self.con.execute(
            f"CREATE TEMP VIEW src_project AS SELECT id, {col('project', 'worktree')}, {col('project', 'name')} "
            f"FROM {a}.project"
        )
        self.con.execute(
            f"CREATE TEMP VIEW src_session AS SELECT id, "
            f"{', '.join(col('session', c) for c in extract.SESSION_FIELDS)} FROM {a}.session"
        )
        self.con.execute(
            f"CREATE TEMP VIEW src_message AS SELECT id, session_id, time_created, data FROM {a}.message"
        )
        self.con.execute(
            f"CREATE TEMP VIEW src_part AS SELECT id, message_id, session_id, data FROM {a}.part"
        )

    def _drop_views(self) -> None:
        for v in ("src_project", "src_session", "src_message", "src_part"):
            self.con.execute(f"DROP VIEW IF EXISTS temp.{v}")

    # -- what changed ------------------------------------------------------------------------------

    def detect(self, state: dict) -> tuple[dict, str, list[str]]:
        """Merges projects and sessions and records sessions with new or rewritten rows in `temp.touched`.

        Returns the new state, "unchanged", "incremental" or "full" (read all of it: first read,
        or rows were deleted), and notes for the user.
        """
        if state.get("stamp") == self.stamp and state.get("rank") == self.rank:
            return state, "unchanged", state.get("notes", [])
        if self.stamp[0] == 0:
            # SQLite treats an empty file as an empty database; OpenCode leaves one if it dies creating it.
            notes = [f"{self.path} is an empty file: no records in it"]
            return {"stamp": self.stamp, "rank": self.rank, "notes": notes}, "full", notes
        return self._guard(lambda: self._detect(state))

    def _detect(self, state: dict) -> tuple[dict, str, list[str]]:
        tables = self._attach()
        a, con = self.alias, self.con
        started_ms = int(time.time() * 1000)
        notes: list[str] = []
        con.execute("DELETE FROM skipped WHERE source = ? AND session_id IS NULL", (self.source,))
        v2_rows = 0
        if V2_MESSAGES in tables:
            v2_rows = con.execute(
                f"SELECT count(*) FROM {a}.{V2_MESSAGES} WHERE instr(data, '\"tokens\"') OR instr(data, '\"cost\"')"
            ).fetchone()[0]
        if v2_rows:
            con.execute(
                "INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, NULL)",
                (self.source, "opencode-2.x-tables",
                 f"{v2_rows} rows with usage in OpenCode 2.x tables (not read by this ocsight)"),
            )
        if not REQUIRED_TABLES <= tables:
            missing = ", ".join(sorted(REQUIRED_TABLES - tables))
            reason = f"not an OpenCode 1.x database (no table {missing})"
            con.execute("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, NULL)", (self.source, "database", reason))
            notes.append(f"{self.path}: {reason}; skipped")
            return {"stamp": self.stamp, "rank": self.rank, "notes": notes}, "full", notes
        # Parts are only deleted with their message (a revert, a removed session), so message and
        # session counts reveal deletions; counting every part would cost as much as reading them.
        # (two statements: together they scan the table; count(*) alone counts a smaller index)
        marks = {
            t: {"rowid": con.execute(f"SELECT max(rowid) FROM {a}.{t}").fetchone()[0],
                "count": con.execute(f"SELECT count(*) FROM {a}.{t}").fetchone()[0]}
            for t in ("message", "session")
        }
        for t in marks:  # the ID at the last row read: another ID there means another database
            marks[t]["id"] = self._id_at(t, marks[t]["rowid"])
        marks["part"] = {"rowid": con.execute(f"SELECT max(rowid) FROM {a}.part").fetchone()[0]}
        new_state = {"stamp": self.stamp, "rank": self.rank, "marks": marks, "started_ms": started_ms, "notes": notes}
        prev = state.get("marks") if state.get("rank") == self.rank else None
        if not prev:
            self._merge()
            return new_state, "full", notes
        grown = {
            t: con.execute(f"SELECT count(*) FROM {a}.{t} WHERE rowid > ?", (prev[t]["rowid"] or 0,)).fetchone()[0]
            for t in ("message", "session")
        }
        rewritten = any(self._id_at(t, prev[t]["rowid"]) != prev[t].get("id") for t in grown)
        if rewritten or any(marks[t]["count"] != prev[t]["count"] + grown[t] for t in grown):
            # Rows were deleted (a session removed, a message reverted), or the file now holds
            # another database: forget vanished sessions, so a legacy copy of them counts again,
            # and read everything afresh.
            for table in ("session", "project"):
                con.execute(f"DELETE FROM {table} WHERE rank = ? AND id NOT IN (SELECT id FROM {a}.{table})",
                            (self.rank,))
            self._merge()
            return new_state, "full", notes
        since = state["started_ms"] - UPDATE_MARGIN_MS
        # Only sessions added or updated since the last read can have changed.
        self._merge(f"r.id IN (SELECT id FROM {a}.session WHERE rowid > ? OR time_updated >= ?)",
                    (prev["session"]["rowid"] or 0, since))
        # OpenCode's tables have no index on `time_updated`: rewritten rows take a scan of each
        # table, most of a following cycle's time; the parts' (the larger) runs beside the messages'
        # on a second connection, whose snapshot is the same or later: it can only find more changes.
        touched = "SELECT DISTINCT session_id FROM {} WHERE rowid > ? OR time_updated >= ?"
        args = {t: (prev[t]["rowid"] or 0, since) for t in ("message", "part")}
        parts = read_beside(self.uri, [(touched.format("part"), args["part"])], BUSY_RETRY_SECONDS)
        con.execute(f"INSERT OR IGNORE INTO temp.touched {touched.format(a + '.message')}", args["message"])
        beside = parts()
        if beside is None:  # the second connection failed: scanned here instead
            con.execute(f"INSERT OR IGNORE INTO temp.touched {touched.format(a + '.part')}", args["part"])
        else:
            con.executemany("INSERT OR IGNORE INTO temp.touched VALUES (?)", beside[0])
        return new_state, "incremental", notes

    def _merge(self, sessions: str = "1", args: tuple = ()) -> None:
        if self.wanted:
            sessions = f"({sessions}) AND r.id IN (SELECT session_id FROM {self.wanted})"
        self._create_views()
        try:
            extract.merge_projects_and_sessions(self.con, self.rank, sessions, args)
        finally:
            self._drop_views()

    def _id_at(self, table: str, rowid: int | None) -> str | None:
        if rowid is None:
            return None
        row = self.con.execute(f"SELECT id FROM {self.alias}.{table} WHERE rowid = ?", (rowid,)).fetchone()
        return row[0] if row else None

    # -- staging ------------------------------------------------------------------------------------

    def stage_half_ahead(self, prepare: Callable[[sqlite3.Connection], None], report_ids: bool = True) -> bool:
        """Starts reading the second half of this database's sessions on a second connection, for a
        `stage` of the whole database as the first source (see `store.half_ahead`; `report_ids`:
        whether the half reports the IDs it staged, for a later source to skip). False when there
        is nothing to read."""
        if self.stamp[0] == 0 or not REQUIRED_TABLES <= self._guard(self._attach):
            return False
        self.half = HalfAhead(self.uri, self.rank, int(BUSY_RETRY_SECONDS * 1000), prepare,
                              None if report_ids else self.held_unstaged)
        return True

    def settle_half(self) -> HalfAhead | None:
        """The second half, once its ranges are cut; None (and no half) when there was nothing to cut."""
        if self.half is not None and self.half.wait_ranges() is None:
            self.half.close()
            self.half = None
        return self.half

    def stage(self, sessions: str | None, first: bool) -> None:
        """Stages this database's records of the sessions in table `sessions` (all when None); with
        a second half read ahead, only the ranges of sessions this connection claims (the index
        then takes the half's with `finish_half`, and closes it)."""
        if self.stamp[0] == 0:
            return
        tables = self._guard(self._attach)
        if not REQUIRED_TABLES <= tables:
            return
        half = self.settle_half()
        scope = f"r.session_id IN (SELECT session_id FROM {sessions})" if sessions else "1"
        # with a second half read ahead: the ranges of sessions this connection claims, one by one
        ranges = half.ranges if half is not None else None
        scopes = (ranges.scope(i) for i in ranges.low_claims()) if ranges is not None else [(scope, {})]
        con = self.con
        if sessions:
            con.execute(f"DELETE FROM skipped WHERE source = ? AND session_id IN (SELECT session_id FROM {sessions})",
                        (self.source,))
        else:
            con.execute("DELETE FROM skipped WHERE source = ? AND session_id IS NOT NULL", (self.source,))
        self._create_views()
        try:
            bad = self._guard(lambda: [row for scope, params in scopes for row in
                                       extract.stage(con, self.rank, scope, first, params, completion=False)])
        finally:
            self._drop_views()
        self.unstaged_here = set(self._count_malformed(bad))

    def absent(self, ids: str) -> set[str]:
        """The message IDs in the JSON array `ids` this database does not hold, as this read sees it
        (its snapshot: both halves', `finish_half`): one probe of its ID index each, cheaper than
        reading every ID; and what is returned is often nothing."""
        found = self.con.execute(
            f"SELECT group_concat(j.value, char(10)) FROM json_each(?) j "
            f"WHERE NOT EXISTS (SELECT 1 FROM {self.alias}.message m WHERE m.id = j.value)", (ids,)
        ).fetchone()[0]
        return set(found.split("\n")) if found else set()

    def held_unstaged(self, ids: list[str]) -> set[str]:
        """Of messages `ids` this connection did not stage, those the database holds, less those
        malformed here: the second half staged them (or found them malformed too)."""
        return set(ids) - self.absent(json.dumps(ids)) - self.unstaged_here

    def finish_half(self) -> list[str]:
        """Waits for the second half's staging and counts its rows with malformed JSON as skipped;
        returns the IDs of its messages among them. Raises `SplitFailed` when the
        database was written since this read began: the connections may have read two snapshots."""
        if self._half_unstaged is None:
            assert self.half is not None
            bad = self.half.take_staged()
            if self.written_since_stamp():
                raise SplitFailed
            self._half_unstaged = self._count_malformed(bad)
        return self._half_unstaged

    def _count_malformed(self, bad: list[tuple[str, str]]) -> list[str]:
        """Counts rows with malformed JSON as skipped; returns the IDs of the messages among them."""
        messages = []
        for table, rid in bad:
            row = self.con.execute(f"SELECT session_id FROM {self.alias}.{table} WHERE id = ?", (rid,)).fetchone()
            sid = row[0] if row else None
            self.con.execute("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?)",
                             (self.source, f"{table}:{rid}", "malformed JSON", sid))
            if table == "message":
                messages.append(rid)
        return messages
