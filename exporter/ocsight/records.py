"""Normalised OpenCode records, for consumers that need per-message detail (telemetry, MCP, exports).

They come from the same extraction and normalisation as the index's totals (`store.extract`), read
from the sources on demand rather than kept, so a record and a total can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from ocsight import query
from ocsight.query import PICO


@dataclass(frozen=True, slots=True)
class Tokens:
    """Disjoint token counts: input excludes cache, output excludes reasoning."""

    input: int = 0
    output: int = 0
    reasoning: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.reasoning + self.cache_read + self.cache_write


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    worktree: str | None
    name: str | None


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    project_id: str | None
    parent_id: str | None  # set for a subagent's session
    directory: str | None
    title: str | None
    version: str | None  # the OpenCode version that created it
    time_created: int | None  # epoch milliseconds
    time_updated: int | None


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    session_id: str
    role: str  # user | assistant
    time_created: int | None
    time_completed: int | None  # None while an assistant message is still streaming
    parent_id: str | None  # the user message an assistant message answers
    provider: str
    model: str
    agent: str
    finish: str | None
    error: str | None  # error name: APIError, MessageAbortedError, ...
    era: str  # how the writing OpenCode version stored tokens (`ocsight.normalise`)
    tokens: Tokens
    cost_usd: float  # as OpenCode stored it
    estimated_usd: float | None  # from prices; None when no price source knows the model
    steps: int  # its step records read (every session's, or OpenCode 0.x sessions' alone: `reader.read_records`)

    def is_estimated(self, mode: str = "auto") -> bool:
        """Whether the cost mode takes ocsight's estimate rather than OpenCode's stored cost."""
        return mode == "calculate" or (mode == "auto" and self.cost_usd == 0)

    def cost_parts(self, mode: str = "auto") -> tuple[float, float]:
        """(stored, estimated) USD under a cost mode, as the reports count them (`query.cost_columns`)."""
        return (0.0, self.estimated_usd or 0.0) if self.is_estimated(mode) else (self.cost_usd, 0.0)


@dataclass(frozen=True, slots=True)
class Step:
    """One model call (a `step-finish` part)."""

    id: str
    message_id: str
    session_id: str | None
    reason: str | None
    tokens: Tokens
    cost_usd: float


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    message_id: str
    session_id: str | None
    call_id: str | None
    tool: str
    status: str | None  # pending | running | completed | error
    time_start: int | None
    time_end: int | None
    error: str | None
    mcp_server: str | None  # the server of an MCP tool, named `<server>_<tool>`
    child_session_id: str | None  # the subagent session a `task` call started


@dataclass(frozen=True)
class Records:
    projects: list[Project]
    sessions: list[Session]
    messages: list[Message]
    steps: list[Step]
    tool_calls: list[ToolCall]
    skipped: list[tuple[str, str, str]]  # (source, ref, reason)

    def errors_by_name(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.messages:
            if m.role == "assistant" and m.error:
                out[m.error] = out.get(m.error, 0) + 1
        return out


def load(con, only_wanted: bool = False) -> Records:
    """Records from the temporary tables `Index.stage_records` filled; with `only_wanted`, only the
    sessions (and their projects) it was asked for, not every session the sources know."""
    scope = "WHERE id IN (SELECT session_id FROM temp.wanted)" if only_wanted else ""
    projects = [Project(*r) for r in con.execute(
        "SELECT id, worktree, name FROM project "
        + (f"WHERE id IN (SELECT project_id FROM session {scope}) " if only_wanted else "") + "ORDER BY id")]
    sessions = [
        Session(*r)
        for r in con.execute(
            "SELECT id, project_id, parent_id, directory, title, version, time_created, time_updated "
            f"FROM session {scope} ORDER BY time_created, id"
        )
    ]
    messages = [
        Message(
            id=r[0], session_id=r[1], role=r[2], time_created=r[3], time_completed=r[4], parent_id=r[5],
            provider=r[6], model=r[7], agent=r[8], finish=r[9], error=r[10], era=r[11],
            tokens=Tokens(*r[12:17]), cost_usd=r[17] / PICO,
            estimated_usd=None if r[18] is None else r[18] / PICO, steps=r[19],
        )
        for r in con.execute(
            """SELECT v.id, v.session_id, v.role, v.time_created, v.time_completed, s.parent_id, v.provider,
                v.model, v.agent, s.finish, v.error, v.era, v.input, v.output, v.reasoning, v.cache_read,
                v.cache_write, v.cost_pico, v.est_pico, v.steps
            FROM temp.valid_message v JOIN temp.stage_message s ON s.id = v.id AND s.rank = v.rank
            WHERE v.problem IS NULL ORDER BY v.time_created, v.id"""
        )
    ]
    steps = [
        Step(r[0], r[1], r[2], r[3], Tokens(*r[4:9]), r[9] / PICO)
        for r in con.execute(
            """SELECT n.id, n.message_id, x.session_id, x.reason, n.input, n.output, n.reasoning, n.cache_read,
                n.cache_write, n.cost_pico
            FROM temp.norm_step_row n JOIN temp.stage_step x ON x.id = n.id AND x.rank = n.rank
            WHERE n.valid ORDER BY n.id"""
        )
    ]
    tools = [
        ToolCall(r[0], r[1], r[2], r[3], r[4] or "(unknown)", r[5], r[6], r[7], r[8],
                 query.mcp_server(r[4] or ""), r[9])
        for r in con.execute(
            """SELECT t.id, t.message_id, t.session_id, t.call_id, t.tool, t.status, t.time_start, t.time_end,
                t.error, t.child_session_id FROM temp.stage_tool t ORDER BY t.id"""
        )
    ]
    skipped = con.execute("SELECT source, ref, reason FROM skipped ORDER BY source, ref").fetchall()
    skipped += con.execute(
        "SELECT 'index', 'message:' || id, problem FROM temp.valid_message WHERE problem IS NOT NULL ORDER BY id"
    ).fetchall()
    return Records(projects, sessions, messages, steps, tools, skipped)
