"""ocsight's local index: what every report needs, summed from OpenCode's records, in one SQLite file.

It lives under `$XDG_CACHE_HOME/ocsight/`, never inside OpenCode's data directory, and is safe to
delete at any time: the next run rebuilds it from the sources.

It holds sessions, projects and two cubes: valid messages and tool calls summed per session,
15-minute bucket and dimension (role, provider, model, agent, error; tool). A refresh finds which
sessions changed in any source (`store.sqlite`, `store.legacy`: columns and directory stamps, no
JSON), stages those sessions from every source (`store.extract`: de-duplicated, normalised,
priced) and rebuilds their cube rows. Per-message details are not kept: they are read from the
sources when asked for, through the same staging.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from ocsight import __version__, malloc_tuning, normalise
from ocsight.errors import OcsightError
from ocsight.sqlite_library import sqlite3
from ocsight.store import extract, half_ahead, locate
from ocsight.store.half_ahead import HalfAhead, SplitFailed
from ocsight.store.legacy import LegacyTree
from ocsight.store.sqlite import Database, detach_all

try:  # Python's own SHA-256: `hashlib` loads OpenSSL first, 4 ms of every start
    from _sha2 import sha256  # Python 3.12+
except ImportError:
    try:
        from _sha256 import sha256  # Python 3.10, 3.11
    except ImportError:
        from hashlib import sha256

SCHEMA_VERSION = "5"

# Ordered DDL: the index is a cache, so a version change rebuilds it rather than migrating it.
SCHEMA = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID",
    "CREATE TABLE source_state (source TEXT PRIMARY KEY, state TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE project (id TEXT PRIMARY KEY, rank INTEGER NOT NULL, worktree TEXT, name TEXT)",
    """CREATE TABLE session (id TEXT PRIMARY KEY, rank INTEGER NOT NULL, project_id TEXT, parent_id TEXT,
        directory TEXT, title TEXT, version TEXT, time_created INTEGER, time_updated INTEGER, era TEXT)""",
    # Every real time zone's midnight falls on a 15-minute boundary, so day windows in any zone are exact.
    """CREATE TABLE usage_cube (session_id TEXT, bucket INTEGER, role TEXT, provider TEXT, model TEXT, agent TEXT,
        error TEXT, messages INTEGER, input INTEGER, output INTEGER, reasoning INTEGER, cache_read INTEGER,
        cache_write INTEGER, stored_pico INTEGER, est_zero_pico INTEGER, est_all_pico INTEGER,
        unpriced_zero INTEGER, unpriced_all INTEGER)""",
    "CREATE INDEX usage_cube_session ON usage_cube (session_id)",
    """CREATE TABLE tool_cube (session_id TEXT, bucket INTEGER, provider TEXT, model TEXT, agent TEXT, tool TEXT,
        calls INTEGER, errors INTEGER)""",
    "CREATE INDEX tool_cube_session ON tool_cube (session_id)",
    # Records a source could not give us: counted and shown; those of a session are redone with it.
    """CREATE TABLE skipped (source TEXT NOT NULL, ref TEXT NOT NULL, reason TEXT NOT NULL, session_id TEXT,
        PRIMARY KEY (source, ref)) WITHOUT ROWID""",
    """CREATE TABLE price (provider TEXT NOT NULL, model TEXT NOT NULL, kind INTEGER NOT NULL, size INTEGER NOT NULL,
        input REAL, output REAL, cache_read REAL, cache_write REAL, PRIMARY KEY (provider, model, kind, size))""",
    """CREATE TABLE price_source (provider TEXT NOT NULL, model TEXT NOT NULL, source TEXT,
        PRIMARY KEY (provider, model)) WITHOUT ROWID""",
    "CREATE TABLE legacy_dir (path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE legacy_open (source TEXT, session_id TEXT, PRIMARY KEY (source, session_id)) WITHOUT ROWID",
]

DB_RANK_BASE = 0  # databases: 0, 1, ... (the first database wins among databases)
LEGACY_RANK_BASE = 1000  # legacy trees always lose to any database
PICO_PER_TOKEN = 1e6  # USD per 1M tokens -> picodollars per token
INDEX_PAGE_SIZE = 16384
LARGE_STORE_BYTES = 16 << 20  # a first read of a database this big hides loading genai-prices
LARGE_TREE_SESSIONS = 300  # as does a first read of a legacy tree with this many sessions


def index_path(sources: locate.Sources, name: str = "") -> Path:
    """`name` gives a consumer its own index (the sidecar: another process refreshing a shared one
    would consume the changes the sidecar must see)."""
    digest = sha256(sources.key.encode()).hexdigest()[:16]
    return locate.cache_home() / "ocsight" / f"index-{digest}{'-' + name if name else ''}.sqlite"


def _connect(path: Path | None, lean: bool = False, wal: bool = True) -> sqlite3.Connection:
    target = ":memory:" if path is None else f"file:{path}"
    con = sqlite3.connect(target, uri=True, isolation_level=None, timeout=30, check_same_thread=False)
    # A refresh's staging tables are held in memory: a first read of a large store is faster so.
    # Long-running consumers (`lean`) keep their memory flat instead: the tables spill to temporary
    # files beyond the page cache (in the system's temp directory, never in OpenCode's).
    con.execute(f"PRAGMA temp_store = {'FILE' if lean else 'MEMORY'}")
    con.execute("PRAGMA cache_size = -8000")  # 8 MB: larger caches bought no speed, only memory
    if path is not None:
        # A new file's pages (no effect on an existing one): a first build writes its 5 MB in a
        # quarter of the system calls, and commits in 9 ms rather than 14.
        con.execute(f"PRAGMA page_size = {INDEX_PAGE_SIZE}")
        con.execute(f"PRAGMA journal_mode = {'WAL' if wal else 'DELETE'}")
        con.execute("PRAGMA synchronous = NORMAL")
    _register_functions(con)
    return con


def _register_functions(con: sqlite3.Connection) -> None:
    con.create_function("ocsight_era", 1, normalise.era_for_version, deterministic=True)


def _prepare_half(con: sqlite3.Connection) -> None:
    """A second connection's database, shaped like the index for `store.extract` (`store.half_ahead`)."""
    _register_functions(con)
    for ddl in SCHEMA:
        con.execute(ddl)


