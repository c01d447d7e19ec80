"""ocsight's local index: OpenCode's records, de-duplicated and normalised, in one SQLite file.

It lives under `$XDG_CACHE_HOME/ocsight/`, never inside OpenCode's data directory, is refreshed
incrementally (database rows by rowid and `time_updated`, legacy files by directory mtime), and is
safe to delete at any time: it is rebuilt from the sources on the next run.

Data flows one way: sources -> staged raw facts -> normalised rows (`store.extract`) -> queries
(`query`). Every consumer reads the normalised rows, so a total is computed one way only.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from ocsight import __version__, normalise
from ocsight.errors import OcsightError
from ocsight.store import legacy, locate
from ocsight.store import sqlite as dbsource

SCHEMA_VERSION = "4"

# Ordered DDL: the index is a cache, so a version change rebuilds it rather than migrating it.
SCHEMA = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID",
    "CREATE TABLE source_state (source TEXT PRIMARY KEY, state TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE project (id TEXT PRIMARY KEY, rank INTEGER NOT NULL, worktree TEXT, name TEXT)",
    """CREATE TABLE session (id TEXT PRIMARY KEY, rank INTEGER NOT NULL, project_id TEXT, parent_id TEXT,
        directory TEXT, title TEXT, version TEXT, time_created INTEGER, time_updated INTEGER, era TEXT)""",
    # Normalised messages: tokens in the disjoint form, costs in integer picodollars.
    """CREATE TABLE message (id TEXT PRIMARY KEY, rank INTEGER NOT NULL, session_id TEXT, time_created INTEGER,
        role TEXT, time_completed INTEGER, parent_id TEXT, provider TEXT, model TEXT, agent TEXT, finish TEXT,
        error TEXT, era TEXT, input INTEGER, output INTEGER, reasoning INTEGER, cache_read INTEGER,
        cache_write INTEGER, cost_pico INTEGER, problem TEXT, steps INTEGER NOT NULL DEFAULT 0,
        est_pico INTEGER, priced INTEGER)""",
    "CREATE INDEX message_session ON message (session_id)",
    # Step records, kept for sessions whose messages can hold several LLM calls (OpenCode 0.x).
    """CREATE TABLE step (id TEXT PRIMARY KEY, rank INTEGER NOT NULL, message_id TEXT, session_id TEXT,
        time_created INTEGER, reason TEXT, era TEXT, input INTEGER, output INTEGER, reasoning INTEGER,
        cache_read INTEGER, cache_write INTEGER, cost_pico INTEGER, valid INTEGER)""",
    "CREATE INDEX step_message ON step (message_id)",
    """CREATE TABLE tool_call (id TEXT PRIMARY KEY, rank INTEGER NOT NULL, message_id TEXT, session_id TEXT,
        time_created INTEGER, call_id TEXT, tool TEXT, status TEXT, time_start INTEGER, time_end INTEGER,
        error TEXT, child_session_id TEXT)""",
    "CREATE INDEX tool_message ON tool_call (message_id)",
    # Records a source could not give us: counted and shown, retried on every refresh.
    """CREATE TABLE skipped (source TEXT NOT NULL, ref TEXT NOT NULL, reason TEXT NOT NULL, stamp TEXT,
        PRIMARY KEY (source, ref)) WITHOUT ROWID""",
    """CREATE TABLE price (provider TEXT NOT NULL, model TEXT NOT NULL, kind INTEGER NOT NULL, size INTEGER NOT NULL,
        input REAL, output REAL, cache_read REAL, cache_write REAL, PRIMARY KEY (provider, model, kind, size))""",
    """CREATE TABLE price_source (provider TEXT NOT NULL, model TEXT NOT NULL, source TEXT,
        PRIMARY KEY (provider, model)) WITHOUT ROWID""",
    "CREATE TABLE legacy_dir (path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL) WITHOUT ROWID",
    # Cubes: valid messages and tool calls summed per session, 15-minute bucket and dimension. Every
    # real time zone's midnight falls on a 15-minute boundary, so day windows in any zone are exact.
    """CREATE TABLE usage_cube (session_id TEXT, bucket INTEGER, role TEXT, provider TEXT, model TEXT, agent TEXT,
        error TEXT, messages INTEGER, input INTEGER, output INTEGER, reasoning INTEGER, cache_read INTEGER,
        cache_write INTEGER, stored_pico INTEGER, est_zero_pico INTEGER, est_all_pico INTEGER,
        unpriced_zero INTEGER, unpriced_all INTEGER)""",
    "CREATE INDEX usage_cube_session ON usage_cube (session_id)",
    """CREATE TABLE tool_cube (session_id TEXT, bucket INTEGER, provider TEXT, model TEXT, agent TEXT, tool TEXT,
        calls INTEGER, errors INTEGER)""",
    "CREATE INDEX tool_cube_session ON tool_cube (session_id)",
]

BUCKET_MS = 900_000

DB_RANK_BASE = 0  # databases: 0, 1, ... (the first database wins among databases)
LEGACY_RANK_BASE = 1000  # legacy trees always lose to any database


def index_path(sources: locate.Sources) -> Path:
    digest = hashlib.sha256(sources.key.encode()).hexdigest()[:16]
    return locate.cache_home() / "ocsight" / f"index-{digest}.sqlite"


def _connect(path: Path | None) -> sqlite3.Connection:
    target = ":memory:" if path is None else f"file:{path}"
    con = sqlite3.connect(target, uri=True, isolation_level=None, timeout=30, check_same_thread=False)
    con.execute("PRAGMA temp_store = MEMORY")
    con.execute("PRAGMA cache_size = -32000")
    if path is not None:
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA synchronous = NORMAL")
    con.create_function("ocsight_era", 1, normalise.era_for_version, deterministic=True)
    con.create_function("ocsight_era_steps", 1, normalise.may_have_many_steps, deterministic=True)
    return con


class Index:
    """The index for one set of sources; `refresh()` brings it up to date with them."""

    def __init__(self, sources: locate.Sources, path: Path | None) -> None:
        self.sources = sources
        self.path = path
        self.con = self._open()
        self.notes: list[str] = []

    @classmethod
    def open(cls, sources: locate.Sources, use_cache: bool = True) -> Index:
        if not use_cache:
            return cls(sources, None)
        path = index_path(sources)
        for d in sources.data_dirs:
            if path.resolve().is_relative_to(d.resolve()):
                raise OcsightError(f"refusing to keep ocsight's index inside OpenCode's data directory ({d})")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OcsightError(f"cannot create ocsight's cache directory {path.parent}: {e.strerror}") from None
        return cls(sources, path)

    def _open(self) -> sqlite3.Connection:
        try:
            con = _connect(self.path)
            if self._schema_ok(con):
                return con
            con.close()
        except sqlite3.DatabaseError:
            pass  # an unreadable cache is simply rebuilt
        if self.path is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        con = _connect(self.path)
        with _transaction(con):
            for ddl in SCHEMA:
                con.execute(ddl)
            con.executemany(
                "INSERT INTO meta VALUES (?, ?)", [("schema", SCHEMA_VERSION), ("ocsight", __version__)]
            )
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
        """Reads what changed in every source, prices new models, and updates the cubes for what changed.

        An unchanged source costs a stat() or two; an unchanged index is not written at all.
        """
        say = progress or (lambda _msg: None)
        con = self.con
        try:
            self._refresh(catalogue, say)
        finally:
            if not con.in_transaction:
                dbsource.detach_all(con)

    def _refresh(self, catalogue, say: Callable[[str], None]) -> None:
        con = self.con
        with _transaction(con, immediate=True):
            con.execute("CREATE TEMP TABLE IF NOT EXISTS touched (session_id TEXT PRIMARY KEY)")
            con.execute("DELETE FROM temp.touched")
            full = con.execute("SELECT 1 FROM meta WHERE key = 'cube'").fetchone() is None
            for rank, db in enumerate(self.sources.databases, start=DB_RANK_BASE):
                say(f"reading {db}")
                state = self._state(f"db:{db}")
                new_state, notes, outcome = dbsource.refresh(con, db, rank, state)
                self.notes += notes
                full = full or outcome == "full"
                if new_state.get("deleted") and self.sources.legacy_dirs:
                    # Rows the database dropped may still be in the legacy tree: look at it afresh.
                    con.execute("DELETE FROM legacy_dir")
                if new_state != state:
                    self._set_state(f"db:{db}", new_state)
            for rank, storage in enumerate(self.sources.legacy_dirs, start=LEGACY_RANK_BASE):
                say(f"reading {storage}")
                legacy.refresh(con, storage, rank, progress=say)
            say("pricing")
            apply_prices(con, catalogue)
            if full:
                say("summarising")
                rebuild_cubes(con, None)
                con.execute("INSERT OR REPLACE INTO meta VALUES ('cube', ?)", (__version__,))
            elif con.execute("SELECT 1 FROM temp.touched LIMIT 1").fetchone():
                rebuild_cubes(con, "temp.touched")

    def _state(self, source: str) -> dict:
        row = self.con.execute("SELECT state FROM source_state WHERE source = ?", (source,)).fetchone()
        return json.loads(row[0]) if row else {}

    def _set_state(self, source: str, state: dict) -> None:
        self.con.execute("INSERT OR REPLACE INTO source_state VALUES (?, ?)", (source, json.dumps(state)))

    def close(self) -> None:
        self.con.close()


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


def cache_dir_size(path: Path | None) -> int:
    if path is None:
        return 0
    return sum(os.path.getsize(f"{path}{s}") for s in ("", "-wal") if os.path.exists(f"{path}{s}"))


# -- prices ------------------------------------------------------------------------------------------

PICO_PER_TOKEN = 1e6  # USD per 1M tokens -> picodollars per token


def _estimate_sql(row: str, provider: str, model: str) -> str:
    """Picodollars for one set of normalised counts, at the rate OpenCode would pick for its prompt size."""
    return (
        f"(SELECT CAST(round({row}.input * p.input + ({row}.output + {row}.reasoning) * p.output "
        f"+ {row}.cache_read * p.cache_read + {row}.cache_write * p.cache_write) AS INTEGER) "
        f"FROM price p WHERE p.provider = {provider} AND p.model = {model} "
        f"AND p.size < {row}.input + {row}.cache_read + {row}.cache_write "
        f"ORDER BY p.kind DESC, p.size DESC LIMIT 1)"
    )


def apply_prices(con: sqlite3.Connection, catalogue) -> None:
    """Resolves prices for the assistant messages' models and estimates every message's cost.

    Resolutions are kept in the index and only redone when a price source changed (by file stamp),
    so a warm run neither parses catalogues nor imports genai-prices. Sessions whose estimates
    change are marked touched, so their cube rows are rebuilt.
    """
    fingerprint = catalogue.fingerprint()
    row = con.execute("SELECT value FROM meta WHERE key = 'prices'").fetchone()
    if row is None or row[0] != fingerprint:
        known = con.execute("SELECT provider, model FROM price_source").fetchall()
        before = _price_rows(con)
        con.execute("DELETE FROM price")
        con.execute("DELETE FROM price_source")
        _store_prices(con, catalogue.resolve_all(known))
        after = _price_rows(con)
        for pair in {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}:
            con.execute(
                "INSERT OR IGNORE INTO temp.touched SELECT DISTINCT session_id FROM message "
                "WHERE coalesce(provider, '') = ? AND coalesce(model, '') = ?",
                pair,
            )
            con.execute(
                "UPDATE message SET est_pico = NULL, priced = NULL "
                "WHERE coalesce(provider, '') = ? AND coalesce(model, '') = ?",
                pair,
            )
        con.execute("INSERT OR REPLACE INTO meta VALUES ('prices', ?)", (fingerprint,))
    new = con.execute(
        "SELECT DISTINCT coalesce(m.provider, ''), coalesce(m.model, '') FROM message m "
        "WHERE m.role = 'assistant' AND m.priced IS NULL AND NOT EXISTS "
        "(SELECT 1 FROM price_source ps WHERE ps.provider = coalesce(m.provider, '') "
        "AND ps.model = coalesce(m.model, ''))"
    ).fetchall()
    if new:
        _store_prices(con, catalogue.resolve_all(new))
    estimate = (
        f"CASE WHEN m.steps > 1 THEN (SELECT sum({_estimate_sql('s', 'm.provider', 'm.model')}) "
        f"FROM step s WHERE s.message_id = m.id AND s.valid) "
        f"ELSE {_estimate_sql('m', 'm.provider', 'm.model')} END"
    )
    con.execute(
        f"""UPDATE message AS m SET
            priced = EXISTS (SELECT 1 FROM price_source ps WHERE ps.provider = coalesce(m.provider, '')
                             AND ps.model = coalesce(m.model, '') AND ps.source IS NOT NULL),
            est_pico = {estimate}
        WHERE m.role = 'assistant' AND m.problem IS NULL AND m.priced IS NULL"""
    )


def _price_rows(con: sqlite3.Connection) -> dict[tuple[str, str], tuple]:
    rows: dict[tuple[str, str], list] = {}
    for provider, model, *rest in con.execute("SELECT * FROM price ORDER BY provider, model, kind, size"):
        rows.setdefault((provider, model), []).append(tuple(rest))
    for provider, model, source in con.execute("SELECT * FROM price_source"):
        rows.setdefault((provider, model), []).append(("source", source))
    return {k: tuple(v) for k, v in rows.items()}


def _store_prices(con: sqlite3.Connection, resolved: dict) -> None:
    for (provider, model), price in resolved.items():
        con.execute(
            "INSERT OR REPLACE INTO price_source VALUES (?, ?, ?)",
            (provider, model, price.source if price else None),
        )
        for r in price.rates if price else ():
            con.execute(
                "INSERT OR REPLACE INTO price VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (provider, model, r.kind, r.size, r.input * PICO_PER_TOKEN, r.output * PICO_PER_TOKEN,
                 r.cache_read * PICO_PER_TOKEN, r.cache_write * PICO_PER_TOKEN),
            )


# -- cubes -------------------------------------------------------------------------------------------

def rebuild_cubes(con: sqlite3.Connection, sessions: str | None) -> None:
    """Re-sums the cube rows of the given sessions (a table of session IDs), or of all sessions."""
    scope = f"session_id IN (SELECT session_id FROM {sessions})" if sessions else "1"
    m_scope = f"m.session_id IN (SELECT session_id FROM {sessions})" if sessions else "1"
    con.execute(f"DELETE FROM usage_cube WHERE {scope}")
    con.execute(f"DELETE FROM tool_cube WHERE {scope}")
    tokens = "(input + output + reasoning + cache_read + cache_write) > 0"
    con.execute(
        f"""INSERT INTO usage_cube SELECT session_id, time_created / {BUCKET_MS}, role, coalesce(provider, ''),
            coalesce(model, ''), coalesce(agent, '(none)'), error, count(*), sum(input), sum(output), sum(reasoning),
            sum(cache_read), sum(cache_write), sum(cost_pico),
            sum(CASE WHEN cost_pico = 0 THEN coalesce(est_pico, 0) ELSE 0 END), sum(coalesce(est_pico, 0)),
            sum(role = 'assistant' AND cost_pico = 0 AND {tokens} AND priced = 0),
            sum(role = 'assistant' AND {tokens} AND priced = 0)
        FROM message WHERE problem IS NULL AND {scope} GROUP BY 1, 2, 3, 4, 5, 6, 7"""
    )
    con.execute(
        f"""INSERT INTO tool_cube SELECT m.session_id, m.time_created / {BUCKET_MS}, coalesce(m.provider, ''),
            coalesce(m.model, ''), coalesce(m.agent, '(none)'), coalesce(t.tool, '(unknown)'), count(*),
            sum(t.status = 'error')
        FROM tool_call t JOIN message m ON m.id = t.message_id
        WHERE m.problem IS NULL AND {m_scope} GROUP BY 1, 2, 3, 4, 5, 6"""
    )
