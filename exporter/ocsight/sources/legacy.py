"""OpenCode's legacy JSON tree (`storage/`, written by OpenCode <= 1.1 and kept after upgrades).

One JSON file per object, named for its ID:

    project/<projectID>.json, session/<projectID>/<sessionID>.json,
    message/<sessionID>/<messageID>.json, part/<messageID>/<partID>.json

Two sides read it. The index finds what changed (`scan`: a session's message directory whose mtime
is unchanged holds no new or removed messages) and reads the project and session files it does not
know yet (`read_metadata`). A staging lists the message files of its sessions (`list_messages`) and
reads those no database gave, with their parts (`SessionFiles`). Files can be half-written while
OpenCode runs, and stores hold foreign files: every file that cannot be used is reported, never
dropped silently.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

FILE_SUFFIX = ".json"  # a record's file is named for its ID
FOREIGN = "foreign file"
HALF_WRITTEN = "malformed JSON (half-written?)"
BATCH_FILES = 10_000  # files held in memory at once
READ_CHUNK = 1 << 16  # most files fit in one read

Problem = tuple[str, str, str | None]  # (path, reason, session)


def _names(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def _dirs(directory: str) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as it:
            yield from it
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return


def read_file(path: str) -> tuple[str | None, str | None]:
    """(text, problem): the file's text, or why it could not be used (None, None: it is gone).

    Plain `os` calls: a tree holds ~100,000 small files, and file objects cost as much as the
    system calls."""
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


def json_files(directory: str, names: list[str], foreign: list[str]) -> dict[str, str]:
    """{id: path} of the JSON files among `names` in `directory`; anything else there but
    directories is added to `foreign`. Whatever is named `.json` is read as a file (a directory so
    named is reported as unreadable when read)."""
    out = {}
    for name in names:
        path = f"{directory}/{name}"
        if name.endswith(FILE_SUFFIX):
            out[name[: -len(FILE_SUFFIX)]] = path
        elif not os.path.isdir(path):
            foreign.append(path)
    return out


# -- the index's side: what changed, and the metadata ---------------------------------------------

@dataclass(frozen=True)
class Scan:
    """The tree's session directories under `message/` with their mtimes, and foreign entries there."""

    message_dirs: dict[str, int]  # session ID -> mtime (ns)
    foreign: list[str]


def scan(root: str) -> Scan:
    dirs: dict[str, int] = {}
    foreign: list[str] = []
    for e in _dirs(f"{root}/message"):
        if not e.is_dir():
            foreign.append(e.path)
            continue
        try:
            dirs[e.name] = e.stat().st_mtime_ns
        except OSError:
            continue
    return Scan(dirs, foreign)


ProjectRow = tuple[str, object, object]  # (id, worktree, name)
SessionRow = tuple[object, ...]  # (id, project_id, parent_id, directory, title, version, time_created, time_updated)


@dataclass
class Metadata:
    projects: list[ProjectRow] = field(default_factory=list)
    sessions: list[SessionRow] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): read again next time
    foreign: list[str] = field(default_factory=list)


def read_metadata(root: str, known_projects: set[str], known_sessions: set[str],
                  wanted: set[str] | None = None) -> Metadata:
    """The project and session files not known yet (they do not change once written); with
    `wanted`, only those sessions'. JSON is read by SQLite, as every other record is."""
    out = Metadata()
    queue: list[tuple[str, str, str, str]] = []  # (kind, id, parent, path)
    projects = json_files(f"{root}/project", _names(f"{root}/project"), out.foreign)
    queue += [("project", pid, "", path) for pid, path in projects.items() if pid not in known_projects]
    for e in _dirs(f"{root}/session"):
        if not e.is_dir():
            out.foreign.append(e.path)
            continue
        files = json_files(e.path, _names(e.path), out.foreign)
        queue += [("session", sid, e.name, path) for sid, path in files.items()
                  if sid not in known_sessions and (wanted is None or sid in wanted)]
    if not queue:
        return out
    rows = []
    for kind, rid, parent, path in queue:
        text, problem = read_file(path)
        if text is not None:
            rows.append((kind, rid, parent, path, text))
        elif problem:
            out.problems.append((path, problem))
    con = sqlite3.connect(":memory:")
    try:
        con.execute("CREATE TABLE f (kind TEXT, id TEXT, parent TEXT, path TEXT, data TEXT)")
        con.executemany("INSERT INTO f VALUES (?, ?, ?, ?, ?)", rows)
        out.problems += [(path, HALF_WRITTEN) for (path,) in con.execute(
            "SELECT path FROM f WHERE NOT json_valid(data) ORDER BY path")]
        out.projects = con.execute(
            "SELECT id, json_extract(data, '$.worktree'), json_extract(data, '$.name') FROM f "
            "WHERE kind = 'project' AND json_valid(data)").fetchall()
        out.sessions = con.execute(
            "SELECT id, coalesce(json_extract(data, '$.projectID'), parent), json_extract(data, '$.parentID'), "
            "json_extract(data, '$.directory'), json_extract(data, '$.title'), json_extract(data, '$.version'), "
            "json_extract(data, '$.time.created'), json_extract(data, '$.time.updated') FROM f "
            "WHERE kind = 'session' AND json_valid(data)").fetchall()
    finally:
        con.close()
    return out