class _Retry(Exception):
    """OpenCode wrote to a database read without locks: the read is thrown away and done again."""


class Index:
    """The index for one set of sources; `refresh()` brings it up to date with them."""

    def __init__(self, sources: locate.Sources, path: Path | None, lean: bool = False) -> None:
        self.sources = sources
        self.path = path
        self.lean = lean
        self.wal_pending = False  # a new index file is built with a rollback journal (`_open`)
        self.con = self._open()
        self.notes: list[str] = []
        self.touched: set[str] | None = None

    @classmethod
    def open(cls, sources: locate.Sources, use_cache: bool = True, name: str = "", lean: bool = False) -> Index:
        if not use_cache:
            return cls(sources, None, lean)
        path = index_path(sources, name)
        for d in sources.data_dirs:
            if path.resolve().is_relative_to(d.resolve()):
                raise OcsightError(f"refusing to keep ocsight's index inside OpenCode's data directory ({d})")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OcsightError(f"cannot create ocsight's cache directory {path.parent}: {e.strerror}") from None
        return cls(sources, path, lean)

    def _open(self) -> sqlite3.Connection:
        if self.path is not None and self.path.exists():
            try:
                con = _connect(self.path, self.lean)
                if self._schema_ok(con):
                    return con
                con.close()
            except sqlite3.DatabaseError:
                pass  # an unreadable cache is simply rebuilt
        if self.path is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        # A new index is built with a rollback journal, which for a new file journals next to
        # nothing: the first build's pages are written once, not into the WAL and then again
        # into the file. It turns to WAL after its first refresh (`refresh`).
        con = _connect(self.path, self.lean, wal=False)
        self.wal_pending = self.path is not None
        with _transaction(con):
            for ddl in SCHEMA:
                con.execute(ddl)
            con.executemany("INSERT INTO meta VALUES (?, ?)", [("schema", SCHEMA_VERSION), ("ocsight", __version__)])
        return con

    @staticmethod
    def _schema_ok(con: sqlite3.Connection) -> bool:
        try:
            meta = dict(con.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError:
            return False
        return meta.get("schema") == SCHEMA_VERSION and meta.get("ocsight") == __version__

    # -- refresh -----------------------------------------------------------------------------------

    def refresh(self, catalogue, progress: Callable[[str], None] | None = None) -> None:
        """Brings the cubes up to date with every source; an unchanged store is not written at all."""
        say = progress or (lambda _msg: None)
        # A refresh allocates many short-lived objects without cycles (file listings, message IDs):
        # the cyclic collector's passes over them were a few percent of a first read's CPU.
        collecting = gc.isenabled()
        gc.disable()
        try:
            # a long-running consumer (`lean`) refreshes on one thread: nothing to pad for
            with nullcontext() if self.lean else malloc_tuning.padded_heaps():
                self._retrying(lambda attempt: self._refresh(catalogue, say, attempt))
            if self.wal_pending:
                # readers then no longer wait for a writer (the sidecar, `ocsight mcp`)
                self.con.execute("PRAGMA journal_mode = WAL")
                self.wal_pending = False
        finally:
            if collecting:
                gc.enable()

    def _retrying(self, read: Callable[[int], None]) -> None:
        """Runs a read of the sources, again if OpenCode wrote under an unlocked read (or while a
        second connection read half of it: the next attempt reads on one); detaches after."""
        for attempt in range(3):
            try:
                read(attempt)
                return
            except SplitFailed:
                continue
            except _Retry:
                time.sleep(0.05)
            finally:
                if not self.con.in_transaction:
                    detach_all(self.con)
        raise OcsightError("OpenCode's database kept changing while being read; try again")

    def _refresh(self, catalogue, say: Callable[[str], None], attempt: int) -> None:
        con = self.con
        with _transaction(con, immediate=True):
            full = con.execute("SELECT 1 FROM meta WHERE key = 'cube'").fetchone() is None
            if full and self._large_databases():
                # on a core the checks below leave idle
                catalogue.prefetch_genai()
            con.execute("CREATE TEMP TABLE IF NOT EXISTS touched (session_id TEXT PRIMARY KEY)")
            con.execute("DELETE FROM temp.touched")
            _reprice(con, catalogue)
            # A first build reads everything, known before any source is checked: its second half
            # starts before the sources are checked, beside those checks.
            sources, full_read = self._detect(say, attempt, split_early=full and attempt == 0)
            full = full or full_read
            # What this refresh found changed: None when everything was read.
            self.touched = None if full else {r[0] for r in con.execute("SELECT session_id FROM temp.touched")}
            if full or self.touched:
                scope = None if full else "temp.touched"
                # a first read of a large store has time to load a price catalogue while it reads
                half = self._stage(sources, scope, say, split=attempt == 0,
                                   prefetch=catalogue.prefetch_genai if full and self._large(sources) else None)
                try:
                    self._summarise(catalogue, scope, half, say)
                finally:
                    if half is not None:
                        half.close()
                con.execute("INSERT OR REPLACE INTO meta VALUES ('cube', ?)", (__version__,))
            self._check_unchanged(sources)

    def _summarise(self, catalogue, scope: str | None, half: HalfAhead | None, say: Callable[[str], None]) -> None:
        """Prices and sums what was staged (normalised as it was staged), into the cubes; with the
        second half of a first read (`store.half_ahead`) summed meanwhile on another connection, and
        merged."""
        con = self.con
        say("summarising")
        # Priced first, from the staged messages: the second half, summing its tool calls meanwhile,
        # sums usage as soon as it can; models only genai-prices may know, last (below).
        late = _price_new_models(con, catalogue, half.pairs if half is not None else (), genai_late=True)
        if half is not None:
            half.give_prices(con, last=not late)
        extract.finish_staged_messages(con)
        extract.clear_cubes(con, scope)
        # This connection's parts without their message here, checked against the second half only
        # once this half is summed: waiting for the second half's tool calls first left this
        # connection idle for 20-30 ms.
        ours = half_ahead.orphans(con) if half is not None else None
        extract.sum_tool_calls(con, orphans=ours is None or bool(ours[1]))
        extract.sum_usage(con)
        if half is not None:
            half.check_parts(con, ours)
        if late:
            # Models only genai-prices may know are priced last: its catalogue, loading since
            # launch (`ocsight.launch`), is waited for only when everything else is summed. Only
            # those it prices are summed again: the others' rows, summed unpriced, stand.
            resolved = catalogue.resolve_all(late)
            _store_prices(con, resolved)
            again = [pair for pair in late if resolved.get(pair) is not None]
            if half is not None:
                half.give_prices(con, again=again)
            if again:
                extract.sum_usage(con, again)
        if half is not None:
            half.merge_into(con)

    def _detect(self, say: Callable[[str], None], attempt: int, wanted: str | None = None,
                split_early: bool = False) -> tuple[list, bool]:
        """Every source's changes since its last read; returns the sources and whether all must be read.

        `wanted`: a table of the only sessions asked for (records), whose metadata alone is merged.
        `split_early`: for a whole read, the first database's second half starts reading at once (`_split`)."""
        con, full = self.con, False
        dbs = [Database(con, p, rank, attempt, wanted)
               for rank, p in enumerate(self.sources.databases, DB_RANK_BASE)]
        # A first build reads everything: the first database's second half starts before any source is checked.
        half = self._split(dbs[0]) if split_early and dbs else None
        try:
            for db in dbs:
                say(f"checking {db.path}")
                state = self._state(db.source)
                new_state, mode, notes = db.detect(state)
                self.notes += notes
                full = full or mode == "full"
                if new_state != state:
                    self._set_state(db.source, new_state)
            trees = [LegacyTree(con, p, rank, say, wanted)
                     for rank, p in enumerate(self.sources.legacy_dirs, LEGACY_RANK_BASE)]
            for tree in trees:
                say(f"checking {tree.root}")
                full = tree.detect() == "full" or full
        except BaseException:
            if half is not None:
                half.close()
            raise
        return [*dbs, *trees], full

    def _stage(self, sources: list, scope: str | None, say: Callable[[str], None], detail: bool = False,
               prefetch: Callable[[], None] | None = None, split: bool = False,
               every_step: bool = False) -> HalfAhead | None:
        """Stages the sessions in table `scope` (all when None) from every source, databases first.

        `prefetch` starts loading something needed after the read. With `split`, a whole read whose
        first source is a database reads that database's second half of sessions on another core;
        returns that half (`store.half_ahead`), to be summed and merged. Not for long-running
        consumers, whose memory stays flat on one connection."""
        extract.create_staging(self.con, detail, every_step)
        half = None
        if scope is None:
            first = sources[0] if sources else None
            if split and isinstance(first, Database) and not detail:
                self._split(first)
                half = first.settle_half()
            for tree in (s for s in sources if isinstance(s, LegacyTree)):
                tree.list_ahead(after=half.reading if half is not None else None,
                                ids=half is not None and not half.report_ids)
        if prefetch is not None:
            prefetch()
        try:
            for n, source in enumerate(sources):
                say(f"reading {getattr(source, 'path', None) or source.root}")
                if half is not None and n > 0:
                    self._skip_half(sources[0], half, source)
                source.stage(scope, first=n == 0)
            if half is not None:
                unstaged = sources[0].finish_half()
                # A legacy tree read while the half was staging skipped every message the database
                # holds (`_skip_half`): a file of one the half could not stage means reading again
                # on one connection.
                trees = [s for s in sources if isinstance(s, LegacyTree)] if not half.report_ids else []
                if any(tree.lists(mid) for tree in trees for mid in unstaged):
                    raise SplitFailed
        except BaseException:
            if half is not None:
                half.close()
            raise
        return half

    def _skip_half(self, db: Database, half: HalfAhead, source: Database | LegacyTree) -> None:
        """Makes a later source skip the messages `db`'s second half stages. A legacy tree beside
        the only database skips every listed message the database holds, less those this connection
        could not stage, without waiting for the half; anything else waits for its staged IDs."""
        if isinstance(source, LegacyTree) and not half.report_ids:
            source.absent_from, source.read_anyway = db.absent, db.unstaged_here
            return
        db.finish_half()
        if isinstance(source, LegacyTree):
            source.staged_elsewhere = half.ids
        else:
            half.note_staged(self.con)

    def _split(self, db: Database) -> HalfAhead | None:
        """Starts reading the second half of `db`'s sessions on another connection, when worth it
        (not for long-running consumers, whose memory stays flat on one connection)."""
        if not self.lean and db.half is None:
            # beside the only database, a legacy tree asks it which listed messages it lacks (`Database.absent`)
            asked = bool(self.sources.legacy_dirs) and len(self.sources.databases) == 1
            db.stage_half_ahead(_prepare_half, report_ids=not asked)
        return db.half

    def _large_databases(self) -> bool:
        size = 0
        for path in self.sources.databases:
            try:
                size += path.stat().st_size
            except OSError:
                pass
        return size >= LARGE_STORE_BYTES

    def _large(self, sources: list) -> bool:
        """Whether a full read will take long enough to hide loading a price catalogue behind it."""
        trees = (s for s in sources if isinstance(s, LegacyTree))
        return self._large_databases() or any(t.session_dirs >= LARGE_TREE_SESSIONS for t in trees)

    @staticmethod
    def _check_unchanged(sources: list) -> None:
        if any(isinstance(s, Database) and s.changed_under_us() for s in sources):
            raise _Retry

    def stage_records(self, catalogue, sessions: list[str] | None = None, every_step: bool = True) -> None:
        """Stages full records (every field, every step unless not `every_step`) of some sessions, or
        all, into temporary tables.

        For consumers that need per-message detail (`ocsight.records`); the index file is not written.
        """
        con = self.con

        def read(attempt: int) -> None:
            with _transaction(con):
                con.execute("CREATE TEMP TABLE IF NOT EXISTS touched (session_id TEXT PRIMARY KEY)")
                con.execute("DROP TABLE IF EXISTS temp.wanted")
                con.execute("CREATE TEMP TABLE wanted (session_id TEXT PRIMARY KEY)")
                con.executemany("INSERT OR IGNORE INTO temp.wanted VALUES (?)", [(s,) for s in sessions or ()])
                _reprice(con, catalogue)
                sources, _full = self._detect(lambda _m: None, attempt,
                                              "temp.wanted" if sessions is not None else None)
                self._stage(sources, "temp.wanted" if sessions is not None else None, lambda _m: None, detail=True,
                            every_step=every_step)
                extract.finish_staged_messages(con)
                _price_new_models(con, catalogue)
                extract.create_priced_messages(con)
                self._check_unchanged(sources)

        self._retrying(read)

    def _state(self, source: str) -> dict:
        row = self.con.execute("SELECT state FROM source_state WHERE source = ?", (source,)).fetchone()
        return json.loads(row[0]) if row else {}

    def _set_state(self, source: str, state: dict) -> None:
        self.con.execute("INSERT OR REPLACE INTO source_state VALUES (?, ?)", (source, json.dumps(state)))

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _transaction:
    """BEGIN / COMMIT, or ROLLBACK on error; IMMEDIATE serialises concurrent ocsight runs."""

    def __init__(self, con: sqlite3.Connection, immediate: bool = False) -> None:
        self.con, self.immediate = con, immediate

    def __enter__(self) -> sqlite3.Connection:
        deadline = time.monotonic() + 30
        while True:
            try:
                self.con.execute("BEGIN IMMEDIATE" if self.immediate else "BEGIN")
                return self.con
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.con.execute("COMMIT")
        elif self.con.in_transaction:
            self.con.execute("ROLLBACK")


# -- prices ------------------------------------------------------------------------------------------

def _reprice(con: sqlite3.Connection, catalogue) -> None:
    """When a price source changed (by file stamp), re-resolves every known model; sessions of models
    whose prices changed are marked touched, so their estimates are redone."""
    fingerprint = catalogue.fingerprint()
    row = con.execute("SELECT value FROM meta WHERE key = 'prices'").fetchone()
    if row is not None and row[0] == fingerprint:
        return
    known = con.execute("SELECT provider, model FROM price_source").fetchall()
    before = _price_rows(con)
    con.execute("DELETE FROM price")
    con.execute("DELETE FROM price_source")
    _store_prices(con, catalogue.resolve_all(known))
    after = _price_rows(con)
    for pair in {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}:
        con.execute(
            "INSERT OR IGNORE INTO temp.touched SELECT DISTINCT session_id FROM usage_cube "
            "WHERE provider = ? AND model = ?",
            pair,
        )
    con.execute("INSERT OR REPLACE INTO meta VALUES ('prices', ?)", (fingerprint,))


def _price_new_models(con: sqlite3.Connection, catalogue, more: list[tuple[str, str]] | tuple = (),
                      genai_late: bool = False) -> list[tuple[str, str]]:
    """Prices the staged models the index has no prices for; `more`: pairs staged elsewhere.

    With `genai_late`, prices only those other sources know, and returns the pairs left for
    genai-prices, for the caller to price last (`Catalogue.resolve_all`)."""
    # the distinct pairs first: each is looked up once, not once a message
    new = con.execute(
        "SELECT d.provider, d.model FROM (SELECT DISTINCT coalesce(provider, '') AS provider, "
        "coalesce(model, '') AS model FROM temp.stage_message WHERE role = 'assistant') d "
        "WHERE NOT EXISTS (SELECT 1 FROM price_source ps WHERE ps.provider = d.provider AND ps.model = d.model)"
    ).fetchall()
    if more:
        known = set(con.execute("SELECT provider, model FROM price_source").fetchall())
        new = list(dict.fromkeys(new + [p for p in more if p not in known]))
    if not new:
        return []
    if not genai_late:
        _store_prices(con, catalogue.resolve_all(new))
        return []
    known, late = catalogue.resolve_known(new)
    _store_prices(con, known)
    return late


def _price_rows(con: sqlite3.Connection) -> dict[tuple[str, str], tuple]:
    rows: dict[tuple[str, str], list] = {}
    for provider, model, *rest in con.execute("SELECT * FROM price ORDER BY provider, model, kind, size"):
        rows.setdefault((provider, model), []).append(tuple(rest))
    for provider, model, source in con.execute("SELECT * FROM price_source"):
        rows.setdefault((provider, model), []).append(("source", source))
    return {k: tuple(v) for k, v in rows.items()}


def _store_prices(con: sqlite3.Connection, resolved: dict) -> None:
    con.executemany(
        "INSERT OR REPLACE INTO price_source VALUES (?, ?, ?)",
        [(p, m, price.source if price else None) for (p, m), price in resolved.items()],
    )
    con.executemany(
        "INSERT OR REPLACE INTO price VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (p, m, r.kind, r.size, r.input * PICO_PER_TOKEN, r.output * PICO_PER_TOKEN,
             r.cache_read * PICO_PER_TOKEN, r.cache_write * PICO_PER_TOKEN)
            for (p, m), price in resolved.items() if price for r in price.rates
        ],
    )
