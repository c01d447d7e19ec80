"""The index's typed reader: the one place that says what "tokens by model" means.

Every consumer (reports, exports, the sidecar's metrics, the MCP server) asks these methods, and
none of them names a table. Counting rules (documented in the README under `stats --json`):

- a message counts when its creation time is in the window and it matches every filter;
- `sessions` are distinct sessions with at least one counted message; a subagent session is one with
  a parent session;
- tokens are the normalised disjoint counts (`ocsight.normalise`);
- a copy a fork made of another session's message is set aside (counted once, where it was
  made), unless the reader is asked to count fork copies as OpenCode does (`ocsight.normalise`);
- cost follows the cost mode: `stored` is what OpenCode recorded, `estimated` what ocsight calculated
  from prices, both in integer picodollars; `unpriced` counts messages with tokens whose cost the
  mode needed but no price source knows.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ocsight.filters import Filters, fold
from ocsight.model import BUCKET_MS, Project, Session, Tokens
from ocsight.normalise import TOKEN_KEYS
from ocsight.pricing.rates import PriceRow

PROJECT_SQL = "coalesce(nullif(p.worktree, '/'), s.directory, p.worktree, '(unknown)')"
CUBE_FROM = "FROM {cube} c LEFT JOIN session s ON s.id = c.session_id LEFT JOIN project p ON p.id = s.project_id"
GRAINS = ("day", "week", "month")
DIMENSIONS = ("provider", "model", "agent", "project", "session")
Args = list[object]
Row = dict[str, Any]  # a result row by column name


@dataclass(frozen=True)
class Usage:
    """Usage of some assistant messages: counts, disjoint tokens and cost in picodollars."""

    sessions: int
    messages: int
    tokens: Tokens
    stored_pico: int
    estimated_pico: int
    unpriced: int


@dataclass(frozen=True)
class Grouped:
    """Usage under one key of a breakdown: `key` holds the values of its dimensions, in order."""

    key: tuple[str, ...]
    usage: Usage


@dataclass(frozen=True)
class Totals:
    sessions: int
    subagent_sessions: int
    user_messages: int
    assistant_messages: int
    errors: int
    usage: Usage


@dataclass(frozen=True)
class ToolUse:
    tool: str
    calls: int
    errors: int


@dataclass(frozen=True)
class Breakdown:
    """Everything `stats` shows for some filters."""

    totals: Totals
    by_provider: list[Grouped]
    by_model: list[Grouped]
    by_agent: list[Grouped]
    by_project: list[Grouped]
    tools: list[ToolUse]
    errors: list[tuple[str, int]]  # (error name, assistant messages)
    unpriced: list[tuple[str, str, int]]  # (provider, model, messages)


@dataclass(frozen=True)
class Period:
    period: str
    usage: Usage
    models: list[Grouped] | None  # (provider, model) inside the period, when broken down


@dataclass(frozen=True)
class SessionUsage:
    """One session's own usage in a window."""

    id: str
    has_record: bool  # the index holds its session record (not only messages)
    parent_id: str | None
    title: str | None
    version: str | None
    time_created: int | None
    project: str
    models: list[str]
    agents: list[str]
    errors: int
    tool_calls: int
    usage: Usage
    # its messages that are copies a fork made of another session's: in `usage` only when the
    # reader counts fork copies; either way said, so a fork's spend is not a riddle
    fork_copies: int = 0


@dataclass(frozen=True)
class RecentSession:
    """A session with model calls, as a picker lists it."""

    id: str
    parent_id: str | None
    title: str | None
    project: str
    last_ms: int  # its last activity: its record's update time, else its last call's 15-minute bucket
    usage: Usage


@dataclass(frozen=True)
class RecordCounts:
    projects: int
    sessions: int
    messages: int
    tool_calls: int


def cost_columns(mode: str) -> tuple[str, str, str]:
    """SQL for the (stored, estimated, unpriced) sums of cube rows `c` under a cost mode."""
    if mode == "stored":
        return "sum(c.stored_pico)", "0", "sum(c.unpriced_zero)"
    if mode == "calculate":
        return "0", "sum(c.est_all_pico)", "sum(c.unpriced_all)"
    return "sum(c.stored_pico)", "sum(c.est_zero_pico)", "sum(c.unpriced_zero)"


