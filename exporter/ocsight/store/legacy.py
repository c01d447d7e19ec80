"""Reading OpenCode's legacy JSON tree (`storage/`, written by OpenCode <= 1.1 and kept after upgrades).

Files are loaded as text into a temporary table and exposed through the same `src_*` views as the
database, so one extraction (`store.extract`) serves both eras. Only what changed is read:

- a directory whose mtime is unchanged holds no new or removed files;
- a message the database already has is not read at all (the database wins), nor are its parts;
- messages still streaming (no `time.completed`, no error) and files that failed to parse are
  read again on every refresh, so a half-written file is retried rather than lost.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ocsight.store import extract

KINDS = ("project", "session", "message", "part")
PARALLEL_READ_THRESHOLD = 2000
FOREIGN = "foreign file"


def _scandir(path: str) -> Iterator[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            yield from it
    except (FileNotFoundError, NotADirectoryError):
        return
    except PermissionError:
        return


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _read(path: str) -> tuple[str | None, str | None]:
    """(text, problem): the file's text, or why it could not be used."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        return None, f"unreadable file ({e.strerror})"
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, "not UTF-8 text"


class _Scan:
    """One refresh of one storage tree."""

    def __init__(self, con: sqlite3.Connection, storage: Path, rank: int, say: Callable[[str], None]) -> None:
        self.con, self.root, self.rank, self.say = con, str(storage), rank, say
        self.source = f"json:{storage}"
        prefix = self.root + "/"
        self.dirs = {
            p: m
            for p, m in con.execute(
                "SELECT path, mtime_ns FROM legacy_dir WHERE substr(path, 1, ?) = ?", (len(prefix), prefix)
            )
        }
        self.previous_skips = con.execute("SELECT ref, reason FROM skipped WHERE source = ?", (self.source,)).fetchall()
        self.listed: set[str] = set()
        self.new_dirs: dict[str, int] = {}
        self.queue: list[tuple[str, str, str, str]] = []  # (kind, id, parent, path)
        self.skips: list[tuple[str, str]] = []  # (path, reason)
        self._known_messages: set[str] | None = None

    def known_messages(self) -> set[str]:
        if self._known_messages is None:
            self._known_messages = {r[0] for r in self.con.execute("SELECT id FROM message")}
        return self._known_messages

    def changed(self, path: str) -> bool:
        """Whether a directory may hold new or removed files; remembers its mtime for next time."""
        m = _mtime(path)
        if m is None:
            return False
        self.new_dirs[path] = m
        return self.dirs.get(path) != m

    def files(self, directory: str) -> list[tuple[str, str]]:
        """(id, path) of the JSON files in a directory; anything else there is counted as foreign."""
        out = []
        self.listed.add(directory)
        for e in _scandir(directory):
            if e.name.endswith(".json") and e.is_file():
                out.append((e.name[:-5], e.path))
            elif not e.is_dir():
                self.skips.append((e.path, FOREIGN))
        return out

    def run(self) -> None:
        root = self.root
        # Files that failed last time are read again: a half-written file is usually whole by now.
        for path, reason in self.previous_skips:
            if reason != FOREIGN:
                self._queue_path(path)

        project_dir = f"{root}/project"
        if self.changed(project_dir):
            for pid, path in self.files(project_dir):
                self.queue.append(("project", pid, "", path))

        known_sessions = {r[0] for r in self.con.execute("SELECT id FROM session")}
        for e in _scandir(f"{root}/session"):
            if not e.is_dir():
                self.skips.append((e.path, FOREIGN))
            elif self.changed(e.path):
                for sid, path in self.files(e.path):
                    if sid not in known_sessions or self._owned("session", sid):
                        self.queue.append(("session", sid, e.name, path))

        message_root = f"{root}/message"
        for e in _scandir(message_root):
            if not e.is_dir():
                self.skips.append((e.path, FOREIGN))
            elif self.changed(e.path):
                self._session_dir(e.name, e.path)

        # Messages still streaming when last read are read again, with their parts.
        for mid, sid in self.con.execute(
            "SELECT id, session_id FROM message WHERE rank = ? AND role = 'assistant' "
            "AND time_completed IS NULL AND error IS NULL",
            (self.rank,),
        ).fetchall():
            self.queue.append(("message", mid, sid, f"{message_root}/{sid}/{mid}.json"))
            self._parts(mid)

    def _owned(self, table: str, rid: str) -> bool:
        row = self.con.execute(f"SELECT rank FROM {table} WHERE id = ?", (rid,)).fetchone()
        return row is not None and row[0] >= self.rank

    def _session_dir(self, sid: str, path: str) -> None:
        listing = dict(self.files(path))
        ours = {r[0] for r in self.con.execute("SELECT id FROM message WHERE session_id = ? AND rank = ?", (sid, self.rank))}
        gone = ours - listing.keys()
        if gone:
            _delete_messages(self.con, gone)
        known = self.known_messages()
        for mid, file in listing.items():
            if mid not in known:
                self.queue.append(("message", mid, sid, file))
                self._parts(mid)

    def _parts(self, mid: str) -> None:
        for pid, path in self.files(f"{self.root}/part/{mid}"):
            self.queue.append(("part", pid, mid, path))

    def _queue_path(self, path: str) -> None:
        rel = os.path.relpath(path, self.root).split(os.sep)
        if len(rel) >= 2 and rel[0] in KINDS and path.endswith(".json"):
            parent = rel[-2] if len(rel) >= 3 else ""
            self.queue.append((rel[0], os.path.basename(path)[:-5], parent, path))

    def load(self) -> None:
        """Reads the queued files into `lg_file` and extracts them through the shared views."""
        con = self.con
        queue = list(dict.fromkeys(self.queue))  # a file queued twice is read once
        if not queue:
            self._save()
            return
        self.say(f"reading {len(queue)} JSON files")
        paths = [q[3] for q in queue]
        if len(paths) >= PARALLEL_READ_THRESHOLD:
            with ThreadPoolExecutor(max_workers=4) as pool:
                texts = list(pool.map(_read, paths, chunksize=256))
        else:
            texts = [_read(p) for p in paths]
        rows = []
        for (kind, rid, parent, path), (text, problem) in zip(queue, texts):
            if text is None:
                if problem and not problem.startswith("unreadable file (No such file"):
                    self.skips.append((path, problem))
                continue
            rows.append((kind, rid, parent, path, text))
        con.execute("CREATE TEMP TABLE IF NOT EXISTS lg_file (kind TEXT, id TEXT, parent TEXT, path TEXT, data TEXT)")
        con.execute("DELETE FROM temp.lg_file")
        con.executemany("INSERT INTO temp.lg_file VALUES (?, ?, ?, ?, ?)", rows)
        _create_views(con)
        try:
            bad = extract.run(con, self.rank, track_parts=True)
            paths_by_id = {}
            if bad:
                paths_by_id = {(k, i): p for k, i, p in con.execute("SELECT kind, id, path FROM temp.lg_file")}
            for table, rid in bad:
                self.skips.append((paths_by_id.get((table, rid), rid), "malformed JSON (half-written?)"))
            for (path,) in con.execute(
                "SELECT path FROM temp.lg_file WHERE kind IN ('project', 'session') AND NOT json_valid(data)"
            ):
                self.skips.append((path, "malformed JSON (half-written?)"))
        finally:
            for v in ("src_project", "src_session", "src_message", "src_part"):
                con.execute(f"DROP VIEW IF EXISTS temp.{v}")
            con.execute("DELETE FROM temp.lg_file")
        self._save()

    def _save(self) -> None:
        """Records skipped files and directory stamps, writing only what changed."""
        con = self.con
        # Foreign files seen before stay counted while their directory is not listed again.
        kept = [
            (p, r)
            for p, r in self.previous_skips
            if r == FOREIGN and os.path.dirname(p) not in self.listed and os.path.lexists(p)
        ]
        skips = sorted(set(kept + self.skips))
        if skips != sorted(set(self.previous_skips)):
            con.execute("DELETE FROM skipped WHERE source = ?", (self.source,))
            con.executemany(
                "INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, NULL)", [(self.source, p, r) for p, r in skips]
            )
        con.executemany(
            "INSERT OR REPLACE INTO legacy_dir VALUES (?, ?)",
            [(p, m) for p, m in self.new_dirs.items() if self.dirs.get(p) != m],
        )


