"""The index: what every report needs, summed from OpenCode's records, in one SQLite file.

It lives under `$XDG_CACHE_HOME/ocsight/`, never inside OpenCode's data directory, and is safe to
delete at any time: the next run rebuilds it from the sources. A refresh finds which sessions
changed in any source (columns and directory stamps, no JSON), merges projects and sessions,
stages the changed sessions from every source (`sources.staging`: de-duplicated, normalised,
priced, summed; a large first read as several stagings at once, `sources.workers`) and replaces
their cube rows. An unchanged store is not written at all.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocsight import paths
from ocsight.errors import OcsightError
from ocsight.index.reader import IndexReader
from ocsight.index.schema import CUBE_INDEXES, SCHEMA, SCHEMA_VERSION
from ocsight.pricing.catalogue import Catalogue
from ocsight.pricing.rates import Pair, PriceRow, price_rows
from ocsight.sources import database, locate
from ocsight.sources.database import OpenCodeDatabase
from ocsight.sqlite_support import require_sqlite

if TYPE_CHECKING:
    from tempfile import TemporaryDirectory

    from ocsight.sources import staging

INDEX_PAGE_SIZE = 16384
MESSAGES_PER_WORKER = 20_000  # a read is split only when each part has at least this many messages
SAMPLE = 1000  # messages sampled to cut a read into parts of about equal work

Progress = Callable[[str], None]


def index_path(sources: locate.Sources, name: str = "") -> Path:
    """`name` gives a consumer its own index (the sidecar: another process refreshing a shared one
    would consume the changes the sidecar must see). Named by a 64-bit digest of the sources: no
    cryptography needed to tell a user's few sets of sources apart."""
    key = sources.key.encode()
    digest = f"{zlib.crc32(key):08x}{zlib.adler32(key):08x}"
    return paths.ocsight_cache() / f"index-{digest}{'-' + name if name else ''}.sqlite"


def _connect(path: Path | None, lean: bool, wal: bool = True) -> sqlite3.Connection:
    # `uri`: OpenCode's databases are attached by URI, which SQLite honours only on a connection
    # opened with URIs on (not every build turns them on by default)
    target = ":memory:" if path is None else "file:" + urllib.parse.quote(str(path))
    if path is not None:
        try:
            paths.private_file(path)
        except OSError as e:
            raise OcsightError(f"cannot create ocsight's index {path}: {e.strerror}") from None
    con = sqlite3.connect(target, uri=True, isolation_level=None, timeout=30,
                          check_same_thread=False)
    con.execute(f"PRAGMA temp_store = {'FILE' if lean else 'MEMORY'}")
    con.execute("PRAGMA cache_size = -8000")
    if path is not None:
        con.execute(f"PRAGMA page_size = {INDEX_PAGE_SIZE}")  # a new file's: fewer, larger writes
        con.execute(f"PRAGMA journal_mode = {'WAL' if wal else 'DELETE'}")
        con.execute("PRAGMA synchronous = NORMAL")
    return con


@contextmanager
def transaction(con: sqlite3.Connection, immediate: bool = False) -> Iterator[sqlite3.Connection]:
    """BEGIN / COMMIT, or ROLLBACK on error; IMMEDIATE serialises concurrent ocsight runs."""
    deadline = time.monotonic() + 30
    while True:
        try:
            con.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            break
        except sqlite3.OperationalError as e:
            if ("locked" not in str(e) and "busy" not in str(e)) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield con
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


class _Retry(Exception):
    """OpenCode wrote to a database read without locks: the read is thrown away and done again."""


