"""Reading OpenCode's legacy JSON tree (`storage/`, written by OpenCode <= 1.1 and kept after upgrades).

Files are loaded as text into a temporary table and exposed through the same `src_*` views as the
database, so one extraction (`store.extract`) serves both eras. Only what changed is read:

- a session's message directory whose mtime is unchanged holds no new or removed messages;
- a message a database already gave is never read (its file name is its ID), nor are its parts;
- sessions with messages still streaming (no `time.completed`, no error) and files that failed to
  parse are read again on every refresh, so a half-written file is retried rather than lost.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

from ocsight.sqlite_library import sqlite3
from ocsight.store import extract

BATCH_FILES = 10_000  # files held in memory at once, in each of the two batches read ahead
READ_CHUNK = 1 << 16  # most files fit in one read
AFTER_TIMEOUT_S = 1.0  # a listing waits at most this long for another thread's set-up
FOREIGN = "foreign file"
T = TypeVar("T")


def _scandir(path: str) -> Iterator[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            yield from it
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return


def _read(path: str) -> tuple[str | None, str | None]:
    """(text, problem): the file's text, or why it could not be used (None, None: it is gone).

    Plain `os` calls: a tree holds ~100,000 small files, and `open()`'s file objects cost as much
    as the system calls (1.0 s against 0.55 s for the benchmark's tree)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            raw = os.read(fd, READ_CHUNK)
            if len(raw) == READ_CHUNK:  # a large file: the rest, to its end
                chunks = [raw]
                while chunk := os.read(fd, READ_CHUNK):
                    chunks.append(chunk)
                raw = b"".join(chunks)
        finally:
            os.close(fd)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"unreadable file ({e.strerror})"
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, "not UTF-8 text"


# A record's file is named for its ID: a message staged from a database is skipped by name, unread.
FILE_SUFFIX = ".json"
Listing = dict[str, list[str]]  # session ID -> the names in its message directory


def _names(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def _json_names(directory: str, names: list[str], foreign: list[str]) -> dict[str, str]:
    """{id: path} of the JSON files among `names` in `directory`; anything else there but
    directories is noted as foreign. Names alone (`listdir`, half the time of `scandir`'s entries):
    whatever is named `.json` is read as a file, and a directory so named is reported as unreadable
    when read."""
    out = {}
    for name in names:
        path = f"{directory}/{name}"
        if name.endswith(FILE_SUFFIX):
            out[name[:-len(FILE_SUFFIX)]] = path
        elif not os.path.isdir(path):
            foreign.append(path)
    return out


def _json_files(directory: str, foreign: list[str]) -> dict[str, str]:
    """{id: path} of the JSON files in a directory (`_json_names`)."""
    return _json_names(directory, _names(directory), foreign)


def _list_sessions(message_root: str, sids: list[str] | None) -> Listing:
    """The names in the message directories of the sessions `sids` (every session directory when
    None): names alone, looked at only once those of staged messages are left out (`_batches`)."""
    if sids is None:
        sids = [e.name for e in _scandir(message_root) if e.is_dir()]
    return {sid: _names(f"{message_root}/{sid}") for sid in sids}


class _Ahead(threading.Thread, Generic[T]):
    """An iterator run on a thread, an item ahead of its reader: listing directories and reading
    files wait on system calls, which release the GIL, as do the reader's SQLite statements, so
    the two overlap. Errors are raised in the reader; a reader that stops early stops the thread."""

    def __init__(self, items: Iterator[T]) -> None:
        super().__init__(daemon=True)
        self._items = items
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._reader_gone = threading.Event()
        self.start()

    def run(self) -> None:
        try:
            for item in self._items:
                if not self._put((True, item)):
                    return
            self._put((False, None))
        except BaseException as e:  # noqa: BLE001 - re-raised in the reading thread
            self._put((False, e))

    def _put(self, entry: tuple[bool, object]) -> bool:
        while not self._reader_gone.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        try:
            while True:
                more, item = self._queue.get()
                if not more:
                    if item is not None:
                        raise item
                    return
                yield item
        finally:
            self._reader_gone.set()

    def first(self) -> T:
        for item in self:
            return item
        raise RuntimeError("nothing was produced")


def _left(listing: Listing, staged: set[str]) -> Listing:
    """The names in `listing` not in `staged`, by session: often none, beside a database holding every message."""
    return {sid: left for sid, names in listing.items() if (left := [n for n in names if n not in staged])}


# The names listed, by session, and the IDs of the messages listed, as a JSON array
# (`Database.absent`), or None when not asked for
Ahead = tuple[Listing, str | None]


def _listing_of(message_root: str, after: threading.Event | None = None, ids: bool = False) -> Iterator[Ahead]:
    if after is not None:
        after.wait(AFTER_TIMEOUT_S)
    listing = _list_sessions(message_root, None)
    yield listing, _message_ids(listing) if ids else None


def _message_ids(listing: Listing) -> str:
    return json.dumps([n[:-len(FILE_SUFFIX)] for names in listing.values() for n in names if n.endswith(FILE_SUFFIX)])


def _to_read(listing: Listing, ids: set[str]) -> Listing:
    """The names in `listing` of the messages `ids` and of anything not a message file, by session."""
    return {sid: left for sid, names in listing.items()
            if (left := [n for n in names if not n.endswith(FILE_SUFFIX) or n[:-len(FILE_SUFFIX)] in ids])}


class LegacyTree:
    """One `storage/` tree, for the length of a refresh."""

    def __init__(self, con: sqlite3.Connection, storage: Path, rank: int, say: Callable[[str], None],
                 wanted: str | None = None) -> None:
        self.con, self.root, self.rank, self.say = con, str(storage), rank, say
        self.source = f"json:{storage}"
        self.message_root = f"{self.root}/message"
        self.wanted = wanted  # as `Database.wanted`
        self._ahead: _Ahead[Ahead] | None = None
        self.session_dirs = 0  # found by `detect`
        # IDs of messages staged on another connection (`store.half_ahead`): skipped like those staged here
        self.staged_elsewhere: list[str] = []
        # or, beside the only database: which of the listed messages it lacks (`Database.absent`,
        # `Index._skip_half`), and those it could not give (`read_anyway`); then no staged ID is read back
        self.absent_from: Callable[[str], set[str]] | None = None
        self.read_anyway: set[str] = set()
        self._listing: Listing = {}  # the last `stage`'s

    # -- what changed ------------------------------------------------------------------------------

    def detect(self) -> str:
        """Merges new projects and sessions; records sessions that need reading again in `temp.touched`.

        Returns "full" the first time the tree is read, else "incremental" or "unchanged".
        """
        con, prefix = self.con, self.message_root + "/"
        known = dict(
            con.execute(
                "SELECT path, mtime_ns FROM legacy_dir WHERE substr(path, 1, ?) = ?", (len(prefix), prefix)
            ).fetchall()
        )
        first = not known and not con.execute(
            "SELECT 1 FROM session WHERE rank = ? LIMIT 1", (self.rank,)
        ).fetchone()
        foreign: list[str] = []
        problems = self._merge_projects_and_sessions(foreign)
        listed: dict[str, int] = {}
        for e in _scandir(self.message_root):
            if not e.is_dir():
                foreign.append(e.path)
                continue
            try:
                listed[e.path] = e.stat().st_mtime_ns
            except OSError:
                continue
        con.execute("DELETE FROM skipped WHERE source = ? AND session_id IS NULL", (self.source,))
        con.executemany(
            "INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, NULL)",
            [(self.source, p, FOREIGN) for p in foreign] + [(self.source, p, why) for p, why in problems],
        )
        self.session_dirs = len(listed)
        changed = [p for p, m in listed.items() if known.get(p) != m] + [p for p in known if p not in listed]
        if not first:  # a first read reads every session: no need to say which
            con.executemany("INSERT OR IGNORE INTO temp.touched VALUES (?)", [(p[len(prefix):],) for p in changed])
            # Still streaming last time, or a file that failed to parse: read again.
            con.execute("INSERT OR IGNORE INTO temp.touched SELECT session_id FROM legacy_open WHERE source = ?",
                        (self.source,))
            con.execute(
                "INSERT OR IGNORE INTO temp.touched SELECT session_id FROM skipped WHERE source = ? "
                "AND session_id IS NOT NULL AND reason != ?",
                (self.source, FOREIGN),
            )
        con.executemany("DELETE FROM legacy_dir WHERE path = ?", [(p,) for p in known if p not in listed])
        con.executemany(
            "INSERT OR REPLACE INTO legacy_dir VALUES (?, ?)", [(p, m) for p, m in listed.items() if known.get(p) != m]
        )
        if first:
            return "full"
        return "incremental" if changed else "unchanged"

    def _merge_projects_and_sessions(self, foreign: list[str]) -> list[tuple[str, str]]:
        """Reads project and session files the index does not hold yet (they do not change later).

        Returns (path, reason) of files that could not be used; not being in the index, they are
        simply read again next time.
        """
        con = self.con
        have_projects = {r[0] for r in con.execute("SELECT id FROM project")}
        ids = con.execute("SELECT group_concat(id, char(10)) FROM session").fetchone()[0]
        have_sessions = set(ids.split("\n")) if ids else set()  # one string, not a row each: IDs hold no newline
        wanted = {r[0] for r in con.execute(f"SELECT session_id FROM {self.wanted}")} if self.wanted else None
        queue = [("project", pid, "", path) for pid, path in _json_files(f"{self.root}/project", foreign).items()
                 if pid not in have_projects]
        for e in _scandir(f"{self.root}/session"):
            if not e.is_dir():
                foreign.append(e.path)
                continue
            queue += [("session", sid, e.name, path) for sid, path in _json_files(e.path, foreign).items()
                      if sid not in have_sessions and (wanted is None or sid in wanted)]
        if not queue:
            return []
        rows, problems = self._read_rows(queue)
        self._load(rows)
        try:
            extract.merge_projects_and_sessions(con, self.rank)
            problems += [
                (path, "malformed JSON (half-written?)")
                for (path,) in con.execute("SELECT path FROM temp.lg_file WHERE NOT json_valid(data)")
            ]
        finally:
            self._unload()
        return problems

    # -- staging ------------------------------------------------------------------------------------

    def list_ahead(self, after: threading.Event | None = None, ids: bool = False) -> None:
        """Starts listing every session's message files, for a `stage` of the whole tree; once `after`
        is set, when given (listing holds the GIL most of the time: another thread's set-up first).
        With `ids`, the listed messages' IDs are made ready there for `Database.absent`."""
        self._ahead = _Ahead(_listing_of(self.message_root, after, ids))

    def stage(self, sessions: str | None, first: bool) -> None:
        """Stages this tree's records of the sessions in table `sessions` (all when None).

        Messages some database already staged are skipped by file name, unread.
        """
        con = self.con
        ahead, self._ahead = self._ahead, None
        ids = None
        if sessions is None:
            listing, ids = ahead.first() if ahead else (_list_sessions(self.message_root, None), None)
            con.execute("DELETE FROM skipped WHERE source = ? AND session_id IS NOT NULL", (self.source,))
            con.execute("DELETE FROM legacy_open WHERE source = ?", (self.source,))
        else:
            listing = _list_sessions(self.message_root,
                                     [r[0] for r in con.execute(f"SELECT session_id FROM {sessions}")])
            con.execute(
                f"DELETE FROM skipped WHERE source = ? AND session_id IN (SELECT session_id FROM {sessions})",
                (self.source,),
            )
            con.execute(
                f"DELETE FROM legacy_open WHERE source = ? AND session_id IN (SELECT session_id FROM {sessions})",
                (self.source,),
            )
        # Files of staged messages are not read (what is left is often nothing, beside a database
        # holding every message); `extract.stage` skips the messages staged on this connection too.
        if self.absent_from is not None:
            absent = self.absent_from(ids if ids is not None else _message_ids(listing))
            todo = _to_read(listing, absent | self.read_anyway)
        else:
            staged = set(extract.staged_message_ids(con, FILE_SUFFIX))
            staged.update(i + FILE_SUFFIX for i in self.staged_elsewhere)
            todo = _left(listing, staged)
        self._listing = listing
        skips: list[tuple[str, str, str | None]] = []
        foreign: list[tuple[str, str, str]] = []
        session_of: dict[str, str] = {}
        files_read = 0
        for batch, rows, problems in _Ahead(self._batches(todo, foreign)) if todo else ():
            files_read += len(batch)
            self.say(f"reading JSON files ({files_read:,} so far)")
            session_of.update({q[1]: q[2] for q in batch if q[0] == "message"})
            skips += [(p, why, _session(p, self.root, session_of)) for p, why in problems]
            self._load(rows)
            try:
                bad = extract.stage(con, self.rank, "1", first)
                first = False
                if bad:
                    paths = {(k, i): p for k, i, p in con.execute("SELECT kind, id, path FROM temp.lg_file")}
                    skips += [
                        (paths.get((t, i), i), "malformed JSON (half-written?)", _session(paths.get((t, i), ""),
                                                                                          self.root, session_of))
                        for t, i in bad
                    ]
            finally:
                self._unload()
        con.executemany("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?)",
                        [(self.source, *s) for s in skips + foreign])
        if not files_read:
            return  # every message came from a database: nothing of this tree's is open
        con.execute(
            "INSERT OR IGNORE INTO legacy_open SELECT DISTINCT ?, session_id FROM temp.stage_message "
            "WHERE rank = ? AND role = 'assistant' AND time_completed IS NULL AND error IS NULL",
            (self.source, self.rank),
        )

    def lists(self, message_id: str) -> bool:
        """Whether the last `stage` found a file of this message."""
        name = message_id + FILE_SUFFIX
        return any(name in names for names in self._listing.values())

    def _batches(self, listing: Listing, foreign_out: list[tuple[str, str, str]]
                 ) -> Iterator[tuple[list[tuple[str, str, str, str]], list[tuple], list[tuple[str, str]]]]:
        """(files, their rows, files that could not be used) of the messages named in `listing` and
        of their parts, a batch at a time; a message's files never span two batches. Foreign files
        found on the way are added to `foreign_out`."""
        pending: list[tuple[str, str, str, str]] = []
        for sid, names in listing.items():
            foreign: list[str] = []
            for mid, path in _json_names(f"{self.message_root}/{sid}", names, foreign).items():
                pending.append(("message", mid, sid, path))
                pending += [("part", pid, mid, p) for pid, p in _json_files(f"{self.root}/part/{mid}", foreign).items()]
                if len(pending) >= BATCH_FILES:
                    yield pending, *self._read_rows(pending)
                    pending = []
            foreign_out += [(p, FOREIGN, sid) for p in foreign]
        if pending:
            yield pending, *self._read_rows(pending)

    # -- files -> temporary tables ------------------------------------------------------------------

    @staticmethod
    def _read_rows(queue: list[tuple[str, str, str, str]]) -> tuple[list[tuple], list[tuple[str, str]]]:
        rows, problems = [], []
        for kind, rid, parent, path in queue:
            text, problem = _read(path)
            if text is not None:
                rows.append((kind, rid, parent, path, text))
            elif problem:
                problems.append((path, problem))
        return rows, problems

    def _load(self, rows: list[tuple]) -> None:
        con = self.con
        con.execute("CREATE TEMP TABLE IF NOT EXISTS lg_file (kind TEXT, id TEXT, parent TEXT, path TEXT, data TEXT)")
        con.execute("DELETE FROM temp.lg_file")
        con.executemany("INSERT INTO temp.lg_file VALUES (?, ?, ?, ?, ?)", rows)
        con.execute(
            "CREATE TEMP VIEW src_project AS SELECT id, data->>'$.worktree' AS worktree, data->>'$.name' AS name "
            "FROM temp.lg_file WHERE kind = 'project' AND json_valid(data)"
        )
        con.execute(
            "CREATE TEMP VIEW src_session AS SELECT id, coalesce(data->>'$.projectID', parent) AS project_id, "
            "data->>'$.parentID' AS parent_id, data->>'$.directory' AS directory, data->>'$.title' AS title, "
            "data->>'$.version' AS version, data->>'$.time.created' AS time_created, "
            "data->>'$.time.updated' AS time_updated FROM temp.lg_file WHERE kind = 'session' AND json_valid(data)"
        )
        con.execute(
            "CREATE TEMP VIEW src_message AS SELECT id, parent AS session_id, data->>'$.time.created' AS time_created, "
            "data FROM temp.lg_file WHERE kind = 'message'"
        )
        con.execute(
            "CREATE TEMP VIEW src_part AS SELECT id, parent AS message_id, data->>'$.sessionID' AS session_id, data "
            "FROM temp.lg_file WHERE kind = 'part'"
        )

    def _unload(self) -> None:
        for v in ("src_project", "src_session", "src_message", "src_part"):
            self.con.execute(f"DROP VIEW IF EXISTS temp.{v}")
        self.con.execute("DELETE FROM temp.lg_file")


def _session(path: str, root: str, session_of: dict[str, str]) -> str | None:
    """The session a message or part file belongs to, from its place in the tree."""
    rel = os.path.relpath(path, root).split(os.sep)
    if len(rel) == 3 and rel[0] == "message":
        return rel[1]
    if len(rel) == 3 and rel[0] == "part":
        return session_of.get(rel[1])
    return None
