"""The one extraction from OpenCode-shaped rows into the index, shared by every storage era.

Both readers present their rows as temporary views shaped like OpenCode 1.2+'s tables
(`src_project`, `src_session`, `src_message`, `src_part`, the last two with a JSON `data` column):
the database through views over its attached tables, the legacy tree through views over the files
it loaded. JSON is unpacked inside SQLite, in C, into temporary staging tables; `merge` then
normalises the staged rows into the index in one pass.

Every merge is an upsert that lets a source of lower rank (the database) replace a record a source
of higher rank (the legacy tree) wrote, never the other way round, so a message read twice is
counted once.
"""

from __future__ import annotations

import sqlite3

from ocsight import normalise

# (staging column, SQL expression over the source row `r`)
MESSAGE_FIELDS = [
    ("id", "r.id"),
    ("session_id", "r.session_id"),
    ("time_created", "r.time_created"),
    ("role", "r.data->>'$.role'"),
    ("time_completed", "r.data->>'$.time.completed'"),
    ("parent_id", "r.data->>'$.parentID'"),
    # assistant messages carry providerID/modelID; user messages a model{providerID, modelID}
    ("provider", "coalesce(r.data->>'$.providerID', r.data->>'$.model.providerID')"),
    ("model", "coalesce(r.data->>'$.modelID', r.data->>'$.model.modelID')"),
    ("agent", "coalesce(r.data->>'$.agent', r.data->>'$.mode')"),
    ("finish", "r.data->>'$.finish'"),
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
    ("session_id", "r.session_id"),
    ("time_created", "r.time_created"),
    ("reason", "r.data->>'$.reason'"),
    ("cost", "r.data->>'$.cost'"),
    ("t_input", "r.data->>'$.tokens.input'"),
    ("t_output", "r.data->>'$.tokens.output'"),
    ("t_reasoning", "r.data->>'$.tokens.reasoning'"),
    ("t_cache_read", "r.data->>'$.tokens.cache.read'"),
    ("t_cache_write", "r.data->>'$.tokens.cache.write'"),
    ("t_total", "r.data->>'$.tokens.total'"),
]
TOOL_FIELDS = [
    ("message_id", "r.message_id"),
    ("session_id", "r.session_id"),
    ("time_created", "r.time_created"),
    ("call_id", "r.data->>'$.callID'"),
    ("tool", "r.data->>'$.tool'"),
    ("status", "r.data->>'$.state.status'"),
    ("time_start", "r.data->>'$.state.time.start'"),
    ("time_end", "r.data->>'$.state.time.end'"),
    ("error", "substr(r.data->>'$.state.error', 1, 500)"),
    ("child_session_id", "r.data->>'$.state.metadata.sessionId'"),
]
SESSION_FIELDS = ["project_id", "parent_id", "directory", "title", "version", "time_created", "time_updated"]

# Cheap byte tests first (memmem, in C), the exact JSON test second: most parts are never parsed.
STEP_FILTER = "instr(r.data, '\"step-finish\"') AND r.data->>'$.type' = 'step-finish'"
TOOL_FILTER = "instr(r.data, '\"tool\"') AND r.data->>'$.type' = 'tool'"
# OpenCode >= 1.0 asks the model for exactly one step per assistant message (`stopWhen:
# stepCountIs(1)`), so a message's tokens are its step's; only 0.x sessions can hold several steps
# per message, and only theirs are read.
STEP_SESSIONS = "r.session_id IN (SELECT id FROM temp.step_sessions)"


def _staging(con: sqlite3.Connection) -> None:
    con.execute(f"CREATE TEMP TABLE IF NOT EXISTS stage_message ({', '.join(c for c, _ in MESSAGE_FIELDS)})")
    con.execute(f"CREATE TEMP TABLE IF NOT EXISTS stage_step ({', '.join(c for c, _ in STEP_FIELDS)})")
    con.execute("CREATE TEMP TABLE IF NOT EXISTS step_sessions (id TEXT PRIMARY KEY)")
    for t in ("stage_message", "stage_step", "step_sessions"):
        con.execute(f"DELETE FROM temp.{t}")


