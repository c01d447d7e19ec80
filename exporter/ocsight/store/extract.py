"""The one extraction from OpenCode-shaped rows, shared by every storage era, and the cubes built from it.

Both readers present their rows as temporary views shaped like OpenCode 1.2+'s tables
(`src_project`, `src_session`, `src_message`, `src_part`, the last two with a JSON `data` column):
the database through views over its attached tables, the legacy tree through views over the files
it loaded. JSON is unpacked inside SQLite, in C, into temporary staging tables, messages normalised
on the way (`_layers`: the same statement, not a second pass over a first table); every later step
(pricing, summing) reads the staged rows.

Sources are staged in rank order (databases first) and a record already staged from a lower rank is
not staged again, so a message stored twice is counted once and the database copy wins; a message's
tool calls and steps come from the source its message came from.
"""

from __future__ import annotations

import json

from ocsight import normalise
from ocsight.sqlite_library import sqlite3

BUCKET_MS = 900_000  # every real time zone's midnight falls on a 15-minute boundary
TOKENS_NOT_NUMBERS = "token counts are not numbers"
JSONB = sqlite3.sqlite_version_info >= (3, 45)  # jsonb_extract
JSON5 = sqlite3.sqlite_version_info >= (3, 42)  # reads JSON5 where OpenCode's JSON.parse would not (`_strict`)

# (staging column, SQL expression over the source row `r`)
MESSAGE_FIELDS = [
    ("id", "r.id"),
    ("session_id", "r.session_id"),
    ("time_created", "r.time_created"),
    ("role", "r.data->>'$.role'"),
    ("time_completed", "r.data->>'$.time.completed'"),
    # assistant messages carry providerID/modelID; user messages a model{providerID, modelID}
    ("provider", "coalesce(r.data->>'$.providerID', r.data->>'$.model.providerID')"),
    ("model", "coalesce(r.data->>'$.modelID', r.data->>'$.model.modelID')"),
    ("agent", "coalesce(r.data->>'$.agent', r.data->>'$.mode')"),
    ("error", "r.data->>'$.error.name'"),
    ("cost", "r.data->>'$.cost'"),
    ("t_input", "r.data->>'$.tokens.input'"),
    ("t_output", "r.data->>'$.tokens.output'"),
    ("t_reasoning", "r.data->>'$.tokens.reasoning'"),
    ("t_cache_read", "r.data->>'$.tokens.cache.read'"),
    ("t_cache_write", "r.data->>'$.tokens.cache.write'"),
    ("t_total", "r.data->>'$.tokens.total'"),
]
STEP_FIELDS = [
    ("id", "r.id"),
    ("message_id", "r.message_id"),
    ("cost", "r.data->>'$.cost'"),
    ("t_input", "r.data->>'$.tokens.input'"),
    ("t_output", "r.data->>'$.tokens.output'"),
    ("t_reasoning", "r.data->>'$.tokens.reasoning'"),
    ("t_cache_read", "r.data->>'$.tokens.cache.read'"),
    ("t_cache_write", "r.data->>'$.tokens.cache.write'"),
    ("t_total", "r.data->>'$.tokens.total'"),
]

TOOL_FIELDS = [
    ("id", "r.id"),
    ("message_id", "r.message_id"),
    ("session_id", "r.session_id"),
    ("tool", "r.data->>'$.tool'"),
    ("status", "r.data->>'$.state.status'"),
]
# Read only for records (`ocsight.records`), not for the cubes.
MESSAGE_DETAIL_FIELDS = [
    ("parent_id", "r.data->>'$.parentID'"),
    ("finish", "r.data->>'$.finish'"),
]
STEP_DETAIL_FIELDS = [
    ("session_id", "r.session_id"),
    ("reason", "r.data->>'$.reason'"),
]
TOOL_DETAIL_FIELDS = [
    ("call_id", "r.data->>'$.callID'"),
    ("time_start", "r.data->>'$.state.time.start'"),
    ("time_end", "r.data->>'$.state.time.end'"),
    ("error", "substr(r.data->>'$.state.error', 1, 500)"),
    ("child_session_id", "r.data->>'$.state.metadata.sessionId'"),
]
SESSION_FIELDS = ["project_id", "parent_id", "directory", "title", "version", "time_created", "time_updated"]