def _create_views(con: sqlite3.Connection) -> None:
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
        "CREATE TEMP VIEW src_message AS SELECT rowid AS rid, id, parent AS session_id, "
        "data->>'$.time.created' AS time_created, NULL AS time_updated, data FROM temp.lg_file WHERE kind = 'message'"
    )
    con.execute(
        "CREATE TEMP VIEW src_part AS SELECT rowid AS rid, id, parent AS message_id, "
        "data->>'$.sessionID' AS session_id, NULL AS time_created, NULL AS time_updated, data "
        "FROM temp.lg_file WHERE kind = 'part'"
    )


def _delete_messages(con: sqlite3.Connection, ids: set[str]) -> None:
    con.execute("CREATE TEMP TABLE IF NOT EXISTS lg_gone (id TEXT PRIMARY KEY)")
    con.execute("DELETE FROM temp.lg_gone")
    con.executemany("INSERT OR IGNORE INTO temp.lg_gone VALUES (?)", [(i,) for i in ids])
    con.execute("INSERT OR IGNORE INTO temp.touched SELECT session_id FROM message WHERE id IN (SELECT id FROM temp.lg_gone)")
    for table, col in (("message", "id"), ("step", "message_id"), ("tool_call", "message_id")):
        con.execute(f"DELETE FROM {table} WHERE {col} IN (SELECT id FROM temp.lg_gone)")


def refresh(con: sqlite3.Connection, storage: Path, rank: int, progress: Callable[[str], None] | None = None) -> None:
    scan = _Scan(con, storage, rank, progress or (lambda _m: None))
    scan.run()
    scan.load()