def _statements(where_message: str, where_part: str, valid_only: bool) -> list[tuple[str, str]]:
    jv = " AND json_valid(r.data)" if valid_only else ""
    tool_cols = ", ".join(c for c, _ in TOOL_FIELDS)
    return [
        (
            "message",
            f"INSERT INTO temp.stage_message SELECT {', '.join(e for _, e in MESSAGE_FIELDS)} "
            f"FROM temp.src_message AS r WHERE ({where_message}){jv}",
        ),
        (
            "step",
            f"INSERT INTO temp.stage_step SELECT {', '.join(e for _, e in STEP_FIELDS)} "
            f"FROM temp.src_part AS r WHERE {STEP_SESSIONS} AND ({where_part}){jv} AND {STEP_FILTER}",
        ),
        (
            "tool",
            f"INSERT INTO tool_call (id, rank, {tool_cols}) SELECT r.id, :rank, {', '.join(e for _, e in TOOL_FIELDS)} "
            f"FROM temp.src_part AS r WHERE ({where_part}){jv} AND {TOOL_FILTER} "
            f"ON CONFLICT(id) DO UPDATE SET rank = excluded.rank, "
            + ", ".join(f"{c} = excluded.{c}" for c, _ in TOOL_FIELDS)
            + " WHERE excluded.rank <= tool_call.rank",
        ),
    ]


def run(
    con: sqlite3.Connection,
    rank: int,
    where_message: str = "1",
    where_part: str = "1",
    params: dict | None = None,
    track_parts: bool = False,
) -> list[tuple[str, str]]:
    """Extracts what the filters select from the `src_*` views and merges it into the index.

    Sessions whose messages were read are recorded in `temp.touched`; with `track_parts`, so are
    sessions of every part the filter selects (a tool call can finish without its message changing).

    Returns (table, id) of rows whose JSON is malformed. Such a row aborts the fast statement, so
    only then is the table read again with a validity guard, and only then are the bad rows looked
    up, to be counted as skipped rather than guessed at.
    """
    args = {"rank": rank, **(params or {})}
    _staging(con)
    _merge_projects_and_sessions(con, rank)
    con.execute(
        "INSERT INTO temp.step_sessions SELECT id FROM session WHERE version IS NULL OR ocsight_era_steps(version)"
    )
    with_steps = con.execute("SELECT 1 FROM temp.step_sessions LIMIT 1").fetchone() is not None
    guarded = dict(_statements(where_message, where_part, valid_only=True))
    bad: set[tuple[str, str]] = set()
    for kind, sql in _statements(where_message, where_part, valid_only=False):
        if kind == "step" and not with_steps:
            continue
        try:
            con.execute(sql, args)
        except sqlite3.OperationalError as e:
            if "malformed JSON" not in str(e):
                raise
            if kind != "tool":
                con.execute(f"DELETE FROM temp.stage_{kind}")
            con.execute(guarded[kind], args)
            table, where = ("message", where_message) if kind == "message" else ("part", where_part)
            bad.update(
                (table, rid)
                for (rid,) in con.execute(
                    f"SELECT r.id FROM temp.src_{table} AS r WHERE ({where}) AND NOT json_valid(r.data)", args
                )
            )
    merge(con, rank)
    con.execute("INSERT OR IGNORE INTO temp.touched SELECT session_id FROM temp.stage_message")
    con.execute("INSERT OR IGNORE INTO temp.touched SELECT session_id FROM temp.stage_step")
    if track_parts:
        con.execute(
            f"INSERT OR IGNORE INTO temp.touched SELECT r.session_id FROM temp.src_part r "
            f"WHERE ({where_part}) AND json_valid(r.data)",
            args,
        )
    return sorted(bad)


def _merge_projects_and_sessions(con: sqlite3.Connection, rank: int) -> None:
    con.execute(
        "INSERT INTO project (id, rank, worktree, name) SELECT r.id, ?, r.worktree, r.name FROM temp.src_project r "
        "WHERE 1 ON CONFLICT(id) DO UPDATE SET rank = excluded.rank, worktree = excluded.worktree, name = excluded.name "
        "WHERE excluded.rank <= project.rank",
        (rank,),
    )
    cols = ", ".join(SESSION_FIELDS)
    con.execute(
        f"INSERT INTO session (id, rank, {cols}, era) SELECT r.id, ?, {', '.join('r.' + c for c in SESSION_FIELDS)}, "
        f"ocsight_era(r.version) FROM temp.src_session r WHERE 1 "
        f"ON CONFLICT(id) DO UPDATE SET rank = excluded.rank, era = excluded.era, "
        + ", ".join(f"{c} = excluded.{c}" for c in SESSION_FIELDS)
        + " WHERE excluded.rank <= session.rank",
        (rank,),
    )


