"""Staging: one read of some sessions from every source, on a connection of its own.

A `Staging` attaches OpenCode's databases read-only and loads the legacy tree's files of the
sessions in its scope, then unpacks their JSON inside SQLite (in C) into staging tables,
normalising tokens as it goes (`normalise_sql`). Sources are staged in rank order (databases
first) and a message already staged from a lower rank is not staged again: a message stored twice
is counted once, and the database copy wins; a message's tool calls and steps come from the source
its message came from. It then prices and sums what it staged into rows of the index's two cubes
(`summarise`), or builds per-message records (`records`).

It shares nothing with other stagings: the index reads a large store as several of them, each
over a range of sessions, in processes of their own (`sources.workers`), each in a database file of
its own, whose cube rows the index then copies in (`CUBE_TABLES`): they simply concatenate.
Invariant this relies on: a message and its parts live in one session (OpenCode writes them so).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial

from ocsight import normalise
from ocsight.errors import OcsightError
from ocsight.model import BUCKET_MS, PICO, Message, Step, Tokens, ToolCall, mcp_server
from ocsight.sources import legacy, normalise_sql
from ocsight.sources.database import BUSY_RETRY_SECONDS, OpenCodeDatabase, explain
from ocsight.sources.locate import Tree

TOKENS_NOT_NUMBERS = "token counts are not numbers"
TOOL_SHAPE = "tool part of the wrong shape"
MALFORMED = "malformed JSON"


def _j(path: str) -> str:
    return f"json_extract(r.data, '{path}')"


# (staging column, SQL expression over the source row `r`)
# A message's and a step's stored cost and token counts, as `ocsight.normalise` reads them.
COST_AND_TOKENS = [
    ("cost", _j("$.cost")),
    ("t_input", _j("$.tokens.input")),
    ("t_output", _j("$.tokens.output")),
    ("t_reasoning", _j("$.tokens.reasoning")),
    ("t_cache_read", _j("$.tokens.cache.read")),
    ("t_cache_write", _j("$.tokens.cache.write")),
    ("t_total", _j("$.tokens.total")),
]
MESSAGE_FIELDS = [
    ("id", "r.id"),
    ("session_id", "r.session_id"),
    ("time_created", "r.time_created"),
    ("role", _j("$.role")),
    ("time_completed", _j("$.time.completed")),
    # assistant messages carry providerID/modelID; user messages a model{providerID, modelID}
    ("provider", f"coalesce({_j('$.providerID')}, {_j('$.model.providerID')})"),
    ("model", f"coalesce({_j('$.modelID')}, {_j('$.model.modelID')})"),
    ("agent", f"coalesce({_j('$.agent')}, {_j('$.mode')})"),
    ("error", _j("$.error.name")),
    *COST_AND_TOKENS,
]
STEP_FIELDS = [("id", "r.id"), ("message_id", "r.message_id"), *COST_AND_TOKENS]
TOOL_FIELDS = [
    ("id", "r.id"),
    ("message_id", "r.message_id"),
    ("session_id", "r.session_id"),
    ("tool", _j("$.tool")),
    ("status", _j("$.state.status")),
    # a tool part names its tool and its state's status as texts; any other is skipped, not counted
    ("shape_ok", "json_type(r.data, '$.tool') IS 'text' AND json_type(r.data, '$.state.status') IS 'text'"),
]
# Read only for records, not for the cubes.
MESSAGE_DETAIL_FIELDS = [("parent_id", _j("$.parentID")), ("finish", _j("$.finish")),
                         ("time_updated", "r.time_updated")]  # a legacy file's is unknown: NULL
STEP_DETAIL_FIELDS = [("session_id", "r.session_id"), ("reason", _j("$.reason"))]
TOOL_DETAIL_FIELDS = [
    ("call_id", _j("$.callID")),
    ("time_start", _j("$.state.time.start")),
    ("time_end", _j("$.state.time.end")),
    ("error", f"substr({_j('$.state.error')}, 1, 500)"),
    ("child_session_id", _j("$.state.metadata.sessionId")),
]

# Cheap byte tests first (memmem, in C), the exact JSON test second: most parts are never parsed.
STEP_FILTER = f"instr(r.data, '\"step-finish\"') AND {_j('$.type')} = 'step-finish'"
# OpenCode's database stores parts as compact JSON, tool parts opening with their `type`: a text
# opening with a `type` key is told by its first bytes, unparsed; only other texts are parsed. A
# prefix is tested as a range of byte-ordered text (P <= t < P with its last byte plus one).
TOOL_FILTER = (
    """(CASE WHEN r.data >= '{"type":"tool",' AND r.data < '{"type":"tool"-' THEN 1 """
    """WHEN r.data >= '{"type":"' AND r.data < '{"type":#' """
    """AND NOT (r.data >= '{"type":"tool"' AND r.data < '{"type":"tool#') THEN 0 """
    f"""ELSE {_j('$.type')} = 'tool' END)"""
)

USAGE_COLUMNS = ("session_id", "bucket", "role", "provider", "model", "agent", "error", "messages",
                 *normalise.TOKEN_KEYS, "stored_pico", "est_zero_pico", "est_all_pico", "unpriced_zero", "unpriced_all",
                 "fork_copy")
TOOL_COLUMNS = ("session_id", "bucket", "provider", "model", "agent", "tool", "calls", "errors", "fork_copy")

# What `summarise` leaves in the staging's database for the index: the two cubes' rows (in
# `USAGE_COLUMNS` and `TOOL_COLUMNS` order), the records that could not be used (source, ref,
# reason, session) and the legacy sessions still streaming (tree source, session).
CUBE_TABLES = ("cube_usage", "cube_tool", "skipped_record", "open_session")
Pair = tuple[str, str]  # (provider, model)
# A model's rate, in picodollars per token: (provider, model, kind, size, input, output, cache_read, cache_write)
PriceRow = tuple[str, str, int, int, float, float, float, float]


@dataclass(frozen=True)
class Database:
    """An OpenCode database as a staging opens it: `uri` says how (read-only, immutable or a
    snapshot copy; chosen once by `sources.database`), `path` names it in skipped records."""

    path: str
    uri: str
    rank: int

    @property
    def source(self) -> str:
        return f"db:{self.path}"

    @classmethod
    def of(cls, db: OpenCodeDatabase) -> Database:
        return cls(str(db.path), db.uri, db.rank)


@dataclass(frozen=True)
class Scope:
    """The sessions a staging reads: a range of session IDs [`low`, `high`) (either end open when
    None), or exactly `sessions` when given."""

    low: str | None = None
    high: str | None = None
    sessions: tuple[str, ...] | None = None

    def holds(self, session_id: str) -> bool:
        if self.sessions is not None:
            return session_id in self.sessions
        return (self.low is None or session_id >= self.low) and (self.high is None or session_id < self.high)


@dataclass(frozen=True)
class ReadJob:
    """Everything one staging needs, picklable for a worker process."""

    databases: tuple[Database, ...]
    trees: tuple[Tree, ...]
    scope: Scope
    detail: bool = False  # every field of every record, for records rather than cubes
    every_step: bool = False  # every session's step records, not only OpenCode 0.x sessions'
    lean: bool = False  # a long-running consumer: a small page cache, so its memory stays flat
    path: str = ":memory:"  # the staging's own database: a file the index reads the cubes' rows from


def _fields(detail: bool) -> dict[str, list[tuple[str, str]]]:
    if not detail:
        return {"message": MESSAGE_FIELDS, "step": STEP_FIELDS, "tool": TOOL_FIELDS}
    return {"message": MESSAGE_FIELDS + MESSAGE_DETAIL_FIELDS, "step": STEP_FIELDS + STEP_DETAIL_FIELDS,
            "tool": TOOL_FIELDS + TOOL_DETAIL_FIELDS}


def message_columns(detail: bool) -> list[str]:
    """A staged message's columns after `rank`: normalised as staged."""
    return ["id", "session_id", "time_created", "bucket", "time_completed", "role", "provider", "model", "agent",
            "error", "era", "steps", "step_tokens", *normalise.TOKEN_KEYS, "cost_pico", "problem",
            *(c for c, _ in MESSAGE_DETAIL_FIELDS if detail)]