def where(f: Filters) -> tuple[str, Args]:
    """A WHERE clause over a cube row `c` joined to its session `s` and project `p`."""
    terms: list[str] = ["1"]
    args: Args = []
    if f.since_ms is not None:
        terms.append("c.bucket >= ?")
        args.append(f.since_ms // BUCKET_MS)
    if f.until_ms is not None:
        terms.append("c.bucket < ?")
        args.append(-(-f.until_ms // BUCKET_MS))
    for col, values in (("c.provider", f.providers), ("c.agent", f.agents)):
        if values:
            terms.append(f"lower({col}) IN ({', '.join('?' * len(values))})")
            args += [fold(v) for v in values]
    if f.models:
        # a model matches by its ID, or as provider/model
        terms.append(
            "(" + " OR ".join("(lower(c.model) = ? OR lower(c.provider || '/' || c.model) = ?)" for _ in f.models) + ")"
        )
        for v in f.models:
            args += [fold(v), fold(v)]
    if f.projects:
        # lower() and `fold` fold the same letters (ASCII), so this and `message_filter` agree
        terms.append("(" + " OR ".join(f"instr(lower({PROJECT_SQL}), ?) > 0" for _ in f.projects) + ")")
        args += [fold(v) for v in f.projects]
    if f.sessions is not None:
        terms.append("c.session_id IN (SELECT value FROM json_each(?))")
        args.append(json.dumps(sorted(f.sessions)))
    return " AND ".join(terms), args


def usage_columns(mode: str, empty: int | None = None) -> str:
    """SQL for a `Usage` of cube rows `c` under a cost mode (`empty`: the sums of no rows)."""
    stored, est, unpriced = cost_columns(mode)
    sums = [("messages", "sum(c.messages)"), *((k, f"sum(c.{k})") for k in TOKEN_KEYS), ("stored", stored),
            ("estimated", est), ("unpriced", unpriced)]
    return ", ".join(["count(DISTINCT c.session_id) AS sessions"]
                     + [f"{sql if empty is None else f'coalesce({sql}, {empty})'} AS {name}" for name, sql in sums])


A = TypeVar("A")
B = TypeVar("B")


def _beside(background: Callable[[], A], foreground: Callable[[], B]) -> tuple[A, B]:
    """Runs `background` on a thread while `foreground` runs on this one; both results, or the
    first error."""
    done: list[A] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            done.append(background())
        except BaseException as e:  # raised again on this thread
            failed.append(e)

    thread = threading.Thread(target=run, name="ocsight-beside")
    thread.start()
    try:
        result = foreground()
    finally:
        thread.join()
    if failed:
        raise failed[0]
    return done[0], result


def _from_filtered(cube: str, f: Filters) -> str:
    """`CUBE_FROM`, without the joins when nothing but the filters needs them (they cost half the query)."""
    return CUBE_FROM.format(cube=cube) if f.projects else f"FROM {cube} c"


def _usage(row: Row) -> Usage:
    return Usage(row["sessions"], row["messages"], Tokens(*(row[k] for k in TOKEN_KEYS)),
                 row["stored"], row["estimated"], row["unpriced"])


def period_of(grain: str, tz: dt.tzinfo | None) -> Callable[[int], str]:
    """A function from a cube bucket to its period's label in `tz`: `2026-11-24` (day), the Monday
    starting the ISO week (week), `2026-11` (month)."""
    labels: dict[int, str] = {}

    def label(bucket: int) -> str:
        out = labels.get(bucket)
        if out is None:
            day = dt.datetime.fromtimestamp(bucket * BUCKET_MS / 1000, tz).date()
            if grain == "week":
                out = (day - dt.timedelta(days=day.weekday())).isoformat()
            elif grain == "month":
                out = f"{day.year:04d}-{day.month:02d}"
            else:
                out = day.isoformat()
            labels[bucket] = out
        return out

    return label


class IndexReader:
    """Typed queries over the index (on its connection; the index refreshes before they are asked)."""

    def __init__(self, con: sqlite3.Connection, fork_copies: bool = False) -> None:
        """`fork_copies`: count the copies a fork made as OpenCode does, rather than set them aside."""
        self.con = con
        self.fork_copies = fork_copies
        # the cubes' rows that count (a subquery SQLite flattens into each query)
        self._usage = "usage_cube" if fork_copies else "(SELECT * FROM usage_cube WHERE NOT fork_copy)"
        self._tools = "tool_cube" if fork_copies else "(SELECT * FROM tool_cube WHERE NOT fork_copy)"

    def close(self) -> None:
        self.con.close()

    def _rows(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        cur = self.con.execute(sql, args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    # -- usage ---------------------------------------------------------------------------------------

    def breakdown(self, f: Filters, mode: str, second: IndexReader | None = None) -> Breakdown:
        """Totals and the breakdowns of `stats`, each grouped from the usage cube's assistant rows.

        `second`: a reader on another connection to the same index, which answers half the queries
        on a thread meanwhile (SQLite works without Python's lock)."""
        def here() -> tuple[tuple[Usage, list[Grouped], list[Grouped], list[Grouped]], list[Grouped]]:
            return self._usage_by(f, mode), self._grouped(f, mode, {"project": PROJECT_SQL}, joined=True)

        if second is None:
            (usage, by_project), (tools, errors, counts) = here(), self._rest(f)
        else:
            (tools, errors, counts), (usage, by_project) = _beside(lambda: second._rest(f), here)
        all_usage, by_provider, by_model, by_agent = usage
        # the models a price is missing for, the most messages first: the by-model rows that have any
        unpriced = sorted(((g.key[0], g.key[1], g.usage.unpriced) for g in by_model if g.usage.unpriced > 0),
                          key=lambda u: (-u[2], u[0], u[1]))
        totals = Totals(counts["sessions"], counts["sub"], counts["user"], counts["assistant"], counts["errors"],
                        all_usage)
        return Breakdown(totals, by_provider, by_model, by_agent, by_project,
                         [ToolUse(r["tool"], r["calls"], r["errors"]) for r in tools],
                         [(r["error"], r["n"]) for r in errors],
                         unpriced)

    def unpriced_models(self, f: Filters, mode: str) -> list[tuple[str, str, int]]:
        """(provider, model, messages) of the models whose cost the mode needed but no price source knows,
        the most messages first (`Breakdown.unpriced` without the rest of a breakdown)."""
        by_model = self._grouped(f, mode, {"provider": "c.provider", "model": "c.model"})
        return sorted(((g.key[0], g.key[1], g.usage.unpriced) for g in by_model if g.usage.unpriced > 0),
                      key=lambda u: (-u[2], u[0], u[1]))

    def _grouped(self, f: Filters, mode: str, keys: dict[str, str], joined: bool = False) -> list[Grouped]:
        """Assistant usage grouped by `keys` (name: SQL over a cube row `c`, and with `joined` its
        session `s` and project `p`), the costliest first."""
        clause, args = where(f)
        stored, est, _ = cost_columns(mode)
        joined = joined or bool(f.projects)
        cols = ", ".join(f"{sql} AS {name}" for name, sql in keys.items())
        numbers = ", ".join(str(n + 1) for n in range(len(keys)))
        rows = self._rows(
            f"SELECT {cols}, {usage_columns(mode)} "
            f"{CUBE_FROM.format(cube=self._usage) if joined else f'FROM {self._usage} c'} "
            f"WHERE {clause} AND c.role = 'assistant' GROUP BY {numbers} "
            f"ORDER BY {stored} + {est} DESC, sum(c.input + c.output + c.reasoning + c.cache_read + c.cache_write) "
            f"DESC, {numbers}", args)
        return [Grouped(tuple(r[k] for k in keys), _usage(r)) for r in rows]

    def _usage_by(self, f: Filters, mode: str) -> tuple[Usage, list[Grouped], list[Grouped], list[Grouped]]:
        """All assistant usage, by provider, by model and by agent: one query groups the rows by all
        three, each group with its sessions' IDs, and the coarser groupings add its few groups up
        (their sessions counted as the union of their groups'): one sort of the cube, not four."""
        clause, args = where(f)
        stored, est, unpriced = cost_columns(mode)
        rows = self.con.execute(
            f"SELECT c.provider, c.model, c.agent, json_group_array(DISTINCT c.session_id), sum(c.messages), "
            f"{', '.join(f'sum(c.{k})' for k in TOKEN_KEYS)}, {stored}, {est}, {unpriced} "
            f"{_from_filtered(self._usage, f)} WHERE {clause} AND c.role = 'assistant' GROUP BY 1, 2, 3", args
        ).fetchall()
        fine = [((p, m, a), set(json.loads(ids)), numbers) for p, m, a, ids, *numbers in rows]

        def by(key: Callable[[tuple[Any, ...]], tuple[Any, ...]]) -> list[Grouped]:
            groups: dict[tuple[Any, ...], tuple[set[str], list[int]]] = {}
            for k, ids, numbers in fine:
                g = groups.setdefault(key(k), (set(), [0] * len(numbers)))
                g[0].update(ids)
                g[1][:] = [a + (b or 0) for a, b in zip(g[1], numbers)]
            out = [Grouped(k, Usage(len(ids), n[0], Tokens(*n[1:6]), n[6], n[7], n[8]))
                   for k, (ids, n) in groups.items()]
            # as the other breakdowns are ordered in SQL: costliest first, then most tokens, then by key
            # (texts: staging makes every name one; Python orders them by code point, as SQLite by byte)
            out.sort(key=lambda g: (-(g.usage.stored_pico + g.usage.estimated_pico), -g.usage.tokens.total, g.key))
            return out

        everything = by(lambda k: ())
        total = everything[0].usage if everything else Usage(0, 0, Tokens(0, 0, 0, 0, 0), 0, 0, 0)
        return total, by(lambda k: k[:1]), by(lambda k: k[:2]), by(lambda k: k[2:])

    def _rest(self, f: Filters) -> tuple[list[Row], list[Row], Row]:
        """Tool calls, errors, and the session and message counts."""
        clause, args = where(f)
        tools = self._rows(
            f"SELECT c.tool, sum(c.calls) AS calls, sum(c.errors) AS errors {_from_filtered(self._tools, f)} "
            f"WHERE {clause} GROUP BY c.tool ORDER BY calls DESC, c.tool", args)
        errors = self._rows(
            f"SELECT c.error, sum(c.messages) AS n {_from_filtered(self._usage, f)} WHERE {clause} "
            f"AND c.role = 'assistant' AND c.error IS NOT NULL GROUP BY c.error ORDER BY n DESC, c.error", args)
        (counts,) = self._rows(
            "SELECT count(DISTINCT c.session_id) AS sessions, "
            "count(DISTINCT CASE WHEN s.parent_id IS NOT NULL THEN c.session_id END) AS sub, "
            "coalesce(sum(CASE WHEN c.role = 'user' THEN c.messages END), 0) AS user, "
            "coalesce(sum(CASE WHEN c.role = 'assistant' THEN c.messages END), 0) AS assistant, "
            "coalesce(sum(CASE WHEN c.role = 'assistant' AND c.error IS NOT NULL THEN c.messages END), 0) AS errors "
            f"{CUBE_FROM.format(cube=self._usage)} WHERE {clause}", args)
        return tools, errors, counts

    def periods(self, f: Filters, mode: str, grain: str, tz: dt.tzinfo | None,
                breakdown: bool = False) -> list[Period]:
        """Usage per day, week or month (in `tz`), oldest first; with `breakdown`, per model inside each."""
        if grain not in GRAINS:
            raise ValueError(f"unknown period {grain!r}")
        self.con.create_function("ocsight_period", 1, period_of(grain, tz), deterministic=True)
        clause, args = where(f)
        usage = usage_columns(mode)
        base = f"{_from_filtered(self._usage, f)} WHERE {clause} AND c.role = 'assistant'"
        rows = self._rows(f"SELECT ocsight_period(c.bucket) AS period, {usage} {base} GROUP BY 1 ORDER BY 1", args)
        models: dict[str, list[Grouped]] = {}
        if breakdown:
            for r in self._rows(
                f"SELECT ocsight_period(c.bucket) AS period, c.provider, c.model, {usage} {base} "
                f"GROUP BY 1, 2, 3 ORDER BY 1, sum(c.stored_pico) + sum(c.est_all_pico) DESC, 2, 3", args):
                models.setdefault(r["period"], []).append(Grouped((r["provider"], r["model"]), _usage(r)))
        return [Period(r["period"], _usage(r), models.get(r["period"], []) if breakdown else None) for r in rows]

    def sessions(self, f: Filters, mode: str) -> list[SessionUsage]:
        """Sessions with counted messages, each with its own usage (unordered)."""
        clause, args = where(f)
        rows = self._rows(
            f"""SELECT c.session_id AS id, s.id IS NOT NULL AS has_record, s.parent_id, s.title, s.version,
                s.time_created, {PROJECT_SQL} AS project, {usage_columns(mode)},
                sum(CASE WHEN c.error IS NOT NULL THEN c.messages ELSE 0 END) AS errors,
                group_concat(DISTINCT c.provider || '/' || c.model) AS models,
                group_concat(DISTINCT c.agent) AS agents
            {CUBE_FROM.format(cube=self._usage)} WHERE {clause} AND c.role = 'assistant'
            GROUP BY c.session_id""", args)
        tools = dict(self.con.execute(
            f"SELECT c.session_id, sum(c.calls) {_from_filtered(self._tools, f)} WHERE {clause} GROUP BY 1", args
        ).fetchall())
        copies = dict(self.con.execute(
            f"SELECT c.session_id, sum(c.messages) {_from_filtered('usage_cube', f)} WHERE {clause} AND c.fork_copy "
            "GROUP BY 1", args).fetchall())
        return [SessionUsage(r["id"], bool(r["has_record"]), r["parent_id"], r["title"], r["version"],
                             r["time_created"], r["project"],
                             sorted(r["models"].split(",")) if r["models"] else [],
                             sorted(r["agents"].split(",")) if r["agents"] else [],
                             r["errors"], tools.get(r["id"], 0), _usage(r), copies.get(r["id"], 0)) for r in rows]

    def top_trees(self, f: Filters, mode: str, by: str, limit: int) -> tuple[list[str], int]:
        """The sessions of the `limit` costliest (`by` "cost") or largest ("tokens") session trees,
        and how many trees there are. A session sits under its parent when the parent has usage in
        the window and a record; sessions in a parent cycle belong to no tree. Ranked in SQL on
        exact sums, so only the chosen trees' sessions need building."""
        con = self.con
        clause, args = where(f)
        stored, est, _unpriced = cost_columns(mode)
        tokens = " + ".join(f"c.{k}" for k in TOKEN_KEYS)
        main = "sum(n.pico) DESC, sum(n.tokens) DESC" if by == "cost" else "sum(n.tokens) DESC, sum(n.pico) DESC"
        tables = ("ocsight_node", "ocsight_tree")
        for t in tables:
            con.execute(f"DROP TABLE IF EXISTS temp.{t}")
        try:
            con.execute("CREATE TEMP TABLE ocsight_node (id TEXT PRIMARY KEY, parent TEXT, known INTEGER, "
                        "created INTEGER, pico INTEGER, tokens INTEGER, up TEXT) WITHOUT ROWID")
            con.execute(
                f"""INSERT INTO temp.ocsight_node SELECT c.session_id, s.parent_id, s.id IS NOT NULL, s.time_created,
                    {stored} + {est}, sum({tokens}), NULL
                {CUBE_FROM.format(cube=self._usage)} WHERE {clause} AND c.role = 'assistant' GROUP BY c.session_id""",
                args)
            con.execute("UPDATE temp.ocsight_node SET up = parent WHERE parent IN "
                        "(SELECT id FROM temp.ocsight_node WHERE known)")
            con.execute("CREATE INDEX temp.ocsight_node_up ON ocsight_node (up)")
            con.execute(
                """CREATE TEMP TABLE ocsight_tree AS WITH RECURSIVE tree(id, root) AS (
                    SELECT id, id FROM temp.ocsight_node WHERE up IS NULL
                    UNION ALL SELECT n.id, tree.root FROM tree JOIN temp.ocsight_node n ON n.up = tree.id)
                SELECT id, root FROM tree""")
            total = con.execute("SELECT count(*) FROM temp.ocsight_tree WHERE id = root").fetchone()[0]
            ids = con.execute(
                f"""WITH top AS (SELECT t.root FROM temp.ocsight_tree t JOIN temp.ocsight_node n ON n.id = t.id
                    GROUP BY t.root ORDER BY {main},
                    max(CASE WHEN t.id = t.root THEN coalesce(n.created, 0) END) DESC, t.root DESC LIMIT ?)
                SELECT t.id FROM temp.ocsight_tree t WHERE t.root IN (SELECT root FROM top)""", (limit,)).fetchall()
        finally:
            for t in tables:
                con.execute(f"DROP TABLE IF EXISTS temp.{t}")
        return [r[0] for r in ids], total

    def latest_session(self) -> str | None:
        """The session of the most recent model call or message (the one a live view follows)."""
        row = self.con.execute(f"SELECT s.id FROM session s JOIN {self._usage} c ON c.session_id = s.id "
                               "ORDER BY c.bucket DESC, s.time_updated DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def recent_sessions(self, mode: str, limit: int) -> list[RecentSession]:
        """The sessions with model calls, the most recently active first (the newest is `latest_session`'s);
        a fork's spend is its own unless fork copies are counted, as in every other reader method."""
        rows = self._rows(
            f"""SELECT c.session_id AS id, s.parent_id, s.title, {PROJECT_SQL} AS project,
                max(coalesce(max(s.time_updated), 0), max(c.bucket) * {BUCKET_MS}) AS last_ms,
                max(c.bucket) AS last_bucket, {usage_columns(mode)}
            {CUBE_FROM.format(cube=self._usage)} WHERE c.role = 'assistant'
            GROUP BY c.session_id ORDER BY last_bucket DESC, last_ms DESC, c.session_id DESC LIMIT ?""", (limit,))
        return [RecentSession(r["id"], r["parent_id"], r["title"], r["project"], r["last_ms"], _usage(r))
                for r in rows]

    def knows_session(self, session_id: str) -> bool:
        """Whether the store holds this session: its record, or messages of it."""
        return self.has_session(session_id) or self.con.execute(
            "SELECT 1 FROM usage_cube WHERE session_id = ? LIMIT 1", (session_id,)).fetchone() is not None

    # -- names -----------------------------------------------------------------------------------------

    def known_values(self, dim: str, prefix: str = "", limit: int | None = None) -> list[str]:
        """The values of one dimension that have model usage, for completion and for checking names.

        Models are listed as `provider/model`, then as bare IDs. Sessions are the newest first; the
        rest are sorted. Projects match `prefix` anywhere in their path, the rest at the start."""
        usage = (f"FROM {self._usage} c LEFT JOIN session s ON s.id = c.session_id "
                 "LEFT JOIN project p ON p.id = s.project_id WHERE c.role = 'assistant'")
        values: list[str]
        if dim == "provider":
            values = [r[0] for r in self.con.execute(f"SELECT DISTINCT c.provider {usage} ORDER BY 1")]
        elif dim == "model":
            pairs = self.con.execute(f"SELECT DISTINCT c.provider, c.model {usage} ORDER BY 1, 2").fetchall()
            values = [f"{p}/{m}" for p, m in pairs] + sorted({m for _p, m in pairs})
        elif dim == "agent":
            values = [r[0] for r in self.con.execute(f"SELECT DISTINCT c.agent {usage} ORDER BY 1")]
        elif dim == "project":
            values = [r[0] for r in self.con.execute(f"SELECT DISTINCT {PROJECT_SQL} {usage} ORDER BY 1")]
        elif dim == "session":
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            values = [r[0] for r in self.con.execute(
                f"SELECT c.session_id FROM {self._usage} c LEFT JOIN session s ON s.id = c.session_id "
                "WHERE c.role = 'assistant' AND c.session_id LIKE ? ESCAPE '\\' GROUP BY c.session_id "
                "ORDER BY max(s.time_created) DESC, c.session_id LIMIT ?", (escaped, limit or -1))]
        else:
            raise ValueError(dim)
        if dim == "project":
            values = [v for v in values if v and prefix.lower() in v.lower()]
        elif prefix:
            values = [v for v in values if v and v.lower().startswith(prefix.lower())]
        return values[:limit] if limit else values

    def subtree(self, session_id: str) -> list[str]:
        """A session and every session below it (its subagents, theirs, ...), by the session records."""
        return [r[0] for r in self.con.execute(
            "WITH RECURSIVE tree(id) AS (SELECT ? UNION SELECT s.id FROM session s JOIN tree ON s.parent_id = tree.id) "
            "SELECT id FROM tree", (session_id,))]

    def has_session(self, session_id: str) -> bool:
        return self.con.execute("SELECT 1 FROM session WHERE id = ?", (session_id,)).fetchone() is not None

    # -- records' metadata ---------------------------------------------------------------------------

    def session_records(self, ids: Iterable[str] | None = None) -> list[Session]:
        """Sessions (all, or these), oldest first."""
        scope, args = _ids_scope("id", ids)
        return [Session(*r) for r in self.con.execute(
            "SELECT id, project_id, parent_id, directory, title, version, time_created, time_updated FROM session "
            f"WHERE {scope} ORDER BY time_created, id", args)]

    def project_records(self, session_ids: Iterable[str] | None = None) -> list[Project]:
        """Projects (all, or those of these sessions), by ID."""
        scope, args = _ids_scope("s.id", session_ids)
        where_sessions = "" if session_ids is None else \
            f"WHERE id IN (SELECT s.project_id FROM session s WHERE {scope}) "
        return [Project(*r) for r in self.con.execute(
            f"SELECT id, worktree, name FROM project {where_sessions}ORDER BY id", args)]

    def parents(self) -> dict[str, str | None]:
        """Every session's parent session (None for a root)."""
        return dict(self.con.execute("SELECT id, parent_id FROM session").fetchall())

    def sessions_active_since(self, ms: int) -> list[str]:
        return [r[0] for r in self.con.execute(
            "SELECT id FROM session WHERE coalesce(time_updated, time_created, 0) >= ?", (ms,))]

    # -- what the index holds ------------------------------------------------------------------------

    def record_counts(self) -> RecordCounts:
        con = self.con
        return RecordCounts(
            con.execute("SELECT count(*) FROM project").fetchone()[0],
            con.execute("SELECT count(*) FROM session").fetchone()[0],
            con.execute(f"SELECT coalesce(sum(messages), 0) FROM {self._usage}").fetchone()[0],
            con.execute(f"SELECT coalesce(sum(calls), 0) FROM {self._tools}").fetchone()[0],
        )

    def fork_copies_found(self, session_id: str | None = None) -> int:
        """Messages that are copies a fork made of another session's (counted only with `fork_copies`),
        in every session or in one."""
        one, args = ("", ()) if session_id is None else (" AND session_id = ?", (session_id,))
        return int(self.con.execute(f"SELECT coalesce(sum(messages), 0) FROM usage_cube WHERE fork_copy{one}",
                                    args).fetchone()[0])

    def skipped(self) -> list[tuple[str, str, str]]:
        """Every record a source could not give: (source, reference, reason), sorted."""
        return [(s, r, why) for s, r, why in self.con.execute(
            "SELECT source, ref, reason FROM skipped ORDER BY source, ref")]

    def source_problems(self) -> list[tuple[str, str, str]]:
        """What whole sources could not give (a foreign file, a database of another kind)."""
        return [(s, r, why) for s, r, why in self.con.execute(
            "SELECT source, ref, reason FROM skipped WHERE session_id IS NULL ORDER BY source, ref")]

    def skip_kinds(self) -> list[tuple[str, int, str]]:
        """(reason, records, an example's source and reference) of every kind of skipped record."""
        return [(r, int(n), example) for r, n, example in self.con.execute(
            "SELECT reason, count(*), min(source || ' ' || ref) FROM skipped GROUP BY reason ORDER BY reason")]

    def messages_without_session(self) -> int:
        # each session looked up once (its IDs read from the cube's session index), not once a cube row
        return int(self.con.execute(
            f"SELECT coalesce(sum(c.messages), 0) FROM {self._usage} c WHERE c.session_id IN (SELECT d.session_id "
            "FROM (SELECT DISTINCT session_id FROM usage_cube) d WHERE NOT EXISTS (SELECT 1 FROM session s "
            "WHERE s.id = d.session_id))").fetchone()[0])

    def price_sources(self) -> list[tuple[str, str, str | None]]:
        """(provider, model, where its price came from, None: unpriced) of every model with usage."""
        return [(p, m, s) for p, m, s in self.con.execute(
            # one probe a model, which stops at its first call, rather than a set of every call's model
            "SELECT ps.provider, ps.model, ps.source FROM price_source ps WHERE EXISTS (SELECT 1 FROM "
            f"{self._usage} c WHERE c.provider = ps.provider AND c.model = ps.model AND c.role = 'assistant') "
            "ORDER BY 1, 2")]

    def priced_models(self) -> set[tuple[str, str]]:
        """Every model the index has looked a price up for (priced or not)."""
        return {(p, m) for p, m in self.con.execute("SELECT provider, model FROM price_source")}

    def price_rows(self, pairs: Iterable[tuple[str, str]]) -> list[PriceRow]:
        """The rates of these models (`pricing.rates.price_rows`'s shape)."""
        wanted = json.dumps([list(p) for p in pairs])
        return [(p, m, kind, size, i, o, cr, cw) for p, m, kind, size, i, o, cr, cw in self.con.execute(
            "SELECT * FROM price WHERE (provider, model) IN (SELECT json_extract(value, '$[0]'), "
            "json_extract(value, '$[1]') FROM json_each(?))", (wanted,))]

    # -- the sidecar's metrics ---------------------------------------------------------------------------

    def usage_by_labels(self, mode: str) -> list[tuple[object, ...]]:
        """(provider, model, agent, project, subagent, calls, *tokens, stored, estimated), a row per label set."""
        stored, est, _unpriced = cost_columns(mode)
        return self.con.execute(
            f"SELECT {_LABELS}, sum(c.messages), {', '.join(f'sum(c.{k})' for k in TOKEN_KEYS)}, {stored}, {est} "
            f"{CUBE_FROM.format(cube=self._usage)} WHERE c.role = 'assistant' GROUP BY 1, 2, 3, 4, 5").fetchall()

    def errors_by_labels(self) -> list[tuple[object, ...]]:
        """(provider, model, agent, project, subagent, error type, failed calls)."""
        return self.con.execute(
            f"SELECT {_LABELS}, c.error, sum(c.messages) {CUBE_FROM.format(cube=self._usage)} "
            f"WHERE c.role = 'assistant' AND c.error IS NOT NULL GROUP BY 1, 2, 3, 4, 5, 6").fetchall()

    def sessions_by_labels(self) -> list[tuple[object, ...]]:
        """(provider, model, agent, project, subagent, sessions): each session once, under its first
        model call's labels, so the series add up to the number of sessions."""
        return self.con.execute(
            f"""SELECT provider, model, agent, project, subagent, count(*) FROM (
                SELECT c.provider, c.model, c.agent, {PROJECT_SQL} AS project, s.parent_id IS NOT NULL AS subagent,
                    row_number() OVER (PARTITION BY c.session_id
                        ORDER BY c.bucket, c.provider, c.model, c.agent, c.error) AS n
                {CUBE_FROM.format(cube=self._usage)} WHERE c.role = 'assistant')
            WHERE n = 1 GROUP BY 1, 2, 3, 4, 5""").fetchall()

    def tools_by_labels(self) -> list[tuple[object, ...]]:
        """(provider, model, project, tool, calls, errors)."""
        return self.con.execute(
            f"SELECT c.provider, c.model, {PROJECT_SQL}, c.tool, sum(c.calls), sum(c.errors) "
            f"{CUBE_FROM.format(cube=self._tools)} GROUP BY 1, 2, 3, 4").fetchall()

    def unpriced_by_model(self, mode: str) -> list[tuple[object, ...]]:
        """(provider, model, unpriced calls) of every model with usage."""
        _stored, _est, unpriced = cost_columns(mode)
        return self.con.execute(f"SELECT c.provider, c.model, {unpriced} FROM {self._usage} c "
                                "WHERE c.role = 'assistant' GROUP BY 1, 2").fetchall()

    def spend_by_project(self, mode: str, since_ms: int) -> list[tuple[str, int]]:
        """(project, picodollars) spent from `since_ms` on (a bucket boundary: every real zone's
        midnight is one, so day, week and month sums are exact)."""
        stored, est, _unpriced = cost_columns(mode)
        return [(str(p), int(pico or 0)) for p, pico in self.con.execute(
            f"SELECT {PROJECT_SQL}, {stored} + {est} {CUBE_FROM.format(cube=self._usage)} "
            "WHERE c.role = 'assistant' AND c.bucket >= ? GROUP BY 1", (since_ms // BUCKET_MS,))]


_LABELS = f"c.provider, c.model, c.agent, {PROJECT_SQL}, s.parent_id IS NOT NULL"


def _ids_scope(column: str, ids: Iterable[str] | None) -> tuple[str, Args]:
    if ids is None:
        return "1", []
    return f"{column} IN (SELECT value FROM json_each(?))", [json.dumps(sorted(set(ids)))]