# Cheap byte tests first (memmem, in C), the exact JSON test second: most parts are never parsed.
STEP_FILTER = "instr(r.data, '\"step-finish\"') AND r.data->>'$.type' = 'step-finish'"
# OpenCode's database stores parts as compact JSON, tool parts opening with their `type`: a text
# opening with a `type` key is told by its first bytes, unparsed; only other texts are parsed (a
# byte search before the parse spared none: SQLite evaluates both sides of an AND inside a CASE,
# and the search cost a fifth of staging the parts). A prefix is tested as a range of byte-ordered
# text (P <= t < P with its last byte plus one): no function call a row, a sixth faster than
# `substr` over 172,000 parts.
TOOL_FILTER = (
    """(CASE WHEN r.data >= '{"type":"tool",' AND r.data < '{"type":"tool"-' THEN 1 """
    """WHEN r.data >= '{"type":"' AND r.data < '{"type":#' """
    """AND NOT (r.data >= '{"type":"tool"' AND r.data < '{"type":"tool#') THEN 0 """
    """ELSE r.data->>'$.type' = 'tool' END)"""
)
# OpenCode >= 1.0 asks the model for exactly one step per assistant message (`stopWhen:
# stepCountIs(1)`), so a message's tokens are its step's; only 0.x sessions can hold several steps
# per message, and only theirs are read.
STEP_SESSIONS = "r.session_id IN (SELECT id FROM temp.step_sessions)"


def _fields(detail: bool) -> dict[str, list[tuple[str, str]]]:
    if not detail:
        return {"message": MESSAGE_FIELDS, "step": STEP_FIELDS, "tool": TOOL_FIELDS}
    return {
        "message": MESSAGE_FIELDS + MESSAGE_DETAIL_FIELDS,
        "step": STEP_FIELDS + STEP_DETAIL_FIELDS,
        "tool": TOOL_FIELDS + TOOL_DETAIL_FIELDS,
    }


def staged_message_columns(detail: bool) -> list[str]:
    """A staged message's columns after `rank`: normalised as staged (`_normalised_message_sql`)."""
    return ["id", "session_id", "time_created", "bucket", "time_completed", "role", "provider", "model", "agent",
            "error", "era", "steps", "step_tokens", *normalise.TOKEN_KEYS, "cost_pico", "problem",
            *(c for c, _ in MESSAGE_DETAIL_FIELDS if detail)]


def create_staging(con: sqlite3.Connection, detail: bool = False, every_step: bool = False) -> None:
    """Empty staging tables for one refresh (temporary: they never reach the index file).

    `detail` stages every field of a record, for `ocsight.records`; `every_step` every session's
    steps, not only those of OpenCode 0.x sessions, whose messages' tokens are their steps' sums
    (all the cubes need).
    """
    for kind, fields in _fields(detail).items():
        columns = staged_message_columns(detail) if kind == "message" else [c for c, _ in fields]
        con.execute(f"DROP TABLE IF EXISTS temp.stage_{kind}")
        con.execute(f"CREATE TEMP TABLE stage_{kind} (rank INTEGER, {', '.join(columns)})")
    # Messages another connection staged (the second half of a first read, `store.half_ahead`):
    # later sources skip them as they skip those staged here.
    con.execute("DROP TABLE IF EXISTS temp.staged_elsewhere")
    con.execute("CREATE TEMP TABLE staged_elsewhere (id TEXT PRIMARY KEY, rank INTEGER) WITHOUT ROWID")
    con.execute("DROP TABLE IF EXISTS temp.step_sessions")
    if every_step:
        con.execute("CREATE TEMP TABLE step_sessions AS SELECT id FROM session")
        return
    # each version asked once, not each session (a Python call a row, holding the GIL)
    versions = [v for (v,) in con.execute("SELECT DISTINCT version FROM session WHERE version IS NOT NULL")
                if normalise.may_have_many_steps(v)]
    con.execute("CREATE TEMP TABLE step_sessions AS SELECT id FROM session WHERE version IS NULL "
                "OR version IN (SELECT value FROM json_each(?))", (json.dumps(versions),))