class Index:
    """The index for one set of sources; `refresh()` brings it up to date with them."""

    def __init__(self, sources: locate.Sources, path: Path | None, lean: bool = False,
                 workers: int | None = None, fork_copies: bool = False) -> None:
        """`workers`: the most stagings a read runs at once (default: one per core); `fork_copies`:
        its readers count the copies a fork made, as OpenCode does (the index holds them either way)."""
        require_sqlite()
        self.sources = sources
        self.path = path
        self.lean = lean
        self.workers = workers
        self.fork_copies = fork_copies
        self.notes: list[str] = []
        self._price_notes: list[str] = []  # the price sources' problems (`_keep_price_notes`)
        # What the last refresh found changed: None when it read everything.
        self.touched: set[str] | None = None
        self.catalogue: Catalogue | None = None  # the last refresh's price sources
        self._scratch: TemporaryDirectory[str] | None = None  # a refresh's staging databases
        self._wal_pending = False
        self.con = self._open()
        self.reader = IndexReader(self.con, fork_copies)

    @classmethod
    def open(cls, sources: locate.Sources, use_cache: bool = True, name: str = "", lean: bool = False,
             workers: int | None = None, fork_copies: bool = False) -> Index:
        if not use_cache:
            return cls(sources, None, lean, workers, fork_copies)
        path = index_path(sources, name)
        for d in sources.data_dirs:
            if path.resolve().is_relative_to(d.resolve()):
                raise OcsightError(f"refusing to keep ocsight's index inside OpenCode's data directory ({d})")
        try:
            paths.private_dir(path.parent)  # the index holds session titles: the user's alone
        except OSError as e:
            raise OcsightError(f"cannot create ocsight's cache directory {path.parent}: {e.strerror}") from None
        return cls(sources, path, lean, workers, fork_copies)

    def _open(self) -> sqlite3.Connection:
        if self.path is not None and self.path.exists():
            try:
                con = _connect(self.path, self.lean)
                if _schema_ok(con):
                    return con
                con.close()
            except sqlite3.DatabaseError:
                pass  # an unreadable cache is simply rebuilt
        if self.path is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        # A new index is built with a rollback journal, which for a new file journals next to
        # nothing: its pages are written once, not into the WAL and then again into the file. It
        # turns to WAL after its first refresh, so readers never wait for a writer.
        con = _connect(self.path, self.lean, wal=False)
        self._wal_pending = self.path is not None
        with transaction(con):
            for ddl in (*SCHEMA, *CUBE_INDEXES.values()):
                con.execute(ddl)
            con.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        return con

    def second_reader(self) -> IndexReader | None:
        """A reader on a read-only connection of its own (for work beside this one's), or None when
        the index is not a file's: another connection could not see it."""
        if self.path is None:
            return None
        con = sqlite3.connect(f"file:{urllib.parse.quote(str(self.path))}?mode=ro", uri=True, timeout=30,
                              check_same_thread=False)
        return IndexReader(con, self.fork_copies)

    @property
    def is_new(self) -> bool:
        """Whether it holds nothing yet: its first refresh reads everything."""
        return self.con.execute("SELECT 1 FROM meta WHERE key = 'cube'").fetchone() is None

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- refresh -----------------------------------------------------------------------------------

    def refresh(self, catalogue: Catalogue, progress: Progress | None = None) -> None:
        """Brings the cubes up to date with every source; an unchanged store is not written at all."""
        say = progress or (lambda _msg: None)
        self.catalogue = catalogue
        for _attempt in range(3):
            try:
                self._refresh(catalogue, say)
                break
            except _Retry:
                time.sleep(0.05)
            finally:
                if not self.con.in_transaction:
                    for _seq, name, _file in self.con.execute("PRAGMA database_list").fetchall():
                        if name.startswith(("oc", "staged")):
                            self.con.execute(f"DETACH DATABASE {name}")
                if self._scratch is not None:
                    self._scratch.cleanup()
                    self._scratch = None
        else:
            raise OcsightError("OpenCode's database kept changing while being read; try again")
        if self._wal_pending:
            self.con.execute("PRAGMA journal_mode = WAL")
            self._wal_pending = False
        self.notes += self._price_notes

    def _refresh(self, catalogue: Catalogue, say: Progress) -> None:
        con = self.con
        with transaction(con, immediate=True):
            full = con.execute("SELECT 1 FROM meta WHERE key = 'cube'").fetchone() is None
            fingerprint = catalogue.fingerprint()
            touched = self._reprice(catalogue, fingerprint)
            dbs = database.ranked(self.sources.databases)
            for db in dbs:
                say(f"checking {db.path}")
                full = self._detect_database(db, touched) or full
            trees = list(self.sources.trees())
            for tree in trees:
                say(f"checking {tree.root}")
                full = self._detect_tree(tree, touched) or full
            self.touched = None if full else touched
            if full or touched:
                from ocsight.sources import workers  # only a read that finds changes stages records

                import tempfile

                say("reading OpenCode's records")
                # the stagings' databases: private (mode 0700), gone once the refresh is over
                self._scratch = tempfile.TemporaryDirectory(prefix="ocsight-read-")
                jobs = self._jobs(dbs, trees, None if full else touched, self._scratch.name)
                self._clear(None if full else touched)
                if full:
                    catalogue.prefetch()  # a whole read meets every model at once: load prices meanwhile
                for name in CUBE_INDEXES if full else ():
                    con.execute(f"DROP INDEX IF EXISTS {name}")
                for n, path in enumerate(workers.read(jobs, lambda pairs: self._prices(catalogue, pairs))):
                    self._copy_in(path, f"staged{n}")
                for name, ddl in CUBE_INDEXES.items() if full else ():
                    con.execute(ddl)
                con.execute("INSERT OR REPLACE INTO meta VALUES ('cube', '1')")
            self._price_notes = self._keep_price_notes(catalogue, fingerprint)
            if any(db.changed_under_us() for db in dbs):
                raise _Retry

    def _keep_price_notes(self, catalogue: Catalogue, fingerprint: str) -> list[str]:
        """What was wrong with the price sources (an unreadable OpenCode config, a bad cost). They are
        found only when read, which a refresh skips while their files are unchanged: so the notes are
        kept with the files' fingerprint, and said on every run until the files change."""
        row = self.con.execute("SELECT value FROM meta WHERE key = 'price_notes'").fetchone()
        if catalogue.loaded:
            kept = json.dumps({"prices": fingerprint, "notes": catalogue.problems})
            if row is None or row[0] != kept:  # an unchanged store is not written
                self.con.execute("INSERT OR REPLACE INTO meta VALUES ('price_notes', ?)", (kept,))
            return list(catalogue.problems)
        stored = json.loads(row[0]) if row else {}
        return list(stored.get("notes", [])) if stored.get("prices") == fingerprint else []

    # -- what changed ------------------------------------------------------------------------------

    def _detect_database(self, db: OpenCodeDatabase, touched: set[str]) -> bool:
        """Merges a database's new projects and sessions and adds its changed sessions to `touched`;
        True when it must be read whole."""
        con = self.con
        state = self._state(db.source)
        changes = db.changes(con, f"oc{db.rank}", state)
        self.notes += changes.notes
        if changes.mode == "unchanged":
            return False
        con.execute("DELETE FROM skipped WHERE source = ? AND session_id IS NULL", (db.source,))
        con.executemany("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, NULL)",
                        [(db.source, ref, reason) for ref, reason in changes.problems])
        if db.readable:
            if changes.vanished:
                # forget sessions it no longer holds, so a legacy copy of them counts again
                sessions, _ = db.sessions_select(con)
                con.execute(f"DELETE FROM session WHERE rank = ? AND id NOT IN (SELECT id FROM ({sessions}))",
                            (db.rank,))
                con.execute(f"DELETE FROM project WHERE rank = ? AND id NOT IN (SELECT id FROM "
                            f"({db.projects_select(con)}))", (db.rank,))
            self._merge_database(db, changes.sessions_since if changes.mode == "incremental" else None)
        touched.update(changes.touched)
        self._set_state(db.source, changes.state)
        return changes.mode == "full"

    def _merge_database(self, db: OpenCodeDatabase, since: tuple[int, int] | None) -> None:
        con = self.con
        con.execute(
            f"INSERT INTO project (id, rank, worktree, name) SELECT r.id, ?, r.worktree, r.name "
            f"FROM ({db.projects_select(con)}) r WHERE 1 ON CONFLICT(id) DO UPDATE SET rank = excluded.rank, "
            "worktree = excluded.worktree, name = excluded.name WHERE excluded.rank <= project.rank",
            (db.rank,),
        )
        sessions, args = db.sessions_select(con, since)
        con.execute(_UPSERT_SESSION.format(rows=sessions), (*args, db.rank))

    def _detect_tree(self, tree: locate.Tree, touched: set[str]) -> bool:
        """Merges a legacy tree's new projects and sessions, records its directory stamps and adds
        the sessions to read again to `touched`; True the first time the tree is read."""
        from ocsight.sources import legacy  # most stores have no legacy tree

        con = self.con
        prefix = tree.message_root + "/"
        known = dict(con.execute("SELECT path, mtime_ns FROM legacy_dir WHERE substr(path, 1, ?) = ?",
                                 (len(prefix), prefix)).fetchall())
        first = not known and not con.execute("SELECT 1 FROM session WHERE rank = ? LIMIT 1",
                                              (tree.rank,)).fetchone()
        meta = legacy.read_metadata(tree.root, {r[0] for r in con.execute("SELECT id FROM project")},
                                    _ids(con, "session"))
        con.executemany(
            "INSERT INTO project (id, rank, worktree, name) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "rank = excluded.rank, worktree = excluded.worktree, name = excluded.name "
            "WHERE excluded.rank <= project.rank",
            [(pid, tree.rank, worktree, name) for pid, worktree, name in meta.projects],
        )
        con.executemany(_UPSERT_SESSION.format(rows="VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                        [(*row, tree.rank) for row in meta.sessions])
        scan = legacy.scan(tree.root)
        listed = {prefix + sid: mtime for sid, mtime in scan.message_dirs.items()}
        con.execute("DELETE FROM skipped WHERE source = ? AND session_id IS NULL", (tree.source,))
        con.executemany("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, NULL)",
                        [(tree.source, p, legacy.FOREIGN) for p in [*meta.foreign, *scan.foreign]]
                        + [(tree.source, p, why) for p, why in meta.problems])
        changed = [p for p, m in listed.items() if known.get(p) != m] + [p for p in known if p not in listed]
        if not first:  # a first read reads every session: no need to say which
            touched.update(p[len(prefix):] for p in changed)
            # still streaming last time, or a file that failed to parse: read again
            touched.update(r[0] for r in con.execute("SELECT session_id FROM legacy_open WHERE source = ?",
                                                     (tree.source,)))
            touched.update(r[0] for r in con.execute(
                "SELECT session_id FROM skipped WHERE source = ? AND session_id IS NOT NULL AND reason != ?",
                (tree.source, legacy.FOREIGN)))
        con.executemany("DELETE FROM legacy_dir WHERE path = ?", [(p,) for p in known if p not in listed])
        con.executemany("INSERT OR REPLACE INTO legacy_dir VALUES (?, ?)",
                        [(p, m) for p, m in listed.items() if known.get(p) != m])
        return first

    # -- reading -------------------------------------------------------------------------------------

    def _jobs(self, dbs: list[OpenCodeDatabase], trees: list[locate.Tree], touched: set[str] | None, scratch: str
              ) -> list[staging.ReadJob]:
        """One staging of the changed sessions; a whole read of a large database as one per core,
        over ranges of sessions holding about equal numbers of messages."""
        from ocsight.sources import staging

        readable = [db for db in dbs if not db.empty]  # a staging skips one without OpenCode's tables
        databases = tuple(staging.Database.of(db) for db in readable)
        stage_trees = tuple(trees)
        if touched is not None:
            return [staging.ReadJob(databases, stage_trees, staging.Scope(sessions=tuple(sorted(touched))),
                                    lean=self.lean, path=f"{scratch}/read-0.sqlite")]
        scopes = [staging.Scope()]
        if readable and not self.lean:
            first = readable[0]
            first.attach(self.con, f"oc{first.rank}")
            messages = first.message_count_estimate(self.con) if first.readable else 0
            parts = staging.worker_count(messages, MESSAGES_PER_WORKER, self.workers)
            if parts > 1:
                sample = first.message_sample(self.con, SAMPLE)
                bounds = sorted({sample[len(sample) * i // parts] for i in range(1, parts)} - {sample[0]})
                scopes = list(staging.iter_ranges(bounds))
        return [staging.ReadJob(databases, stage_trees, scope, lean=self.lean, path=f"{scratch}/read-{n}.sqlite")
                for n, scope in enumerate(scopes)]

    def _clear(self, touched: set[str] | None) -> None:
        """Drops the cube rows, skipped records and open sessions of what is read again."""
        con = self.con
        if touched is None:
            where, args = "1", ()
        else:
            con.execute("CREATE TEMP TABLE IF NOT EXISTS touched (session_id TEXT PRIMARY KEY)")
            con.execute("DELETE FROM temp.touched")
            con.executemany("INSERT INTO temp.touched VALUES (?)", [(s,) for s in touched])
            where, args = "session_id IN (SELECT session_id FROM temp.touched)", ()
        for table in ("usage_cube", "tool_cube", "legacy_open"):
            con.execute(f"DELETE FROM {table} WHERE {where}", args)
        con.execute(f"DELETE FROM skipped WHERE session_id IS NOT NULL AND ({where})", args)

    def _copy_in(self, path: str, alias: str) -> None:
        """Adds what a staging read (its database at `path`): cube rows, skipped records, open sessions."""
        con = self.con
        con.execute(f"ATTACH DATABASE ? AS {alias}", (f"file:{urllib.parse.quote(path)}?mode=ro",))
        con.execute(f"INSERT INTO usage_cube SELECT * FROM {alias}.cube_usage")
        con.execute(f"INSERT INTO tool_cube SELECT * FROM {alias}.cube_tool")
        con.execute(f"INSERT OR REPLACE INTO skipped SELECT * FROM {alias}.skipped_record")
        con.execute(f"INSERT OR IGNORE INTO legacy_open SELECT * FROM {alias}.open_session")

    # -- prices --------------------------------------------------------------------------------------

    def _reprice(self, catalogue: Catalogue, fingerprint: str) -> set[str]:
        """When a price source changed (by file stamp, `fingerprint`), re-resolves every known model;
        returns the sessions of models whose prices changed, whose estimates are then redone."""
        con = self.con
        row = con.execute("SELECT value FROM meta WHERE key = 'prices'").fetchone()
        if row is not None and row[0] == fingerprint:
            return set()
        known = con.execute("SELECT provider, model FROM price_source").fetchall()
        before = _price_table(con)
        con.execute("DELETE FROM price")
        con.execute("DELETE FROM price_source")
        if known:
            self._store_prices(catalogue, known)
        after = _price_table(con)
        touched: set[str] = set()
        for pair in {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}:
            touched.update(r[0] for r in con.execute(
                "SELECT DISTINCT session_id FROM usage_cube WHERE provider = ? AND model = ?", pair))
        con.execute("INSERT OR REPLACE INTO meta VALUES ('prices', ?)", (fingerprint,))
        return touched

    def _store_prices(self, catalogue: Catalogue, pairs: Iterable[Pair]) -> None:
        resolved = catalogue.resolve_all(pairs)
        self.con.executemany("INSERT OR REPLACE INTO price_source VALUES (?, ?, ?)",
                             [(p, m, price.source if price else None) for (p, m), price in resolved.items()])
        self.con.executemany("INSERT OR REPLACE INTO price VALUES (?, ?, ?, ?, ?, ?, ?, ?)", price_rows(resolved))

    def _prices(self, catalogue: Catalogue, pairs: list[Pair]) -> list[PriceRow]:
        """The rates of these models, resolved first where the index has none yet."""
        known = set(self.con.execute("SELECT provider, model FROM price_source").fetchall())
        new = [p for p in pairs if p not in known]
        if new:
            self._store_prices(catalogue, new)
        return self.reader.price_rows(pairs)

    # -- state ---------------------------------------------------------------------------------------

    def _state(self, source: str) -> dict[str, Any]:
        row = self.con.execute("SELECT state FROM source_state WHERE source = ?", (source,)).fetchone()
        return dict(json.loads(row[0])) if row else {}

    def _set_state(self, source: str, state: dict[str, Any]) -> None:
        self.con.execute("INSERT OR REPLACE INTO source_state VALUES (?, ?)", (source, json.dumps(state)))


# Merges session rows (id, project_id, parent_id, directory, title, version, time_created,
# time_updated) of a source of rank `?`: a lower rank replaces a higher one, never the reverse.
_UPSERT_SESSION = (
    "WITH r(id, project_id, parent_id, directory, title, version, time_created, time_updated) AS ({rows}) "
    "INSERT INTO session (id, rank, project_id, parent_id, directory, title, version, time_created, time_updated) "
    "SELECT r.id, ?, r.project_id, r.parent_id, r.directory, r.title, r.version, r.time_created, r.time_updated "
    "FROM r WHERE 1 ON CONFLICT(id) DO UPDATE SET rank = excluded.rank, project_id = excluded.project_id, "
    "parent_id = excluded.parent_id, directory = excluded.directory, title = excluded.title, "
    "version = excluded.version, time_created = excluded.time_created, time_updated = excluded.time_updated "
    "WHERE excluded.rank <= session.rank"
)


def _schema_ok(con: sqlite3.Connection) -> bool:
    try:
        meta = dict(con.execute("SELECT key, value FROM meta"))
    except sqlite3.DatabaseError:
        return False
    return meta.get("schema") == SCHEMA_VERSION


def _ids(con: sqlite3.Connection, table: str) -> set[str]:
    """Every ID of a table, fetched as one string rather than a row each (IDs hold no newline)."""
    ids = con.execute(f"SELECT group_concat(id, char(10)) FROM {table}").fetchone()[0]
    return set(ids.split("\n")) if ids else set()


def _price_table(con: sqlite3.Connection) -> dict[Pair, tuple[object, ...]]:
    rows: dict[Pair, list[object]] = {}
    for provider, model, *rest in con.execute("SELECT * FROM price ORDER BY provider, model, kind, size"):
        rows.setdefault((provider, model), []).append(tuple(rest))
    for provider, model, source in con.execute("SELECT * FROM price_source"):
        rows.setdefault((provider, model), []).append(("source", source))
    return {k: tuple(v) for k, v in rows.items()}
