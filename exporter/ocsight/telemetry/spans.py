"""Records -> spans, as plain data: the GenAI semantic conventions applied to OpenCode's records.

One trace per root session (its ID hashed from the session ID); a span per user turn
(`invoke_agent {agent}`), per model call (`chat {model}`, CLIENT) and per tool call
(`execute_tool {tool}`). A subagent session's turns hang under the `task` call that started them.
Span IDs are hashed from record IDs, so exporting a record twice gives the same span.

Only finished records become spans: a message once completed or errored, a tool call once it
ended, a turn once its last answer is final and asks for no more tools.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes
from opentelemetry.util.types import AttributeValue

from ocsight.model import Message, Records, ToolCall
from ocsight.telemetry.abandoned import INTERRUPTED, Abandoned, asks_for_tools, is_final, root_of, tool_is_final

# OpenCode providerIDs -> the conventions' well-known `gen_ai.provider.name` values.
PROVIDER_NAMES = {
    "anthropic": "anthropic", "openai": "openai", "google": "gcp.gemini", "google-vertex": "gcp.vertex_ai",
    "google-vertex-anthropic": "gcp.vertex_ai", "amazon-bedrock": "aws.bedrock", "azure": "azure.ai.openai",
    "xai": "x_ai", "mistral": "mistral_ai", "deepseek": "deepseek", "groq": "groq", "cohere": "cohere",
    "perplexity": "perplexity",
}
COST = "gen_ai.usage.cost"  # USD; in no convention yet, as OpenLIT names it
COST_ESTIMATED = "ocsight.cost.estimated"
PROVIDER_ID = "ocsight.provider.id"
PROJECT = "ocsight.project"
TOOL_STATUS = "ocsight.tool.status"
MCP_SERVER = "ocsight.mcp.server"
TOOL_ERROR = "tool_error"
KIND_INTERNAL, KIND_CLIENT = "internal", "client"
CHAT = gen_ai.GenAiOperationNameValues.CHAT.value
EXECUTE_TOOL = gen_ai.GenAiOperationNameValues.EXECUTE_TOOL.value
INVOKE_AGENT = gen_ai.GenAiOperationNameValues.INVOKE_AGENT.value


@dataclass(frozen=True)
class SpanData:
    """One span, ready for any exporter; `record` is the OpenCode record it stands for."""

    record: str
    name: str
    kind: str
    trace_id: int
    span_id: int
    parent_id: int | None
    start_ns: int
    end_ns: int
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    error: str | None = None
    turn_start_ns: int = 0  # when the turn it belongs to began (for a subagent's, its root turn)


def _hash(text: str, bits: int) -> int:
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[: bits // 8], "big")
    return value or 1  # zero is the invalid ID


@functools.lru_cache(maxsize=4096)  # every span of a session asks for its trace
def trace_id(root_session: str) -> int:
    return _hash(f"trace:{root_session}", 128)


def span_id(record: str) -> int:
    return _hash(f"span:{record}", 64)


def provider_name(provider: str) -> str:
    return PROVIDER_NAMES.get(provider, provider or "unknown")


def ms_to_ns(ms: int | None) -> int:
    return int(ms or 0) * 1_000_000


def cost_of(m: Message, mode: str = "auto") -> tuple[float, bool]:
    """(USD, estimated) under the cost mode, as the reports count it."""
    return sum(m.cost_parts(mode)), m.is_estimated(mode) and m.estimated_usd is not None


def chat_attributes(m: Message, project: str | None, mode: str = "auto") -> dict[str, AttributeValue]:
    """The conventions count cached tokens inside input and reasoning inside output."""
    t = m.tokens
    cost, estimated = cost_of(m, mode)
    attrs: dict[str, AttributeValue] = {
        gen_ai.GEN_AI_OPERATION_NAME: CHAT,
        gen_ai.GEN_AI_PROVIDER_NAME: provider_name(m.provider),
        PROVIDER_ID: m.provider,
        gen_ai.GEN_AI_REQUEST_MODEL: m.model,
        gen_ai.GEN_AI_RESPONSE_MODEL: m.model,
        gen_ai.GEN_AI_CONVERSATION_ID: m.session_id,
        gen_ai.GEN_AI_AGENT_NAME: m.agent,
        gen_ai.GEN_AI_USAGE_INPUT_TOKENS: t.input + t.cache_read + t.cache_write,
        gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS: t.output + t.reasoning,
        gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: t.cache_read,
        gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: t.cache_write,
        gen_ai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: t.reasoning,
        COST: cost,
        COST_ESTIMATED: estimated,
    }
    if m.finish:
        attrs[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = (m.finish,)
    if m.error:
        attrs[error_attributes.ERROR_TYPE] = m.error
    if project:
        attrs[PROJECT] = project
    return attrs


def tool_attributes(t: ToolCall) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {
        gen_ai.GEN_AI_OPERATION_NAME: EXECUTE_TOOL,
        gen_ai.GEN_AI_TOOL_NAME: t.tool,
        gen_ai.GEN_AI_TOOL_TYPE: "extension" if t.mcp_server else "function",
        TOOL_STATUS: t.status or "unknown",
    }
    if t.call_id:
        attrs[gen_ai.GEN_AI_TOOL_CALL_ID] = t.call_id
    if t.mcp_server:
        attrs[MCP_SERVER] = t.mcp_server
    if t.status == "error":
        attrs[error_attributes.ERROR_TYPE] = TOOL_ERROR
    return attrs


def spans(recs: Records, mode: str = "auto", include_content: bool = False,
          gone: Abandoned = Abandoned()) -> list[SpanData]:
    """Every span the finished records make, and those `gone` says were abandoned (as interrupted).
    Content (prompts, answers, tool output) is never read here: `include_content` only adds tool
    error texts, the one text the records carry."""
    sessions = {s.id: s for s in recs.sessions}
    projects = {p.id: p.worktree for p in recs.projects}
    started_by = {t.child_session_id: t for t in recs.tool_calls if t.child_session_id}
    parent_of = {s.id: s.parent_id for s in recs.sessions}
    by_message = {m.id: m for m in recs.messages}

    def project_of(sid: str) -> str | None:
        s = sessions.get(sid)
        if s is None:
            return None
        return (projects.get(s.project_id) if s.project_id is not None else None) or s.directory

    # a session's trace and a message's span ID are asked for by every span below them: hashed once
    traces: dict[str, int] = {}
    ids: dict[str, int] = {}
    turn_starts: dict[str, int] = {}

    def trace_of(sid: str) -> int:
        t = traces.get(sid)
        if t is None:
            t = traces[sid] = trace_id(root_of(sid, parent_of))
        return t

    def id_of(record: str) -> int:
        i = ids.get(record)
        if i is None:
            i = ids[record] = span_id(record)
        return i

    def turn_start(message_id: str | None, depth: int = 0) -> int:
        """When the turn of a message began: its user message's time, or for a subagent's turn the
        start of the turn whose `task` call started it."""
        m = by_message.get(message_id or "")
        if m is None:
            return 0
        if m.role == "assistant":
            return turn_start(m.parent_id, depth) if m.parent_id in by_message else ms_to_ns(m.time_created)
        start = turn_starts.get(m.id)
        if start is None:
            starter = started_by.get(m.session_id)
            own = ms_to_ns(m.time_created)
            # a chain of subagents deeper than 32 is a cycle in broken records: cut there
            above = turn_start(starter.message_id, depth + 1) if starter and depth < 32 else 0
            start = turn_starts[m.id] = min(own, above) if above else own
        return start

    def final(a: Message) -> bool:
        return is_final(a) or a.id in gone.messages

    def ended(a: Message) -> int:
        """An answer's end: its completion, else (errored) its start, or an abandoned one's last write."""
        last = a.time_updated if a.id in gone.messages else None
        return a.time_completed or last or a.time_created or 0

    answers: dict[str, list[Message]] = {}
    for m in recs.messages:
        if m.role == "assistant" and m.parent_id:
            answers.setdefault(m.parent_id, []).append(m)
    out: list[SpanData] = []
    for m in recs.messages:
        trace = trace_of(m.session_id)
        if m.role == "user":
            replies = sorted(answers.get(m.id, []), key=lambda a: (a.time_created or 0, a.id))
            if not replies or not all(final(a) for a in replies):
                continue
            last = replies[-1]
            if asks_for_tools(last) and m.id not in gone.turns:
                continue  # the turn goes on
            starter = started_by.get(m.session_id)
            end = max(ended(a) for a in replies)
            attrs: dict[str, AttributeValue] = {gen_ai.GEN_AI_OPERATION_NAME: INVOKE_AGENT,
                     gen_ai.GEN_AI_AGENT_NAME: m.agent, gen_ai.GEN_AI_CONVERSATION_ID: m.session_id,
                     gen_ai.GEN_AI_PROVIDER_NAME: provider_name(last.provider), gen_ai.GEN_AI_REQUEST_MODEL: last.model,
                     gen_ai.GEN_AI_USAGE_INPUT_TOKENS: sum(a.tokens.input + a.tokens.cache_read + a.tokens.cache_write
                                                           for a in replies),
                     gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS: sum(a.tokens.output + a.tokens.reasoning for a in replies),
                     COST: sum(cost_of(a, mode)[0] for a in replies)}
            project = project_of(m.session_id)
            if project:
                attrs[PROJECT] = project
            errors = [a.error or INTERRUPTED for a in replies if a.error or a.id in gone.messages]
            if m.id in gone.turns:
                errors.append(INTERRUPTED)
            if errors:
                attrs[error_attributes.ERROR_TYPE] = errors[-1]
            out.append(SpanData(m.id, f"invoke_agent {m.agent}", KIND_INTERNAL, trace, id_of(m.id),
                                id_of(starter.id) if starter else None, ms_to_ns(m.time_created), ms_to_ns(end),
                                attrs, errors[-1] if errors else None, turn_start(m.id)))
        elif final(m):
            done = ended(m)
            attrs = chat_attributes(m, project_of(m.session_id), mode)
            error = m.error
            if error is None and m.id in gone.messages:
                error = attrs[error_attributes.ERROR_TYPE] = INTERRUPTED
            out.append(SpanData(m.id, f"chat {m.model}", KIND_CLIENT, trace, id_of(m.id),
                                id_of(m.parent_id) if m.parent_id else None, ms_to_ns(m.time_created),
                                ms_to_ns(done), attrs, error, turn_start(m.id)))
    for t in recs.tool_calls:
        if not tool_is_final(t) and t.id not in gone.tools:
            continue
        msg = by_message.get(t.message_id)
        sid = t.session_id or (msg.session_id if msg else "")
        attrs = tool_attributes(t)
        error = TOOL_ERROR if t.status == "error" else None
        if not tool_is_final(t):
            error = attrs[error_attributes.ERROR_TYPE] = INTERRUPTED
        if include_content and t.error:
            attrs["ocsight.tool.error"] = t.error
        start = t.time_start or (msg.time_created if msg else 0)
        out.append(SpanData(t.id, f"execute_tool {t.tool}", KIND_INTERNAL, trace_of(sid), id_of(t.id),
                            id_of(t.message_id),
                            ms_to_ns(start), ms_to_ns(t.time_end or start), attrs, error,
                            turn_start(t.message_id) or ms_to_ns(start)))
    return out