def merge_projects_and_sessions(con: sqlite3.Connection, rank: int, sessions: str = "1", args: tuple = ()) -> None:
    """Upserts the source's projects and sessions (those `sessions`, a condition on `r`, selects):
    a lower rank replaces a higher one, never the reverse."""
    con.execute(
        "INSERT INTO project (id, rank, worktree, name) SELECT r.id, ?, r.worktree, r.name FROM temp.src_project r "
        "WHERE 1 ON CONFLICT(id) DO UPDATE SET rank = excluded.rank, worktree = excluded.worktree, name = excluded.name "
        "WHERE excluded.rank <= project.rank",
        (rank,),
    )
    cols = ", ".join(SESSION_FIELDS)
    con.execute(
        f"INSERT INTO session (id, rank, {cols}, era) SELECT r.id, ?, {', '.join('r.' + c for c in SESSION_FIELDS)}, "
        f"ocsight_era(r.version) FROM temp.src_session r WHERE {sessions} "
        f"ON CONFLICT(id) DO UPDATE SET rank = excluded.rank, era = excluded.era, "
        + ", ".join(f"{c} = excluded.{c}" for c in SESSION_FIELDS)
        + " WHERE excluded.rank <= session.rank",
        (rank, *args),
    )


def _statements(scope: str, first: bool, valid_only: bool, fields: dict, detail: bool) -> list[tuple[str, str]]:
    jv = " AND json_valid(r.data)" if valid_only else ""
    # Later sources skip what an earlier (lower-rank) one already gave: messages by ID, parts by
    # their message.
    new_message = "" if first else (
        " AND NOT EXISTS (SELECT 1 FROM temp.stage_message s WHERE s.id = r.id)"
        " AND NOT EXISTS (SELECT 1 FROM temp.staged_elsewhere s WHERE s.id = r.id)"
    )
    own_part = "" if first else (
        " AND NOT EXISTS (SELECT 1 FROM temp.stage_message s WHERE s.id = r.message_id AND s.rank < :rank)"
        " AND NOT EXISTS (SELECT 1 FROM temp.staged_elsewhere s WHERE s.id = r.message_id AND s.rank < :rank)"
    )
    # A tool call is one event whatever source holds it: a copy of one already staged is skipped by
    # its ID (a message a database could not give comes from a legacy tree, with its tool calls,
    # which the database gave too).
    new_tool = "" if first else " AND NOT EXISTS (SELECT 1 FROM temp.stage_tool s WHERE s.id = r.id)"

    def rows(source: str, where: str) -> str:
        return f"temp.{source} AS r WHERE ({scope}){jv}{where}"

    def strict(fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return _strict(fields) if not valid_only and JSON5 else fields

    def insert(table: str, fields: list[tuple[str, str]], from_: str) -> str:
        return f"INSERT INTO {table} SELECT :rank, {', '.join(e for _, e in strict(fields))} FROM {from_}"

    def insert_message() -> str:
        messages = rows("src_message", new_message)
        message = strict(fields["message"])
        if JSONB:
            # The token counts are looked up in the message's `tokens` object, taken out once as
            # JSONB, not each from the top of the message (a tenth of staging's instructions). The
            # subquery runs as a co-routine, once a row: a join keeps SQLite from flattening it,
            # which would take the object out again for every count.
            message = [(c, e.replace("r.data->>'$.tokens.", "r.tokens->>'$.")) for c, e in message]
            messages = (f"(SELECT r.*, jsonb_extract(r.data, '$.tokens') AS tokens FROM {messages} LIMIT -1) "
                        f"AS r JOIN (SELECT 1)")
        # a co-routine too: flattened, each JSON lookup would run again wherever normalising uses it
        extracted = (f"(SELECT :rank AS rank, {', '.join(f'{e} AS {c}' for c, e in message)} "
                     f"FROM {messages} LIMIT -1) AS x")
        return (f"INSERT INTO temp.stage_message (rank, {', '.join(staged_message_columns(detail))}) "
                f"{_normalised_message_sql(extracted, detail)}")

    return [
        ("message", insert_message()),
        ("step", insert("temp.stage_step", fields["step"],
                        rows("src_part", f"{own_part} AND {STEP_SESSIONS} AND {STEP_FILTER}"))),
        ("tool", insert("temp.stage_tool", fields["tool"],
                        rows("src_part", f"{own_part}{new_tool} AND {TOOL_FILTER}"))),
    ]


def _strict(fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`fields` with the first JSON lookup guarded: SQLite 3.42+ reads JSON5 (comments, trailing
    commas, unquoted keys), which OpenCode's `JSON.parse` and older SQLite refuse. Such a row must
    fail like any malformed one, whatever the library, so the guard raises "malformed JSON" for it;
    a row's text is parsed once, so the guard costs a lookup, not a parse."""
    i = next(i for i, (_, e) in enumerate(fields) if "r.data" in e)
    column, expr = fields[i]
    guarded = f"CASE WHEN json_valid(r.data) THEN {expr} ELSE json('not RFC 8259 JSON') END"
    return [*fields[:i], (column, guarded), *fields[i + 1:]]


def stage(con: sqlite3.Connection, rank: int, scope: str = "1", first: bool = True,
          params: dict[str, str] | None = None, completion: bool = True) -> list[tuple[str, str]]:
    """Stages the messages, tool calls and (0.x) steps `scope` selects from the `src_*` views.

    `scope` is a condition on the source row `r`, with named `params`. Returns (table, id) of rows
    with malformed JSON: such a row aborts the fast statement, so only then is it run again with a
    validity guard, and only then are the bad rows looked up, to be counted as skipped rather than
    guessed at. Without `completion`, a message's completion time is not read unless for records:
    the cubes keep none, and only a legacy tree's open sessions are told by it.
    """
    if not first:
        con.execute("CREATE INDEX IF NOT EXISTS temp.stage_message_id ON stage_message (id)")
        con.execute("CREATE INDEX IF NOT EXISTS temp.stage_tool_id ON stage_tool (id)")
    with_steps = con.execute("SELECT 1 FROM temp.step_sessions LIMIT 1").fetchone() is not None
    detail = "call_id" in {r[1] for r in con.execute("PRAGMA temp.table_info(stage_tool)")}
    fields = _fields(detail)
    if not completion and not detail:
        fields["message"] = [(c, "NULL" if c == "time_completed" else e) for c, e in fields["message"]]
    guarded = dict(_statements(scope, first, True, fields, detail))
    bad: set[tuple[str, str]] = set()
    args = {"rank": rank, **(params or {})}
    for kind, sql in _statements(scope, first, False, fields, detail):
        if kind == "step" and not with_steps:
            continue
        try:
            con.execute(sql, args)
        except sqlite3.OperationalError as e:
            if "malformed JSON" not in str(e):
                raise
            table = "message" if kind == "message" else "part"
            # only this statement's rows: earlier ones of the same rank (a legacy tree's earlier
            # batches, a database's other sessions) stand
            con.execute(f"DELETE FROM temp.stage_{kind} WHERE rank = :rank AND id IN "
                        f"(SELECT r.id FROM temp.src_{table} AS r WHERE ({scope}))", args)
            con.execute(guarded[kind], args)
            bad.update(
                (table, rid)
                for (rid,) in con.execute(
                    f"SELECT r.id FROM temp.src_{table} AS r WHERE ({scope}) AND NOT json_valid(r.data)", args
                )
            )
    return sorted(bad)


def staged_message_ids(con: sqlite3.Connection, suffix: str = "") -> list[str]:
    """The IDs of every staged message, each with `suffix` (a legacy tree's file names): fetched as
    one string rather than a row each, several times faster (message IDs hold no newline)."""
    ids = con.execute("SELECT group_concat(id || ?, char(10)) FROM temp.stage_message", (suffix,)).fetchone()[0]
    return ids.split("\n") if ids else []


# -- normalised messages and cubes ---------------------------------------------------------------------

def _layers(source: str, keep: str, provider: str, empty_era: bool = True) -> str:
    """CTEs `c` (clean counts, `cost_pico`, era) and `n` (+ normalised counts, `valid`) over `source`.

    `c` runs as a co-routine, once a row: flattened into the later expressions, the clean counts and
    the era would be evaluated again inside every count built on them (a join keeps SQLite from
    flattening it; materialised, its rows were written to a table and read back). The session's
    era is looked up only for rows whose `tokens.total` does not decide theirs, and, without
    `empty_era`, only for rows with token counts: a message without any (every user message)
    normalises to zeros in any era.
    """
    clean = {k: normalise.count_sql(f"x.t_{k}") for k in normalise.TOKEN_KEYS}
    session_era = f"coalesce((SELECT se.era FROM session se WHERE se.id = x.session_id), '{normalise.DISJOINT}')"
    # The stored counts, not the clean ones: they are equal wherever the era matters (valid rows)
    raw = {k: f"coalesce(x.t_{k}, 0)" for k in normalise.TOKEN_KEYS}
    era = normalise.era_sql(raw, "x.t_total", session_era)
    if not empty_era:
        empty = " AND ".join(f"x.t_{k} IS NULL" for k in normalise.TOKEN_KEYS)
        era = f"(CASE WHEN {empty} THEN '{normalise.DISJOINT}' ELSE {era} END)"
    n = normalise.normalised_sql("c", "c.provider")
    counts = ", ".join(f"{n[k]} AS {k}" for k in normalise.TOKEN_KEYS)
    return (
        f"c AS (SELECT {keep}, {provider} AS provider, {normalise.cost_pico_sql('x.cost')} AS cost_pico, "
        + ", ".join(f"{clean[k]} AS c_{k}" for k in normalise.TOKEN_KEYS)
        + f", {era} AS era FROM {source} LIMIT -1), "
        f"n AS (SELECT c.*, {n['valid']} AS valid, {counts} FROM c JOIN (SELECT 1))"
    )


def create_normalised_steps(con: sqlite3.Connection) -> bool:
    """`temp.norm_step_row`: staged steps (model calls) normalised like messages; `temp.norm_step`
    sums them per message. Returns whether there are any."""
    con.execute("DROP VIEW IF EXISTS temp.norm_step")
    con.execute("DROP TABLE IF EXISTS temp.norm_step_row")
    source = (
        "(SELECT s.id, s.rank, s.message_id, s.cost, " + ", ".join(f"s.t_{k}" for k in (*normalise.TOKEN_KEYS, "total"))
        + ", m.session_id, m.provider FROM temp.stage_step s "
        "JOIN temp.stage_message m ON m.id = s.message_id AND m.rank = s.rank) AS x"
    )
    keep = "x.id, x.rank, x.message_id"
    con.execute(
        f"""CREATE TEMP TABLE norm_step_row AS WITH {_layers(source, keep, 'x.provider')}
        SELECT id, rank, message_id, valid AND cost_pico IS NOT NULL AS valid, era, {', '.join(normalise.TOKEN_KEYS)},
            coalesce(cost_pico, 0) AS cost_pico
        FROM n"""
    )
    con.execute(
        """CREATE TEMP VIEW norm_step AS SELECT message_id, count(*) AS steps, min(valid) AS valid, max(era) AS era,
            sum(input) AS input, sum(output) AS output, sum(reasoning) AS reasoning, sum(cache_read) AS cache_read,
            sum(cache_write) AS cache_write,
            json_group_array(json_array(input, output, reasoning, cache_read, cache_write)) AS parts
        FROM temp.norm_step_row GROUP BY message_id"""
    )
    return con.execute("SELECT 1 FROM temp.norm_step_row LIMIT 1").fetchone() is not None


def _estimate_sql(row: str, provider: str, model: str) -> str:
    """Picodollars for one set of normalised counts, at the rate OpenCode would pick for its prompt size.

    Most prompts are below every tier: those use the base rate joined in as `b` (see `create_priced_messages`).
    """
    return (
        f"(CASE WHEN b.provider IS NULL THEN NULL "
        f"WHEN {row}.input + {row}.cache_read + {row}.cache_write <= b.first_tier "
        f"THEN CAST(round({row}.input * b.input + ({row}.output + {row}.reasoning) * b.output "
        f"+ {row}.cache_read * b.cache_read + {row}.cache_write * b.cache_write) AS INTEGER) "
        f"ELSE {_tiered_estimate_sql(row, provider, model)} END)"
    )


def _tiered_estimate_sql(row: str, provider: str, model: str) -> str:
    return (
        f"(SELECT CAST(round({row}.input * p.input + ({row}.output + {row}.reasoning) * p.output "
        f"+ {row}.cache_read * p.cache_read + {row}.cache_write * p.cache_write) AS INTEGER) "
        f"FROM price p WHERE p.provider = {provider} AND p.model = {model} "
        f"AND p.size < {row}.input + {row}.cache_read + {row}.cache_write "
        f"ORDER BY p.kind DESC, p.size DESC LIMIT 1)"
    )


def _normalised_message_sql(extracted: str, detail: bool) -> str:
    """The SELECT that normalises extracted messages (`extracted`, aliased `x`) as they are staged.

    In `detail` (records), messages without token counts get their session's era too, as records
    show it; the cubes, which keep no era, go without. Steps (OpenCode 0.x) are applied after
    staging (`finish_staged_messages`). Messages with a `problem` are staged too, to be counted as
    skipped.
    """
    keep = (
        "x.id, x.rank, x.session_id, x.time_created, x.role, x.time_completed, coalesce(x.model, '') AS model, "
        "coalesce(x.agent, '(none)') AS agent, x.error"
        + "".join(f", x.{c}" for c, _ in MESSAGE_DETAIL_FIELDS if detail)
    )
    return f"""WITH {_layers(extracted, keep, "coalesce(x.provider, '')", empty_era=detail)}
        SELECT n.rank, n.id, n.session_id, n.time_created, n.time_created / {BUCKET_MS}, n.time_completed, n.role,
            n.provider, n.model, n.agent, n.error, n.era, 0, NULL, {', '.join(f"n.{k}" for k in normalise.TOKEN_KEYS)},
            coalesce(n.cost_pico, 0),
            CASE
                WHEN n.role IS NULL OR n.role NOT IN ('user', 'assistant') THEN 'not a user or assistant message'
                WHEN n.cost_pico IS NULL THEN 'cost is not a number'
                WHEN NOT n.valid THEN '{TOKENS_NOT_NUMBERS}'
            END
            {"".join(f", n.{c}" for c, _ in MESSAGE_DETAIL_FIELDS if detail)}
        FROM n"""


def finish_staged_messages(con: sqlite3.Connection) -> None:
    """Gives staged messages with step records (OpenCode 0.x) the sum of their steps' tokens, and
    indexes the staged messages by ID, for their parts to find them.

    0.x overwrote `message.tokens` with the last step's while adding up `cost`; a message whose
    steps are all valid takes their counts and era (and is then valid whatever its own counts).
    """
    if create_normalised_steps(con):
        use = "st.valid"
        tokens = ", ".join(f"{k} = CASE WHEN {use} THEN st.{k} ELSE m.{k} END" for k in normalise.TOKEN_KEYS)
        con.execute(
            f"""UPDATE temp.stage_message AS m SET steps = st.steps, step_tokens = st.parts,
                era = CASE WHEN {use} THEN st.era ELSE m.era END, {tokens},
                problem = CASE WHEN {use} AND m.problem = '{TOKENS_NOT_NUMBERS}' THEN NULL ELSE m.problem END
            FROM temp.norm_step AS st WHERE st.message_id = m.id"""
        )
    con.execute("CREATE INDEX IF NOT EXISTS temp.stage_message_id ON stage_message (id)")


def create_priced_messages(con: sqlite3.Connection) -> None:
    """`temp.valid_message`: the normalised messages with their estimated cost at the index's prices.

    A view, so whatever reads it prices the messages it reads, once. Estimates are made per model
    call: a 0.x message's steps are priced one by one, since the long-context price depends on each
    call's prompt.
    """
    step_estimate = (
        "(SELECT sum(" + _estimate_sql("s", "m.provider", "m.model") + ") FROM (SELECT "
        "j.value->>0 AS input, j.value->>1 AS output, j.value->>2 AS reasoning, j.value->>3 AS cache_read, "
        "j.value->>4 AS cache_write FROM json_each(m.step_tokens) j) AS s)"
    )
    estimate = f"CASE WHEN m.steps > 1 THEN {step_estimate} ELSE {_estimate_sql('m', 'm.provider', 'm.model')} END"
    # One row per priced model: its base rates and the prompt size above which another rate may apply.
    con.execute("DROP VIEW IF EXISTS temp.valid_message")
    con.execute("DROP TABLE IF EXISTS temp.base_price")
    con.execute(
        """CREATE TEMP TABLE base_price AS SELECT p.provider, p.model, p.input, p.output, p.cache_read,
            p.cache_write, coalesce((SELECT min(t.size) FROM price t WHERE t.provider = p.provider
                                     AND t.model = p.model AND t.kind > -1), 9e18) AS first_tier
        FROM price p WHERE p.kind = -1"""
    )
    con.execute("CREATE UNIQUE INDEX temp.base_price_model ON base_price (provider, model)")
    con.execute(
        f"""CREATE TEMP VIEW valid_message AS SELECT m.id, m.rank, m.session_id, m.time_created, m.bucket,
            m.time_completed, m.role, m.provider, m.model, m.agent, m.error, m.era, m.steps,
            {', '.join(f"m.{k}" for k in normalise.TOKEN_KEYS)}, m.cost_pico, m.problem,
            CASE WHEN m.role = 'assistant' AND m.problem IS NULL THEN {estimate} END AS est_pico,
            CASE WHEN m.role = 'assistant' AND m.problem IS NULL THEN b.provider IS NOT NULL END AS priced
        FROM temp.stage_message m LEFT JOIN temp.base_price b ON b.provider = m.provider AND b.model = m.model"""
    )


def clear_cubes(con: sqlite3.Connection, scope: str | None) -> None:
    """Drops the cube rows and skipped messages of the staged sessions: all (`scope` None) or those in a table."""
    where = f"session_id IN (SELECT session_id FROM {scope})" if scope else "1"
    for table in ("usage_cube", "tool_cube"):
        con.execute(f"DELETE FROM {table} WHERE {where}")
    con.execute(f"DELETE FROM skipped WHERE source = 'index' AND ({where})")


def sum_tool_calls(con: sqlite3.Connection, orphans: bool = True) -> None:
    """Sums the staged tool calls of valid messages into `tool_cube`; invalid messages and tool calls
    without their message go into `skipped`. Needs no prices. `orphans`: False when the caller
    already knows every staged tool call has its message (`store.half_ahead` looks)."""
    con.execute(
        """INSERT INTO tool_cube SELECT m.session_id, m.bucket, m.provider, m.model, m.agent,
            coalesce(t.tool, '(unknown)'), count(*), sum(t.status = 'error')
        FROM temp.stage_tool t JOIN temp.stage_message m ON m.id = t.message_id
        WHERE m.problem IS NULL GROUP BY 1, 2, 3, 4, 5, 6"""
    )
    con.execute(
        """INSERT OR REPLACE INTO skipped SELECT 'index', 'message:' || id, problem, session_id
        FROM temp.stage_message WHERE problem IS NOT NULL"""
    )
    if not orphans:
        return
    con.execute(
        """INSERT OR REPLACE INTO skipped SELECT 'index', 'tool_call:' || t.id, 'tool call without its message',
            t.session_id FROM temp.stage_tool t
        WHERE NOT EXISTS (SELECT 1 FROM temp.stage_message m WHERE m.id = t.message_id)"""
    )


def sum_usage(con: sqlite3.Connection, late: list[tuple[str, str]] | None = None) -> None:
    """Sums the valid messages into `usage_cube`, with their estimates at the index's prices.

    `late`: (provider, model) pairs priced after the first sum (genai-prices answers last, `index`):
    their assistant messages are summed again and replace the rows the first sum made without
    their prices. Only this refresh can hold such rows: a pair once summed is kept in `price_source`.
    """
    create_priced_messages(con)
    where = "problem IS NULL"
    if late:
        con.execute("DROP TABLE IF EXISTS temp.late_pair")
        con.execute("CREATE TEMP TABLE late_pair (provider TEXT, model TEXT, PRIMARY KEY (provider, model))")
        con.executemany("INSERT OR IGNORE INTO temp.late_pair VALUES (?, ?)", late)
        of_late = ("{t}.role = 'assistant' AND EXISTS (SELECT 1 FROM temp.late_pair l "
                   "WHERE l.provider = {t}.provider AND l.model = {t}.model)")
        con.execute(f"DELETE FROM usage_cube WHERE {of_late.format(t='usage_cube')}")
        where += " AND " + of_late.format(t="v")
    # `priced` is 0 or 1 for assistant messages, NULL for the others
    unpriced = "CASE WHEN priced = 0 AND input + output + reasoning + cache_read + cache_write > 0 THEN 1 ELSE 0 END"
    con.execute(
        f"""INSERT INTO usage_cube SELECT session_id, bucket, role, provider, model, agent, error, count(*),
            sum(input), sum(output), sum(reasoning), sum(cache_read), sum(cache_write), sum(cost_pico),
            sum(CASE WHEN cost_pico = 0 THEN est ELSE 0 END), sum(est),
            sum(CASE WHEN cost_pico = 0 THEN unpriced ELSE 0 END), sum(unpriced)
        FROM (SELECT session_id, bucket, role, provider, model, agent, error, input, output, reasoning, cache_read,
                cache_write, cost_pico, coalesce(est_pico, 0) AS est, {unpriced} AS unpriced
            FROM temp.valid_message v WHERE {where} LIMIT -1)  -- not flattened: one estimate a row
        GROUP BY 1, 2, 3, 4, 5, 6, 7"""
    )
