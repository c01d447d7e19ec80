"""Filters and aggregates over the index: the one place that says what "tokens by model" means.

Counting rules (documented in the README under `stats --json`):
- a message counts when its creation time is in the window and it matches every filter;
- `sessions` are distinct sessions with at least one counted message; a subagent session is one with
  a parent session;
- tokens are the normalised disjoint counts (`ocsight.normalise`), `total` their sum;
- cost follows the cost mode: `usd = stored_usd + estimated_usd`, where `stored_usd` is what OpenCode
  recorded and `estimated_usd` what ocsight calculated from prices; `unpriced_messages` counts
  messages with tokens whose cost the policy needed but no price source knows.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from ocsight.errors import EXIT_USAGE, OcsightError
from ocsight.normalise import TOKEN_KEYS
from ocsight.sqlite_library import read_beside, sqlite3
from ocsight.store.extract import BUCKET_MS

PICO = 10**12
# Tools built into OpenCode; any other `<server>_<tool>` name is an MCP server's tool.
BUILTIN_TOOLS = frozenset(
    "bash read write edit multiedit patch apply_patch glob grep list ls task todowrite todoread webfetch "
    "websearch codesearch skill question batch invalid lsp lsp_diagnostics lsp_hover plan_enter plan_exit".split()
)


@dataclass(frozen=True)
class Filters:
    since_ms: int | None = None
    until_ms: int | None = None  # exclusive
    providers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    projects: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    description: dict = field(default_factory=dict, compare=False)


def resolve_timezone(name: str | None) -> dt.tzinfo | None:
    """An IANA zone, or None for the machine's local time."""
    if not name or name == "local":
        return None
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except Exception:  # noqa: BLE001 - ZoneInfoNotFoundError, ValueError for odd keys
        raise OcsightError(f"unknown time zone {name!r} (use an IANA name such as Europe/Paris)", EXIT_USAGE) from None


def parse_date(text: str, flag: str) -> dt.date:
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            pass
    raise OcsightError(f"{flag}: expected a date like 2026-11-24, got {text!r}", EXIT_USAGE)


def _midnight_ms(day: dt.date, tz: dt.tzinfo | None) -> int:
    naive = dt.datetime(day.year, day.month, day.day)
    aware = naive.replace(tzinfo=tz) if tz else naive.astimezone()
    return int(aware.timestamp() * 1000)


def make_filters(
    days: int | None = None,
    since: str | None = None,
    until: str | None = None,
    timezone: str | None = None,
    providers: tuple[str, ...] = (),
    models: tuple[str, ...] = (),
    projects: tuple[str, ...] = (),
    agents: tuple[str, ...] = (),
    today: dt.date | None = None,
) -> Filters:
    """Filters from CLI values; dates are whole days in `timezone` (default: local), `until` inclusive."""
    tz = resolve_timezone(timezone)
    since_ms = until_ms = None
    if days is not None:
        if days < 1:
            raise OcsightError("--days must be at least 1", EXIT_USAGE)
        now = today or (dt.datetime.now(tz) if tz else dt.datetime.now()).date()
        since_ms = _midnight_ms(now - dt.timedelta(days=days - 1), tz)
    if since:
        d = parse_date(since, "--since")
        since_ms = max(since_ms or 0, _midnight_ms(d, tz))
    if until:
        d = parse_date(until, "--until")
        until_ms = _midnight_ms(d + dt.timedelta(days=1), tz)
    if since_ms is not None and until_ms is not None and until_ms <= since_ms:
        raise OcsightError("--until is before --since: the window is empty", EXIT_USAGE)
    split = lambda values: tuple(v.strip() for value in values for v in value.split(",") if v.strip())  # noqa: E731
    desc = {
        "days": days, "since": since, "until": until, "timezone": timezone or "local",
        "provider": list(split(providers)), "model": list(split(models)),
        "project": list(split(projects)), "agent": list(split(agents)),
    }
    return Filters(since_ms, until_ms, split(providers), split(models), split(projects), split(agents), desc)


PROJECT_SQL = "coalesce(nullif(p.worktree, '/'), s.directory, p.worktree, '(unknown)')"


def message_filter(f: Filters):
    """The filters as a test of one record (`ocsight.records.Message`) and its project path, for
    consumers of records; the same rules as `_where` applies to the cubes."""
    providers = {v.lower() for v in f.providers}
    agents = {v.lower() for v in f.agents}
    models = {v.lower() for v in f.models}

    def matches(m, project: str) -> bool:
        t = m.time_created or 0
        if f.since_ms is not None and t < f.since_ms:
            return False
        if f.until_ms is not None and t >= f.until_ms:
            return False
        if providers and m.provider.lower() not in providers:
            return False
        if agents and m.agent.lower() not in agents:
            return False
        if models and m.model.lower() not in models and f"{m.provider}/{m.model}".lower() not in models:
            return False
        return not f.projects or any(p in project for p in f.projects)

    return matches