# -- a staging's side: the files of some sessions ---------------------------------------------------

def session_versions(root: str, wanted: Callable[[str], bool]) -> list[tuple[str, object]]:
    """(session ID, the OpenCode version that created it) of the `wanted` sessions' files."""
    files: list[tuple[str, str]] = []
    for e in _dirs(f"{root}/session"):
        if e.is_dir():
            files += [(sid, path) for sid, path in json_files(e.path, _names(e.path), []).items() if wanted(sid)]
    rows = [(sid, text) for sid, path in files if (text := read_file(path)[0]) is not None]
    if not rows:
        return []
    con = sqlite3.connect(":memory:")
    try:
        con.execute("CREATE TABLE f (id TEXT, data TEXT)")
        con.executemany("INSERT INTO f VALUES (?, ?)", rows)
        return con.execute("SELECT id, json_extract(data, '$.version') FROM f WHERE json_valid(data)").fetchall()
    finally:
        con.close()



Listing = dict[str, list[str]]  # session ID -> the names in its message directory


def list_messages(root: str, sessions: tuple[str, ...] | None, holds: Callable[[str], bool]) -> Listing:
    """The names in the message directories of `sessions`, or of every session `holds` admits:
    names alone, looked at only once those of staged messages are left out."""
    message_root = f"{root}/message"
    if sessions is None:
        sessions = tuple(e.name for e in _dirs(message_root) if e.is_dir() and holds(e.name))
    return {sid: _names(f"{message_root}/{sid}") for sid in sessions}


@dataclass
class Batch:
    """Files read, as rows (kind, id, parent, path, text), and the files that could not be."""

    rows: list[tuple[str, str, str, str, str]]
    problems: list[Problem]
    session_of: dict[str, str]  # message ID -> session ID, for the parts' problems


class SessionFiles:
    """The message files named in a listing and their parts' files, read a batch at a time; a
    message's files never span two batches. Foreign files found on the way are in `foreign`."""

    def __init__(self, root: str, listing: Listing) -> None:
        self.root, self.listing = root, listing
        self.foreign: list[tuple[str, str]] = []  # (path, session)

    def __iter__(self) -> Iterator[Batch]:
        pending: list[tuple[str, str, str, str]] = []  # (kind, id, parent, path)
        session_of: dict[str, str] = {}
        for sid, names in self.listing.items():
            foreign: list[str] = []
            for mid, path in json_files(f"{self.root}/message/{sid}", names, foreign).items():
                pending.append(("message", mid, sid, path))
                session_of[mid] = sid
                part_dir = f"{self.root}/part/{mid}"
                pending += [("part", pid, mid, p) for pid, p in json_files(part_dir, _names(part_dir), foreign).items()]
                if len(pending) >= BATCH_FILES:
                    yield self._read(pending, session_of)
                    pending, session_of = [], {}
            self.foreign += [(p, sid) for p in foreign]
        if pending:
            yield self._read(pending, session_of)

    @staticmethod
    def _read(queue: list[tuple[str, str, str, str]], session_of: dict[str, str]) -> Batch:
        rows, problems = [], []
        for kind, rid, parent, path in queue:
            text, problem = read_file(path)
            if text is not None:
                rows.append((kind, rid, parent, path, text))
            elif problem:
                problems.append((path, problem, parent if kind == "message" else session_of.get(parent)))
        return Batch(rows, problems, session_of)
