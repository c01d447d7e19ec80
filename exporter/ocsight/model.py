"""OpenCode's records as ocsight reads them: frozen values, normalised and priced.

Every consumer that needs per-message detail (exports, spans, the live view) gets these; totals
come from the index (`ocsight.index`), which is summed from the same staging, so a record and a
total never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

PICO = 10**12  # costs are kept in integer picodollars: sums are exact and independent of order
# Usage is summed in 15-minute buckets: every real time zone's midnight falls on a bucket's edge, so
# days, weeks and months in any zone are exact sums of buckets.
BUCKET_MS = 900_000

# Tools built into OpenCode; any other `<server>_<tool>` name is an MCP server's tool.
BUILTIN_TOOLS = frozenset(
    "bash read write edit multiedit patch apply_patch glob grep list ls task todowrite todoread webfetch "
    "websearch codesearch skill question batch invalid lsp lsp_diagnostics lsp_hover plan_enter plan_exit".split()
)
COST_MODES = ("auto", "stored", "calculate")


def mcp_server(tool: str) -> str | None:
    """The MCP server of a tool named `<server>_<tool>`; None for OpenCode's own tools."""
    if tool in BUILTIN_TOOLS or "_" not in tool:
        return None
    return tool.split("_", 1)[0]


@dataclass(frozen=True, slots=True)
class Tokens:
    """Disjoint token counts: input excludes cache, output excludes reasoning (`ocsight.normalise`)."""

    input: int = 0
    output: int = 0
    reasoning: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.reasoning + self.cache_read + self.cache_write

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(self.input + other.input, self.output + other.output, self.reasoning + other.reasoning,
                      self.cache_read + other.cache_read, self.cache_write + other.cache_write)


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
    steps: int  # its step records read (every session's, or OpenCode 0.x sessions' alone)
    time_updated: int | None = None  # OpenCode's last write of it (a database's; unknown in a legacy tree)
    fork_copy: bool = False  # a copy a fork made of another session's message (`ocsight.normalise`)

    def is_estimated(self, mode: str = "auto") -> bool:
        """Whether the cost mode takes ocsight's estimate rather than OpenCode's stored cost."""
        return mode == "calculate" or (mode == "auto" and self.cost_usd == 0)

    def cost_parts(self, mode: str = "auto") -> tuple[float, float]:
        """(stored, estimated) USD under a cost mode, as the index's totals count them."""
        return (0.0, self.estimated_usd or 0.0) if self.is_estimated(mode) else (self.cost_usd, 0.0)

    def is_unpriced(self, mode: str = "auto") -> bool:
        """Whether its cost is unknown under a cost mode, as the index counts `unpriced`: a model call
        with tokens that no price source knows, whose cost the mode estimates (in stored mode: one
        without a stored cost, which that mode does not estimate either)."""
        return (self.role == "assistant" and self.estimated_usd is None and self.tokens.total > 0
                and (mode == "calculate" or self.cost_usd == 0))


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
class Skipped:
    """A record a source could not give: counted and shown, never silently dropped."""

    source: str
    ref: str
    reason: str


@dataclass(frozen=True)
class Records:
    projects: list[Project]
    sessions: list[Session]
    messages: list[Message]
    steps: list[Step]
    tool_calls: list[ToolCall]
    skipped: list[Skipped]

    def errors_by_name(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.messages:
            if m.role == "assistant" and m.error:
                out[m.error] = out.get(m.error, 0) + 1
        return out