def _new_in_scope(scope: Scope, known: set[str], session_id: str) -> bool:
    return scope.holds(session_id) and session_id not in known


# SQLite 3.42+ reads JSON5 (comments, trailing commas), which OpenCode's `JSON.parse` and older
# SQLite refuse: such a row must fail like any malformed one, whatever the library.
READS_JSON5 = sqlite3.sqlite_version_info >= (3, 42, 0)


def _strict(fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`fields` with the first JSON lookup guarded where SQLite reads JSON5 (`READS_JSON5`); a
    row's text is parsed once, so the guard costs a lookup."""
    if not READS_JSON5:
        return fields
    i = next(i for i, (_, e) in enumerate(fields) if "r.data" in e)
    column, expr = fields[i]
    guarded = f"CASE WHEN json_valid(r.data) THEN {expr} ELSE json('not RFC 8259 JSON') END"
    return [*fields[:i], (column, guarded), *fields[i + 1:]]


def _layers(source: str, keep: str, provider: str, empty_era: bool) -> tuple[str, dict[str, str]]:
    """CTE `c` (clean counts, `cost_pico`, era) over `source`, and the normalised counts and
    `valid` as expressions over it.

    `c` runs as a co-routine, once a row (a join keeps SQLite from flattening it into the later
    expressions, which would evaluate the counts again inside every expression built on them). The
    session's era is looked up only for rows whose `tokens.total` does not decide theirs, and,
    without `empty_era`, only for rows with token counts: a message without any normalises to zeros
    in any era, and the cubes keep no era.
    """
    clean = {k: normalise_sql.count(f"x.t_{k}") for k in normalise.TOKEN_KEYS}
    session_era = f"coalesce((SELECT se.era FROM session_era se WHERE se.id = x.session_id), '{normalise.DISJOINT}')"
    era = normalise_sql.era({k: f"x.t_{k}" for k in normalise.TOKEN_KEYS}, "x.t_total", session_era)
    if not empty_era:
        empty = " AND ".join(f"x.t_{k} IS NULL" for k in normalise.TOKEN_KEYS)
        era = f"(CASE WHEN {empty} THEN '{normalise.DISJOINT}' ELSE {era} END)"
    cte = (f"c AS (SELECT {keep}, {provider} AS provider, {normalise_sql.cost_pico('x.cost')} AS cost_pico, "
           + ", ".join(f"{clean[k]} AS c_{k}" for k in normalise.TOKEN_KEYS)
           + f", {era} AS era FROM {source} LIMIT -1)")
    return cte, normalise_sql.normalised({k: f"c.c_{k}" for k in normalise.TOKEN_KEYS}, "c.era", "c.provider")


def _normalised_messages(extracted: str, detail: bool) -> str:
    """The SELECT that normalises extracted messages (`extracted`, aliased `x`) as they are staged.

    Steps (OpenCode 0.x) are applied after staging (`Staging._apply_steps`). Messages with a
    `problem` are staged too, to be counted as skipped."""
    keep = (
        "x.id, x.rank, x.session_id, x.time_created, x.role, x.time_completed, "
        "coalesce(CAST(x.model AS TEXT), '') AS model, coalesce(CAST(x.agent AS TEXT), '(none)') AS agent, x.error"
        + "".join(f", x.{c}" for c, _ in MESSAGE_DETAIL_FIELDS if detail)
    )
    # names are texts whatever a record holds (a number where OpenCode writes a string), so every
    # later step orders and compares them as texts
    cte, n = _layers(extracted, keep, "coalesce(CAST(x.provider AS TEXT), '')", empty_era=detail)
    return f"""WITH {cte}
        SELECT c.rank, c.id, c.session_id, c.time_created, c.time_created / {BUCKET_MS}, c.time_completed, c.role,
            c.provider, c.model, c.agent, c.error, c.era, 0, NULL, {', '.join(n[k] for k in normalise.TOKEN_KEYS)},
            coalesce(c.cost_pico, 0),
            CASE
                WHEN c.role IS NULL OR c.role NOT IN ('user', 'assistant') THEN 'not a user or assistant message'
                WHEN c.cost_pico IS NULL THEN 'cost is not a number'
                WHEN NOT ({n['valid']}) THEN '{TOKENS_NOT_NUMBERS}'
            END
            {"".join(f", c.{c}" for c, _ in MESSAGE_DETAIL_FIELDS if detail)}
        FROM c JOIN (SELECT 1)"""


def _statements(scope: str, first: bool, valid_only: bool, fields: dict[str, list[tuple[str, str]]],
                detail: bool, steps_of: str) -> list[tuple[str, str]]:
    """The statements staging one source's messages, steps and tool calls from `src_message` and
    `src_part` rows `r` that `scope` selects; `valid_only` leaves rows with malformed JSON out."""
    jv = " AND json_valid(r.data)" if valid_only else ""
    # Later sources skip what an earlier (lower-rank) one already gave: messages by ID, parts by
    # their message.
    new_message = "" if first else " AND NOT EXISTS (SELECT 1 FROM stage_message s WHERE s.id = r.id)"
    own_part = "" if first else (
        " AND NOT EXISTS (SELECT 1 FROM stage_message s WHERE s.id = r.message_id AND s.rank < :rank)")
    # A tool call is one event whatever source holds it: a copy of one already staged is skipped by
    # its ID (a message a database could not give comes from a legacy tree, with its tool calls,
    # which the database gave too).
    new_tool = "" if first else " AND NOT EXISTS (SELECT 1 FROM stage_tool s WHERE s.id = r.id)"

    def rows(source: str, where: str) -> str:
        return f"{source} AS r WHERE ({scope}){jv}{where}"

    def strict(columns: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return columns if valid_only else _strict(columns)

    def insert(table: str, columns: list[tuple[str, str]], from_: str) -> str:
        return f"INSERT INTO {table} SELECT :rank, {', '.join(e for _, e in strict(columns))} FROM {from_}"

    message = strict(fields["message"])
    # a co-routine too: flattened, each JSON lookup would run again wherever normalising uses it
    extracted = (f"(SELECT :rank AS rank, {', '.join(f'{e} AS {c}' for c, e in message)} "
                 f"FROM {rows('src_message', new_message)} LIMIT -1) AS x")
    return [
        ("message", f"INSERT INTO stage_message (rank, {', '.join(message_columns(detail))}) "
                    f"{_normalised_messages(extracted, detail)}"),
        ("step", insert("stage_step", fields["step"],
                        rows("src_part", f"{own_part} AND {steps_of} AND {STEP_FILTER}"))),
        ("tool", insert("stage_tool", fields["tool"], rows("src_part", f"{own_part}{new_tool} AND {TOOL_FILTER}"))),
    ]


def _estimate(row: str) -> str:
    """Picodollars for one set of normalised counts, at the rate OpenCode would pick for its prompt
    size. Most prompts are below every tier: those use the base rate joined in as `b`."""
    prompt = f"{row}.input + {row}.cache_read + {row}.cache_write"
    charge = ("CAST(round({r}.input * {p}.input + ({r}.output + {r}.reasoning) * {p}.output "
              "+ {r}.cache_read * {p}.cache_read + {r}.cache_write * {p}.cache_write) AS INTEGER)")
    tiered = (f"(SELECT {charge.format(r=row, p='p')} FROM price p WHERE p.provider = m.provider "
              f"AND p.model = m.model AND p.size < {prompt} ORDER BY p.kind DESC, p.size DESC LIMIT 1)")
    return (f"(CASE WHEN b.provider IS NULL THEN NULL WHEN {prompt} <= b.first_tier "
            f"THEN {charge.format(r=row, p='b')} ELSE {tiered} END)")


class Staging:
    """One read of the sessions in a job's scope, from every source; see the module's docstring."""

    def __init__(self, job: ReadJob) -> None:
        self.job = job
        # `uri`: OpenCode's databases are attached by URI (read-only, immutable), which SQLite
        # honours only on a connection opened with URIs on (not every build turns them on by default)
        self.con = sqlite3.connect(job.path, isolation_level=None, timeout=BUSY_RETRY_SECONDS, uri=True)
        # A scratch database: nothing to recover after a crash, so no journal and no syncing. A
        # long-running consumer's spills to its file beyond a small page cache, so its memory stays
        # flat; a one-shot read's stays in its page cache until the index reads it.
        self.con.execute("PRAGMA journal_mode = OFF")
        self.con.execute("PRAGMA synchronous = OFF")
        self.con.execute("PRAGMA temp_store = FILE" if job.lean else "PRAGMA temp_store = MEMORY")
        self.con.execute(f"PRAGMA cache_size = {-2000 if job.lean else -262144}")
        self.fields = _fields(job.detail)
        self.skipped: list[tuple[str, str, str, str | None]] = []
        self.open_sessions: list[tuple[str, str]] = []
        self._create_tables()
        self._attached: list[tuple[Database, str]] = []
        for n, db in enumerate(job.databases):
            alias = f"oc{n}"
            try:
                self.con.execute(f"ATTACH DATABASE ? AS {alias}", (db.uri,))
            except sqlite3.DatabaseError as e:
                raise OcsightError(f"cannot read {db.path}: {explain(e)}") from None
            self._attached.append((db, alias))

    def close(self) -> None:
        self.con.close()

    # -- tables --------------------------------------------------------------------------------------

    def _create_tables(self) -> None:
        con, job = self.con, self.job
        for kind, columns in (("message", message_columns(job.detail)),
                              ("step", [c for c, _ in self.fields["step"]]),
                              ("tool", [c for c, _ in self.fields["tool"]])):
            # a message's `fork_copy` is set once every source is staged (`_mark_fork_copies`)
            extra = ", fork_copy INTEGER NOT NULL DEFAULT 0" if kind == "message" else ""
            con.execute(f"CREATE TABLE stage_{kind} (rank INTEGER, {', '.join(columns)}{extra})")
        # each session's version, as the index merges them (a database's first), and what it implies
        # (`created`: a database's session creation time, which a fork's copies predate)
        con.execute("CREATE TABLE session_era (id TEXT PRIMARY KEY, version TEXT, era TEXT, many_steps INTEGER, "
                    "created INTEGER) WITHOUT ROWID")
        con.execute("CREATE TABLE scope_session (id TEXT PRIMARY KEY) WITHOUT ROWID")
        if job.scope.sessions is not None:
            con.executemany("INSERT OR IGNORE INTO scope_session VALUES (?)", [(s,) for s in job.scope.sessions])
        con.execute("CREATE TABLE price (provider TEXT, model TEXT, kind INTEGER, size INTEGER, input REAL, "
                    "output REAL, cache_read REAL, cache_write REAL, PRIMARY KEY (provider, model, kind, size))")

    def _scope_sql(self) -> tuple[str, dict[str, str]]:
        """A condition on a source row `r` for the job's sessions, and its parameters."""
        scope = self.job.scope
        if scope.sessions is not None:
            return "r.session_id IN (SELECT id FROM scope_session)", {}
        terms, params = ["1"], {}
        if scope.low is not None:
            terms.append("r.session_id >= :low")
            params["low"] = scope.low
        if scope.high is not None:
            terms.append("r.session_id < :high")
            params["high"] = scope.high
        return " AND ".join(terms), params

    # -- staging -------------------------------------------------------------------------------------

    def _read_versions(self) -> None:
        """The version of every session in the scope, from the sources in rank order (as the index
        merges sessions), with the era and number of model calls a message of each may hold."""
        con = self.con
        scope, params = self._scope_sql()
        scope = scope.replace("r.session_id", "r.id")
        for _db, alias in self._attached:
            if self._has_tables(alias):
                columns = {r[1] for r in con.execute(f"PRAGMA {alias}.table_info(session)")}
                created = "r.time_created" if "time_created" in columns else "NULL"
                con.execute(f"INSERT OR IGNORE INTO session_era (id, version, created) SELECT r.id, r.version, "
                            f"{created} FROM {alias}.session r WHERE {scope}", params)
        for tree in self.job.trees:
            known = {r[0] for r in con.execute("SELECT id FROM session_era")}
            wanted = legacy.session_versions(tree.root, partial(_new_in_scope, self.job.scope, known))
            con.executemany("INSERT OR IGNORE INTO session_era (id, version) VALUES (?, ?)", wanted)
        versions = [v for (v,) in con.execute("SELECT DISTINCT version FROM session_era")]
        con.executemany("UPDATE session_era SET era = ?, many_steps = ? WHERE version IS ?",
                        [(normalise.era_for_version(v), self.job.every_step or normalise.may_have_many_steps(v), v)
                         for v in versions])

    def stage(self) -> None:
        """Stages the scope's records from every source, databases first, in one read transaction
        (so each database's sessions, messages and parts are one snapshot)."""
        con = self.con
        first = True
        con.execute("BEGIN")
        try:
            self._read_versions()
            for db, alias in self._attached:
                if self._has_tables(alias):
                    self._stage_database(db, alias, first)
                    first = False
            for tree in self.job.trees:
                if self._stage_tree(tree, first):
                    first = False
            self._mark_fork_copies()
        except sqlite3.DatabaseError as e:
            where = ", ".join(db.path for db in self.job.databases) or "OpenCode's data"
            raise OcsightError(f"cannot read {where}: {explain(e)}") from None
        finally:
            con.execute("COMMIT")
        self._apply_steps()

    def _mark_fork_copies(self) -> None:
        """Sets `fork_copy` on the staged messages that are copies a fork made (`normalise`'s rule).

        A copy keeps its original's creation time, so it predates the session holding it: only the
        messages of sessions holding such a message are looked at (the rest cost a sum). One whose
        ID was made well after its creation is looked for in every database, not only in the scope:
        its original lives in another session, perhaps read long ago. Those alike in `FORK_PRINT`
        and created in the same millisecond are compared; one scan of each database's messages, and
        only when the scope holds such a message. Legacy trees (OpenCode <= 1.1) are not looked into.
        A fork made later is read as a changed session, and looks its originals up then; a deleted
        source makes the index read everything again (`OpenCodeDatabase.changes`), so its copies count."""
        con = self.con
        lag = normalise_sql.id_lag("m.id", "m.time_created")
        con.execute(f"""CREATE TEMP TABLE fork_candidate AS SELECT * FROM (SELECT m.id, m.rank, m.session_id,
                m.time_created, {lag} AS lag FROM stage_message m WHERE m.session_id IN (
                    SELECT e.session_id FROM (SELECT session_id, min(time_created) AS first FROM stage_message
                        GROUP BY session_id) e JOIN session_era se ON se.id = e.session_id WHERE e.first < se.created)
                LIMIT -1) WHERE lag > {normalise.COPY_LAG_MS}""")
        if con.execute("SELECT 1 FROM temp.fork_candidate LIMIT 1").fetchone() is None:
            return
        paths = ", ".join(f"'{p}'" for p in normalise.FORK_PRINT)
        con.execute("CREATE TEMP TABLE fork_match (id TEXT, session_id TEXT, lag INTEGER)")
        for db, alias in self._attached:
            if not self._has_tables(alias):
                continue
            # messages created in the same millisecond as a candidate (one scan, no JSON read), then
            # of those the alike: few, but for copies
            con.execute("DROP TABLE IF EXISTS temp.fork_near")
            con.execute(f"""CREATE TEMP TABLE fork_near AS SELECT r.id, r.session_id, r.time_created
                FROM {alias}.message r WHERE r.time_created IN (SELECT time_created FROM temp.fork_candidate
                    WHERE rank = ?)""", (db.rank,))
            con.execute(
                f"""INSERT INTO temp.fork_match SELECT c.id, n.session_id,
                    {normalise_sql.id_lag("n.id", "n.time_created")}
                FROM temp.fork_candidate c JOIN temp.fork_near n ON n.time_created = c.time_created AND n.id != c.id
                JOIN {alias}.message cm ON cm.id = c.id JOIN {alias}.message nm ON nm.id = n.id
                WHERE c.rank = ? AND json_valid(cm.data) AND json_valid(nm.data)
                    AND json_extract(nm.data, {paths}) = json_extract(cm.data, {paths})""", (db.rank,))
        # the rule of `normalise.counted_among`: set aside when one alike was made sooner
        con.execute(
            """UPDATE stage_message SET fork_copy = 1 WHERE id IN (SELECT c.id FROM temp.fork_candidate c
                JOIN temp.fork_match f ON f.id = c.id
                WHERE coalesce(f.lag, 0) < c.lag OR (coalesce(f.lag, 0) = c.lag AND f.session_id < c.session_id))""")

    def _has_tables(self, alias: str) -> bool:
        names = {r[0] for r in self.con.execute(f"SELECT name FROM {alias}.sqlite_master WHERE type = 'table'")}
        return {"message", "part", "session"} <= names

    def _stage_database(self, db: Database, alias: str, first: bool) -> None:
        con = self.con
        con.execute(f"CREATE TEMP VIEW src_message AS SELECT id, session_id, time_created, time_updated, data "
                    f"FROM {alias}.message")
        con.execute(f"CREATE TEMP VIEW src_part AS SELECT id, message_id, session_id, data FROM {alias}.part")
        try:
            scope, params = self._scope_sql()
            # the cubes keep no completion time: a database's is read for records alone
            bad = self._stage_source(db.rank, first, scope, params, completion=self.job.detail)
        finally:
            con.execute("DROP VIEW temp.src_message")
            con.execute("DROP VIEW temp.src_part")
        for table, rid in bad:
            row = con.execute(f"SELECT session_id FROM {alias}.{table} WHERE id = ?", (rid,)).fetchone()
            self.skipped.append((db.source, f"{table}:{rid}", MALFORMED, row[0] if row else None))

    def _stage_source(self, rank: int, first: bool, scope: str, params: dict[str, str],
                      completion: bool = True) -> list[tuple[str, str]]:
        """Stages the `src_message` and `src_part` rows `scope` selects; returns (table, id) of rows
        with malformed JSON. Such a row aborts the fast statement, so only then is it run again with
        a validity guard, and only then are the bad rows looked up, to be counted as skipped."""
        con = self.con
        if not first:
            con.execute("CREATE INDEX IF NOT EXISTS stage_message_id ON stage_message (id)")
            con.execute("CREATE INDEX IF NOT EXISTS stage_tool_id ON stage_tool (id)")
        fields = dict(self.fields)
        if not completion:
            fields["message"] = [(c, "NULL" if c == "time_completed" else e) for c, e in fields["message"]]
        steps_of = "r.session_id IN (SELECT id FROM session_era WHERE many_steps)"
        args = {"rank": rank, **params}
        guarded = dict(_statements(scope, first, True, fields, self.job.detail, steps_of))
        bad: set[tuple[str, str]] = set()
        for kind, sql in _statements(scope, first, False, fields, self.job.detail, steps_of):
            try:
                con.execute(sql, args)
            except sqlite3.OperationalError as e:
                if MALFORMED not in str(e):
                    raise
                table = "message" if kind == "message" else "part"
                # only this statement's rows: earlier ones of the same rank stand
                con.execute(f"DELETE FROM stage_{kind} WHERE rank = :rank AND id IN "
                            f"(SELECT r.id FROM src_{table} AS r WHERE ({scope}))", args)
                con.execute(guarded[kind], args)
                bad.update((table, rid) for (rid,) in con.execute(
                    f"SELECT r.id FROM src_{table} AS r WHERE ({scope}) AND NOT json_valid(r.data)", args))
        return sorted(bad)

    def _stage_tree(self, tree: Tree, first: bool) -> bool:
        """Stages the tree's files of the scope's sessions, but for messages already staged (a
        database's copy wins: its file is never read). Returns whether it read any file."""
        con = self.con
        listing = legacy.list_messages(tree.root, self.job.scope.sessions, self.job.scope.holds)
        staged = self._staged_ids(legacy.FILE_SUFFIX)
        todo = {sid: left for sid, names in listing.items() if (left := [n for n in names if n not in staged])}
        con.execute("CREATE TABLE IF NOT EXISTS lg_file (kind TEXT, id TEXT, parent TEXT, path TEXT, data TEXT)")
        con.execute("CREATE TEMP VIEW src_message AS SELECT id, parent AS session_id, "
                    "json_extract(data, '$.time.created') AS time_created, NULL AS time_updated, data FROM lg_file "
                    "WHERE kind = 'message'")
        con.execute("CREATE TEMP VIEW src_part AS SELECT id, parent AS message_id, "
                    "json_extract(data, '$.sessionID') AS session_id, data FROM lg_file WHERE kind = 'part'")
        read_any = False
        files = legacy.SessionFiles(tree.root, todo)
        try:
            for batch in files:
                read_any = True
                self.skipped += [(tree.source, path, why, sid) for path, why, sid in batch.problems]
                con.execute("DELETE FROM lg_file")
                con.executemany("INSERT INTO lg_file VALUES (?, ?, ?, ?, ?)", batch.rows)
                # every file loaded is of the scope's sessions: the listing chose them
                bad = self._stage_source(tree.rank, first, "1", {})
                first = False
                if bad:
                    where = {(kind, rid): (path, parent) for kind, rid, parent, path, _text in batch.rows}
                    for kind, rid in bad:
                        path, parent = where.get((kind, rid), (rid, ""))
                        sid = parent if kind == "message" else batch.session_of.get(parent)
                        self.skipped.append((tree.source, path, legacy.HALF_WRITTEN, sid))
        finally:
            con.execute("DROP VIEW temp.src_message")
            con.execute("DROP VIEW temp.src_part")
            con.execute("DELETE FROM lg_file")
        self.skipped += [(tree.source, path, legacy.FOREIGN, sid) for path, sid in files.foreign]
        if read_any:
            self.open_sessions += [(tree.source, sid) for (sid,) in con.execute(
                "SELECT DISTINCT session_id FROM stage_message WHERE rank = ? AND role = 'assistant' "
                "AND time_completed IS NULL AND error IS NULL", (tree.rank,))]
        return read_any

    def _staged_ids(self, suffix: str) -> set[str]:
        """The IDs of the staged messages, each with `suffix` (a legacy tree's file names): fetched as
        one string rather than a row each (message IDs hold no newline)."""
        ids = self.con.execute("SELECT group_concat(id || ?, char(10)) FROM stage_message", (suffix,)).fetchone()[0]
        return set(ids.split("\n")) if ids else set()

    def _apply_steps(self) -> None:
        """Gives staged messages with step records (OpenCode 0.x) the sum of their steps' tokens, and
        indexes the staged messages by ID, for their parts to find them.

        0.x overwrote `message.tokens` with the last step's while adding up `cost`; a message whose
        steps are all valid takes their counts and era (and is then valid whatever its own counts).
        """
        con = self.con
        source = (
            "(SELECT s.id, s.rank, s.message_id, s.cost, "
            + ", ".join(f"s.t_{k}" for k in (*normalise.TOKEN_KEYS, "total"))
            + ", m.session_id, m.provider FROM stage_step s "
            "JOIN stage_message m ON m.id = s.message_id AND m.rank = s.rank) AS x"
        )
        cte, n = _layers(source, "x.id, x.rank, x.message_id", "x.provider", True)
        con.execute(
            f"""CREATE TABLE norm_step AS WITH {cte}
            SELECT c.id, c.rank, c.message_id, ({n['valid']}) AND c.cost_pico IS NOT NULL AS valid, c.era,
                {', '.join(f"{n[k]} AS {k}" for k in normalise.TOKEN_KEYS)}, coalesce(c.cost_pico, 0) AS cost_pico
            FROM c JOIN (SELECT 1)"""
        )
        if con.execute("SELECT 1 FROM norm_step LIMIT 1").fetchone() is not None:
            tokens = ", ".join(f"{k} = CASE WHEN st.valid THEN st.{k} ELSE m.{k} END" for k in normalise.TOKEN_KEYS)
            con.execute(
                f"""UPDATE stage_message AS m SET steps = st.steps, step_tokens = st.parts,
                    era = CASE WHEN st.valid THEN st.era ELSE m.era END, {tokens},
                    problem = CASE WHEN st.valid AND m.problem = '{TOKENS_NOT_NUMBERS}' THEN NULL ELSE m.problem END
                FROM (SELECT message_id, count(*) AS steps, min(valid) AS valid, max(era) AS era,
                        sum(input) AS input, sum(output) AS output, sum(reasoning) AS reasoning,
                        sum(cache_read) AS cache_read, sum(cache_write) AS cache_write,
                        json_group_array(json_array(input, output, reasoning, cache_read, cache_write)) AS parts
                    FROM norm_step GROUP BY message_id) AS st
                WHERE st.message_id = m.id"""
            )
        con.execute("CREATE INDEX IF NOT EXISTS stage_message_id ON stage_message (id)")

    # -- prices and sums ----------------------------------------------------------------------------

    def model_pairs(self) -> list[Pair]:
        """The (provider, model) pairs of the staged assistant messages: what needs a price."""
        return [(p, m) for p, m in self.con.execute(
            "SELECT DISTINCT coalesce(provider, ''), coalesce(model, '') FROM stage_message WHERE role = 'assistant'")]

    def _price(self, prices: Sequence[PriceRow]) -> None:
        """Prices the staged messages: `priced_message`, a view with each valid message's estimate.

        Estimates are made per model call: a 0.x message's steps are priced one by one, since the
        long-context price depends on each call's prompt."""
        con = self.con
        con.execute("DELETE FROM price")
        con.executemany("INSERT OR REPLACE INTO price VALUES (?, ?, ?, ?, ?, ?, ?, ?)", prices)
        con.execute("DROP VIEW IF EXISTS priced_message")
        con.execute("DROP TABLE IF EXISTS base_price")
        # One row per priced model: its base rates and the prompt size above which another rate may apply.
        con.execute(
            """CREATE TABLE base_price AS SELECT p.provider, p.model, p.input, p.output, p.cache_read,
                p.cache_write, coalesce((SELECT min(t.size) FROM price t WHERE t.provider = p.provider
                                         AND t.model = p.model AND t.kind > -1), 9e18) AS first_tier
            FROM price p WHERE p.kind = -1"""
        )
        con.execute("CREATE UNIQUE INDEX base_price_model ON base_price (provider, model)")
        step_estimate = (
            f"(SELECT sum({_estimate('s')}) FROM (SELECT "
            "json_extract(j.value, '$[0]') AS input, json_extract(j.value, '$[1]') AS output, "
            "json_extract(j.value, '$[2]') AS reasoning, json_extract(j.value, '$[3]') AS cache_read, "
            "json_extract(j.value, '$[4]') AS cache_write FROM json_each(m.step_tokens) j) AS s)"
        )
        estimate = f"CASE WHEN m.steps > 1 THEN {step_estimate} ELSE {_estimate('m')} END"
        detail = "".join(f", m.{c}" for c, _ in MESSAGE_DETAIL_FIELDS if self.job.detail)
        con.execute(
            f"""CREATE TEMP VIEW priced_message AS SELECT m.id, m.rank, m.session_id, m.time_created, m.bucket,
                m.time_completed, m.role, m.provider, m.model, m.agent, m.error, m.era, m.steps,
                {', '.join(f"m.{k}" for k in normalise.TOKEN_KEYS)}, m.cost_pico, m.problem, m.fork_copy,
                CASE WHEN m.role = 'assistant' AND m.problem IS NULL THEN {estimate} END AS est_pico,
                CASE WHEN m.role = 'assistant' AND m.problem IS NULL THEN b.provider IS NOT NULL END AS priced
                {detail}
            FROM stage_message m LEFT JOIN base_price b ON b.provider = m.provider AND b.model = m.model"""
        )

    def summarise(self, prices: Sequence[PriceRow]) -> None:
        """Sums the staged sessions at these prices into `CUBE_TABLES`, with every record that could
        not be used (messages with a problem, tool calls without their message)."""
        self._price(prices)
        con = self.con
        con.execute("CREATE TABLE skipped_record (source TEXT, ref TEXT, reason TEXT, session_id TEXT)")
        con.executemany("INSERT INTO skipped_record VALUES (?, ?, ?, ?)", self.skipped)
        con.execute("INSERT INTO skipped_record SELECT 'index', 'message:' || id, problem, session_id "
                    "FROM stage_message WHERE problem IS NOT NULL")
        con.execute(f"INSERT INTO skipped_record SELECT 'index', 'tool_call:' || t.id, '{TOOL_SHAPE}', t.session_id "
                    "FROM stage_tool t WHERE NOT t.shape_ok")
        con.execute("INSERT INTO skipped_record SELECT 'index', 'tool_call:' || t.id, 'tool call without its message', "
                    "t.session_id FROM stage_tool t WHERE t.shape_ok "
                    "AND NOT EXISTS (SELECT 1 FROM stage_message m WHERE m.id = t.message_id)")
        con.execute("CREATE TABLE open_session (source TEXT, session_id TEXT)")
        con.executemany("INSERT INTO open_session VALUES (?, ?)", self.open_sessions)
        con.execute(
            """CREATE TABLE cube_tool AS SELECT m.session_id, m.bucket, m.provider, m.model, m.agent,
                coalesce(t.tool, '(unknown)') AS tool, count(*) AS calls, sum(t.status = 'error') AS errors,
                m.fork_copy
            FROM stage_tool t JOIN stage_message m ON m.id = t.message_id
            WHERE m.problem IS NULL AND t.shape_ok GROUP BY 1, 2, 3, 4, 5, 6, 9"""
        )
        # `priced` is 0 or 1 for assistant messages, NULL for the others
        unpriced = ("CASE WHEN priced = 0 AND input + output + reasoning + cache_read + cache_write > 0 "
                    "THEN 1 ELSE 0 END")
        con.execute(
            f"""CREATE TABLE cube_usage AS SELECT session_id, bucket, role, provider, model, agent, error,
                count(*) AS messages, sum(input) AS input, sum(output) AS output, sum(reasoning) AS reasoning,
                sum(cache_read) AS cache_read, sum(cache_write) AS cache_write, sum(cost_pico) AS stored_pico,
                sum(CASE WHEN cost_pico = 0 THEN est ELSE 0 END) AS est_zero_pico, sum(est) AS est_all_pico,
                sum(CASE WHEN cost_pico = 0 THEN unpriced ELSE 0 END) AS unpriced_zero, sum(unpriced) AS unpriced_all,
                fork_copy
            FROM (SELECT session_id, bucket, role, provider, model, agent, error, input, output, reasoning,
                    cache_read, cache_write, cost_pico, coalesce(est_pico, 0) AS est, {unpriced} AS unpriced, fork_copy
                FROM priced_message WHERE problem IS NULL LIMIT -1)  -- not flattened: one estimate a row
            GROUP BY 1, 2, 3, 4, 5, 6, 7, fork_copy"""
        )

    # -- records ------------------------------------------------------------------------------------

    def records(self, prices: Sequence[PriceRow]) -> tuple[list[Message], list[Step], list[ToolCall],
                                                             list[tuple[str, str, str]]]:
        """The staged records (a `detail` job's), priced: messages, steps, tool calls and skipped ones."""
        self._price(prices)
        con = self.con
        messages = [
            Message(id=r[0], session_id=r[1], role=r[2], time_created=r[3], time_completed=r[4], parent_id=r[5],
                    provider=r[6], model=r[7], agent=r[8], finish=r[9], error=r[10], era=r[11],
                    tokens=Tokens(*r[12:17]), cost_usd=r[17] / PICO,
                    estimated_usd=None if r[18] is None else r[18] / PICO, steps=r[19], time_updated=r[20],
                    fork_copy=bool(r[21]))
            for r in con.execute(
                """SELECT id, session_id, role, time_created, time_completed, parent_id, provider, model, agent,
                    finish, error, era, input, output, reasoning, cache_read, cache_write, cost_pico, est_pico, steps,
                    time_updated, fork_copy
                FROM priced_message WHERE problem IS NULL ORDER BY time_created, id""")
        ]
        steps = [
            Step(r[0], r[1], r[2], r[3], Tokens(*r[4:9]), r[9] / PICO)
            for r in con.execute(
                """SELECT n.id, n.message_id, x.session_id, x.reason, n.input, n.output, n.reasoning, n.cache_read,
                    n.cache_write, n.cost_pico
                FROM norm_step n JOIN stage_step x ON x.id = n.id AND x.rank = n.rank
                WHERE n.valid ORDER BY n.id""")
        ]
        tools = [
            ToolCall(r[0], r[1], r[2], r[3], r[4] or "(unknown)", r[5], r[6], r[7], r[8], mcp_server(r[4] or ""), r[9])
            for r in con.execute(
                """SELECT id, message_id, session_id, call_id, tool, status, time_start, time_end, error,
                    child_session_id FROM stage_tool WHERE shape_ok ORDER BY id""")
        ]
        skipped = [(s, ref, why) for s, ref, why, _sid in self.skipped]
        skipped += con.execute(f"SELECT 'index', 'tool_call:' || id, '{TOOL_SHAPE}' FROM stage_tool "
                               "WHERE NOT shape_ok ORDER BY id").fetchall()
        skipped += con.execute("SELECT 'index', 'message:' || id, problem FROM stage_message "
                               "WHERE problem IS NOT NULL ORDER BY id").fetchall()
        return messages, steps, tools, skipped


def stage(job: ReadJob) -> Staging:
    staging = Staging(job)
    try:
        staging.stage()
    except BaseException:
        staging.close()
        raise
    return staging


def worker_count(messages: int, minimum: int, most: int | None = None) -> int:
    """How many stagings a read of about `messages` messages is worth: one per core (or `most`),
    each with at least `minimum` messages (a process costs a few hundredths of a second to start)."""
    if most is None:
        try:
            most = len(os.sched_getaffinity(0))  # the cores this process may use (Linux)
        except AttributeError:
            most = os.cpu_count() or 1
    return max(1, min(most, messages // max(1, minimum)))


def iter_ranges(bounds: Sequence[str]) -> Iterator[Scope]:
    """Scopes cutting every session ID into ranges at `bounds` (ascending)."""
    edges: list[str | None] = [None, *bounds, None]
    for low, high in zip(edges, edges[1:]):
        yield Scope(low, high)