def _where(f: Filters) -> tuple[str, list]:
    """A WHERE clause over a cube row `c` joined to its session `s` and project `p`."""
    terms, args = ["1"], []
    if f.since_ms is not None:
        terms.append("c.bucket >= ?")
        args.append(f.since_ms // BUCKET_MS)
    if f.until_ms is not None:
        terms.append("c.bucket < ?")
        args.append(-(-f.until_ms // BUCKET_MS))
    for col, values in (("c.provider", f.providers), ("c.agent", f.agents)):
        if values:
            terms.append(f"lower({col}) IN ({', '.join('?' * len(values))})")
            args += [v.lower() for v in values]
    if f.models:
        # a model matches by its ID, or as provider/model
        terms.append(
            "(" + " OR ".join("(lower(c.model) = ? OR lower(c.provider || '/' || c.model) = ?)" for _ in f.models) + ")"
        )
        for v in f.models:
            args += [v.lower(), v.lower()]
    if f.projects:
        terms.append("(" + " OR ".join(f"instr({PROJECT_SQL}, ?) > 0" for _ in f.projects) + ")")
        args += list(f.projects)
    return " AND ".join(terms), args


def cost_columns(mode: str) -> tuple[str, str, str]:
    """SQL for the (stored, estimated, unpriced) sums of cube rows `c` under a cost mode."""
    if mode == "stored":
        return "sum(c.stored_pico)", "0", "sum(c.unpriced_zero)"
    if mode == "calculate":
        return "0", "sum(c.est_all_pico)", "sum(c.unpriced_all)"
    return "sum(c.stored_pico)", "sum(c.est_zero_pico)", "sum(c.unpriced_zero)"


def _usage(row: sqlite3.Row) -> dict:
    tokens = {k: row[k] for k in TOKEN_KEYS}
    tokens["total"] = sum(tokens.values())
    stored, estimated = row["stored"], row["estimated"]
    return {
        "sessions": row["sessions"],
        "messages": row["messages"],
        "tokens": tokens,
        "cost": {
            "usd": (stored + estimated) / PICO,
            "stored_usd": stored / PICO,
            "estimated_usd": estimated / PICO,
            "unpriced_messages": row["unpriced"],
        },
    }


def mcp_server(tool: str) -> str | None:
    if tool in BUILTIN_TOOLS or "_" not in tool:
        return None
    return tool.split("_", 1)[0]


CUBE_FROM = "FROM {cube} c LEFT JOIN session s ON s.id = c.session_id LEFT JOIN project p ON p.id = s.project_id"


def _from_filtered(cube: str, f: Filters) -> str:
    """`CUBE_FROM`, without the joins when nothing but the filters needs them (they cost half the query)."""
    return CUBE_FROM.format(cube=cube) if f.projects else f"FROM {cube} c"


def aside(con: sqlite3.Connection, queries: list[tuple[str, list]]) -> Callable[[], list[list[sqlite3.Row]]]:
    """Runs `queries` on a second connection to the index file, on a thread, while `con` goes on:
    the two cores share the end of a `stats`, which is otherwise serial (counts, tools and errors
    beside the usage breakdowns; `stats --json`'s source and pricing blocks beside them all).
    Returns the function that waits for their rows. Inline when `con` is not a file's, holds a
    transaction or has temporary tables or views in place of the index's (another connection would
    not see them)."""
    path = next((file for _seq, name, file in con.execute("PRAGMA database_list") if name == "main"), "")
    shadowed = con.execute(  # by this connection's own views (`mcp.scope`), which another cannot see
        "SELECT 1 FROM temp.sqlite_master WHERE name IN ('usage_cube', 'tool_cube', 'session', 'project')"
    ).fetchone()
    if not path or con.in_transaction or shadowed:
        rows = [con.execute(sql, args).fetchall() for sql, args in queries]
        return lambda: rows
    side = read_beside(f"file:{urllib.parse.quote(path)}?mode=ro", queries, 30, sqlite3.Row)

    def wait() -> list[list[sqlite3.Row]]:
        got = side()
        return got if got is not None else [con.execute(sql, args).fetchall() for sql, args in queries]

    return wait


def stats(con: sqlite3.Connection, f: Filters, mode: str) -> dict:
    """The aggregates of `stats --json` (without its `source` and `pricing` blocks).

    The assistant messages' usage is first reduced to one row per (session, provider, model, agent)
    in the window (grouped session first, the order of the cube's index: a fifth faster); every
    breakdown is a small GROUP BY over that. The counts of every role's messages and sessions, the
    tools and the errors are read beside it on another connection (`aside`).
    """
    con.row_factory = sqlite3.Row
    where, args = _where(f)
    stored, est, unpriced = cost_columns(mode)
    tools_sql = (
        f"SELECT c.tool, sum(c.calls) AS calls, sum(c.errors) AS errors {_from_filtered('tool_cube', f)} "
        f"WHERE {where} GROUP BY c.tool ORDER BY calls DESC, c.tool"
    )
    errors_sql = (
        f"SELECT c.error, sum(c.messages) AS n {_from_filtered('usage_cube', f)} "
        f"WHERE {where} AND c.role = 'assistant' AND c.error IS NOT NULL GROUP BY c.error ORDER BY n DESC, c.error"
    )
    # the counts of every role's messages and sessions, beside the usage of assistant messages
    counts_sql = (
        "SELECT count(DISTINCT c.session_id) AS sessions, "
        "count(DISTINCT CASE WHEN s.parent_id IS NOT NULL THEN c.session_id END) AS sub, "
        "coalesce(sum(CASE WHEN c.role = 'user' THEN c.messages END), 0) AS user, "
        "coalesce(sum(CASE WHEN c.role = 'assistant' THEN c.messages END), 0) AS assistant, "
        "coalesce(sum(CASE WHEN c.role = 'assistant' AND c.error IS NOT NULL THEN c.messages END), 0) AS errors "
        f"{CUBE_FROM.format(cube='usage_cube')} WHERE {where}"
    )
    rest = aside(con, [(tools_sql, args), (errors_sql, args), (counts_sql, args)])
    con.execute("DROP TABLE IF EXISTS temp.g")
    con.execute(
        f"""CREATE TEMP TABLE g AS SELECT c.provider, c.model, c.agent, c.session_id,
            {PROJECT_SQL} AS project, sum(c.messages) AS messages,
            {", ".join(f"sum(c.{k}) AS {k}" for k in TOKEN_KEYS)},
            {stored} AS stored, {est} AS estimated, {unpriced} AS unpriced
        {CUBE_FROM.format(cube="usage_cube")} WHERE {where} AND c.role = 'assistant'
        GROUP BY c.session_id, c.provider, c.model, c.agent""",
        args,
    )
    usage = ", ".join(
        ["count(DISTINCT g.session_id) AS sessions"]
        + [f"coalesce(sum(g.{k}), 0) AS {k}" for k in ("messages", *TOKEN_KEYS, "stored", "estimated", "unpriced")]
    )
    a = _usage(con.execute(f"SELECT {usage} FROM temp.g AS g").fetchone())

    def grouped(keys: list[str]) -> list[dict]:
        cols = ", ".join(f"g.{k}" for k in keys)
        rows = con.execute(
            f"SELECT {cols}, {usage} FROM temp.g AS g GROUP BY {cols} "
            f"ORDER BY sum(g.stored) + sum(g.estimated) DESC, "
            f"sum(g.input + g.output + g.reasoning + g.cache_read + g.cache_write) DESC, {cols}"
        ).fetchall()
        return [{**{k: r[k] for k in keys}, **_usage(r)} for r in rows]

    breakdowns = {f"by_{name}": grouped(keys) for name, keys in
                  (("provider", ["provider"]), ("model", ["provider", "model"]), ("agent", ["agent"]),
                   ("project", ["project"]))}
    unpriced_models = con.execute(
        "SELECT provider, model, sum(unpriced) AS n FROM temp.g WHERE unpriced > 0 GROUP BY 1, 2 ORDER BY n DESC, 1, 2"
    ).fetchall()
    tools, errors, (counts,) = rest()
    doc = {
        "totals": {
            "sessions": counts["sessions"],
            "subagent_sessions": counts["sub"],
            "messages": {"user": counts["user"], "assistant": counts["assistant"], "errors": counts["errors"]},
            "tokens": a["tokens"],
            "cost": a["cost"],
        },
        **breakdowns,
        "by_tool": [
            {"tool": r["tool"], "calls": r["calls"], "errors": r["errors"], "mcp_server": mcp_server(r["tool"])}
            for r in tools
        ],
        "by_error": [{"error": r["error"], "messages": r["n"]} for r in errors],
        "unpriced_models": [
            {"provider": r["provider"], "model": r["model"], "messages": r["n"]} for r in unpriced_models
        ],
    }
    con.execute("DROP TABLE temp.g")
    con.row_factory = None
    return doc


# -- time reports and sessions ----------------------------------------------------------------------

GRAINS = ("day", "week", "month")


def period_of(grain: str, tz: dt.tzinfo | None):
    """A function from a cube bucket to its period's label in `tz`: `2026-11-24` (day), the Monday
    starting the ISO week (week), `2026-11` (month)."""
    cache: dict[int, str] = {}

    def label(bucket: int) -> str:
        out = cache.get(bucket)
        if out is None:
            at = dt.datetime.fromtimestamp(bucket * BUCKET_MS / 1000, tz)
            day = at.date()
            if grain == "week":
                out = (day - dt.timedelta(days=day.weekday())).isoformat()
            elif grain == "month":
                out = f"{day.year:04d}-{day.month:02d}"
            else:
                out = day.isoformat()
            cache[bucket] = out
        return out

    return label


def periods(con: sqlite3.Connection, f: Filters, mode: str, grain: str, tz: dt.tzinfo | None,
            breakdown: bool = False) -> list[dict]:
    """Usage per day, week or month (in `tz`), oldest first; with `breakdown`, per model inside each."""
    if grain not in GRAINS:
        raise OcsightError(f"unknown period {grain!r} (choose {', '.join(GRAINS)})", EXIT_USAGE)
    con.create_function("ocsight_period", 1, period_of(grain, tz), deterministic=True)
    con.row_factory = sqlite3.Row
    where, args = _where(f)
    stored, est, unpriced = cost_columns(mode)
    usage = (
        f"count(DISTINCT c.session_id) AS sessions, sum(c.messages) AS messages, "
        f"{', '.join(f'sum(c.{k}) AS {k}' for k in TOKEN_KEYS)}, {stored} AS stored, {est} AS estimated, "
        f"{unpriced} AS unpriced"
    )
    base = f"{CUBE_FROM.format(cube='usage_cube')} WHERE {where} AND c.role = 'assistant'"
    try:
        rows = con.execute(
            f"SELECT ocsight_period(c.bucket) AS period, {usage} {base} GROUP BY 1 ORDER BY 1", args
        ).fetchall()
        out = [{"period": r["period"], **_usage(r)} for r in rows]
        if breakdown:
            models: dict[str, list[dict]] = {}
            for r in con.execute(
                f"SELECT ocsight_period(c.bucket) AS period, c.provider, c.model, {usage} {base} "
                f"GROUP BY 1, 2, 3 ORDER BY 1, sum(c.stored_pico) + sum(c.est_all_pico) DESC, 2, 3",
                args,
            ):
                models.setdefault(r["period"], []).append({"provider": r["provider"], "model": r["model"],
                                                           **_usage(r)})
            for p in out:
                p["models"] = models.get(p["period"], [])
        return out
    finally:
        con.row_factory = None


def sessions(con: sqlite3.Connection, f: Filters, mode: str) -> list[dict]:
    """Sessions with counted messages, newest first, as trees: a subagent session sits in its
    parent's `children`, and `rollup` sums a session with all its descendants."""
    con.row_factory = sqlite3.Row
    where, args = _where(f)
    stored, est, unpriced = cost_columns(mode)
    try:
        rows = con.execute(
            f"""SELECT c.session_id AS id, s.parent_id, s.title, s.version, s.time_created, {PROJECT_SQL} AS project,
                count(DISTINCT c.session_id) AS sessions, sum(c.messages) AS messages,
                sum(CASE WHEN c.error IS NOT NULL THEN c.messages ELSE 0 END) AS errors,
                {', '.join(f'sum(c.{k}) AS {k}' for k in TOKEN_KEYS)}, {stored} AS stored, {est} AS estimated,
                {unpriced} AS unpriced, group_concat(DISTINCT c.provider || '/' || c.model) AS models,
                group_concat(DISTINCT c.agent) AS agents
            {CUBE_FROM.format(cube='usage_cube')} WHERE {where} AND c.role = 'assistant'
            GROUP BY c.session_id""",
            args,
        ).fetchall()
        tools = dict(con.execute(
            f"SELECT c.session_id, sum(c.calls) {_from_filtered('tool_cube', f)} WHERE {where} GROUP BY 1", args
        ).fetchall())
        known = {r[0]: r for r in con.execute("SELECT id, parent_id FROM session")}
    finally:
        con.row_factory = None
    nodes: dict[str, dict] = {}
    for r in rows:
        u = _usage(r)
        nodes[r["id"]] = {
            "id": r["id"], "parent_id": r["parent_id"], "title": r["title"], "project": r["project"],
            "version": r["version"], "time_created": r["time_created"],
            "models": sorted((r["models"] or "").split(",")) if r["models"] else [],
            "agents": sorted((r["agents"] or "").split(",")) if r["agents"] else [],
            "messages": u["messages"], "errors": r["errors"], "tool_calls": tools.get(r["id"], 0),
            "tokens": u["tokens"], "cost": u["cost"], "children": [],
        }
    roots = []
    for node in sorted(nodes.values(), key=lambda n: (n["time_created"] or 0, n["id"])):
        parent = nodes.get(node["parent_id"]) if node["parent_id"] in known else None
        (parent["children"] if parent else roots).append(node)
    for root in roots:
        _roll_up(root)
    roots.sort(key=lambda n: (n["time_created"] or 0, n["id"]), reverse=True)
    return roots


def top_trees(con: sqlite3.Connection, f: Filters, mode: str, by: str, limit: int) -> tuple[list[str], int]:
    """The sessions of the `limit` costliest (`by` "cost") or largest ("tokens") session trees, as
    `sessions` nests them, and how many trees there are.

    The trees are ranked in SQL, on exact sums, so that only the chosen trees' sessions are built
    into nodes: building every session's node to rank them took most of a second on 10,000
    sessions. A session sits under its parent when the parent has usage in the window and a
    record, as in `sessions`; sessions in a parent cycle belong to no tree there, nor here.
    """
    where, args = _where(f)
    stored, est, _unpriced = cost_columns(mode)
    tokens = " + ".join(f"c.{k}" for k in TOKEN_KEYS)
    main = "sum(n.pico) DESC, sum(n.tokens) DESC" if by == "cost" else "sum(n.tokens) DESC, sum(n.pico) DESC"
    tables = ("ocsight_node", "ocsight_tree")
    for t in tables:
        con.execute(f"DROP TABLE IF EXISTS temp.{t}")
    try:
        con.execute(
            "CREATE TEMP TABLE ocsight_node (id TEXT PRIMARY KEY, parent TEXT, known INTEGER, created INTEGER, "
            "pico INTEGER, tokens INTEGER, up TEXT) WITHOUT ROWID"
        )
        con.execute(
            f"""INSERT INTO temp.ocsight_node SELECT c.session_id, s.parent_id, s.id IS NOT NULL, s.time_created,
                {stored} + {est}, sum({tokens}), NULL
            {CUBE_FROM.format(cube='usage_cube')} WHERE {where} AND c.role = 'assistant' GROUP BY c.session_id""",
            args,
        )
        con.execute("UPDATE temp.ocsight_node SET up = parent WHERE parent IN (SELECT id FROM temp.ocsight_node "
                    "WHERE known)")
        con.execute("CREATE INDEX temp.ocsight_node_up ON ocsight_node (up)")
        con.execute(
            """CREATE TEMP TABLE ocsight_tree AS WITH RECURSIVE tree(id, root) AS (
                SELECT id, id FROM temp.ocsight_node WHERE up IS NULL
                UNION ALL SELECT n.id, tree.root FROM tree JOIN temp.ocsight_node n ON n.up = tree.id)
            SELECT id, root FROM tree"""
        )
        total = con.execute("SELECT count(*) FROM temp.ocsight_tree WHERE id = root").fetchone()[0]
        ids = con.execute(
            f"""WITH top AS (SELECT t.root FROM temp.ocsight_tree t JOIN temp.ocsight_node n ON n.id = t.id
                GROUP BY t.root ORDER BY {main}, max(CASE WHEN t.id = t.root THEN coalesce(n.created, 0) END) DESC,
                t.root DESC LIMIT ?)
            SELECT t.id FROM temp.ocsight_tree t WHERE t.root IN (SELECT root FROM top)""",
            (limit,),
        ).fetchall()
    finally:
        for t in tables:
            con.execute(f"DROP TABLE IF EXISTS temp.{t}")
    return [r[0] for r in ids], total


def _roll_up(node: dict) -> dict:
    """Sums a session with its descendants into `rollup` (tokens, cost, messages, sessions)."""
    tokens = dict(node["tokens"])
    cost = {k: v for k, v in node["cost"].items()}
    messages, count = node["messages"], 1
    for child in node["children"]:
        r = _roll_up(child)
        for k in tokens:
            tokens[k] += r["tokens"][k]
        for k in cost:
            cost[k] += r["cost"][k]
        messages += r["messages"]
        count += r["sessions"]
    node["rollup"] = {"sessions": count, "messages": messages, "tokens": tokens, "cost": cost}
    return node["rollup"]