MESSAGE_COLUMNS = [
    "session_id", "time_created", "role", "time_completed", "parent_id", "provider", "model", "agent", "finish",
    "error", "era", "input", "output", "reasoning", "cache_read", "cache_write", "cost_pico", "problem",
]
STEP_COLUMNS = [
    "message_id", "session_id", "time_created", "reason", "era", "input", "output", "reasoning", "cache_read",
    "cache_write", "cost_pico", "valid",
]


def _upsert(table: str, columns: list[str], select: str, extra_update: str = "") -> str:
    return (
        f"INSERT INTO {table} (id, rank, {', '.join(columns)}) {select} "
        f"ON CONFLICT(id) DO UPDATE SET rank = excluded.rank, "
        + ", ".join(f"{c} = excluded.{c}" for c in columns)
        + extra_update
        + f" WHERE excluded.rank <= {table}.rank"
    )


def merge(con: sqlite3.Connection, rank: int) -> None:
    """Normalises staged rows into the index: session era, token semantics, costs in picodollars."""
    session_era = f"coalesce(se.era, '{normalise.DISJOINT}')"
    n = normalise.normalised_sql("x", session_era, "x.provider")
    cost = normalise.cost_pico_sql("x.cost")
    con.execute(
        _upsert(
            "message",
            MESSAGE_COLUMNS,
            f"""SELECT x.id, :rank, x.session_id, x.time_created, x.role, x.time_completed, x.parent_id, x.provider,
                x.model, x.agent, x.finish, x.error, {n['era']}, {n['input']}, {n['output']}, {n['reasoning']},
                {n['cache_read']}, {n['cache_write']}, coalesce({cost}, 0),
                CASE
                    WHEN x.role IS NULL OR x.role NOT IN ('user', 'assistant') THEN 'not a user or assistant message'
                    WHEN {cost} IS NULL THEN 'cost is not a number'
                    WHEN NOT {n['valid']} THEN 'token counts are not numbers'
                END
            FROM temp.stage_message x LEFT JOIN session se ON se.id = x.session_id WHERE 1""",
            ", steps = 0, est_pico = NULL, priced = NULL",
        ),
        {"rank": rank},
    )
    if not con.execute("SELECT 1 FROM temp.stage_step LIMIT 1").fetchone():
        return
    n = normalise.normalised_sql("x", session_era, "mm.provider")
    con.execute(
        _upsert(
            "step",
            STEP_COLUMNS,
            f"""SELECT x.id, :rank, x.message_id, x.session_id, x.time_created, x.reason, {n['era']}, {n['input']},
                {n['output']}, {n['reasoning']}, {n['cache_read']}, {n['cache_write']}, coalesce({cost}, 0),
                {n['valid']} AND {cost} IS NOT NULL
            FROM temp.stage_step x LEFT JOIN session se ON se.id = x.session_id
            LEFT JOIN message mm ON mm.id = x.message_id WHERE 1""",
        ),
        {"rank": rank},
    )
    # A message's tokens are the sum of its steps when all of them are readable: OpenCode 0.x
    # overwrote `message.tokens` with the last step's while adding up `cost`.
    con.execute(
        """UPDATE message SET steps = a.steps, era = a.era, input = a.input, output = a.output,
            reasoning = a.reasoning, cache_read = a.cache_read, cache_write = a.cache_write,
            problem = NULL, est_pico = NULL, priced = NULL
        FROM (SELECT s.message_id AS mid, count(*) AS steps, max(s.era) AS era, sum(s.input) AS input,
                     sum(s.output) AS output, sum(s.reasoning) AS reasoning, sum(s.cache_read) AS cache_read,
                     sum(s.cache_write) AS cache_write
              FROM step s
              WHERE s.message_id IN (SELECT message_id FROM temp.stage_step UNION SELECT id FROM temp.stage_message)
              GROUP BY s.message_id HAVING min(s.valid) = 1) AS a
        WHERE message.id = a.mid AND (message.problem IS NULL OR message.problem = 'token counts are not numbers')"""
    )
