"""Records -> spans -> the SDK's `ReadableSpan`, through the SDK's in-memory span exporter: IDs,
parents, names, kinds, times, attributes, status, scope and resource of a few hand-built records."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from ocsight import __version__
from ocsight.model import Message, Project, Records, Session, Tokens, ToolCall
from ocsight.telemetry import otlp
from ocsight.telemetry import spans as mapping

T = 1_780_000_000_000  # epoch ms
NO_TOKENS = Tokens()
RESOURCE = Resource({"service.name": "ocsight", "user.name": "ana", "host.name": "box"})


def message(id: str, session: str, role: str, at: int, *, done: int | None = None, parent: str | None = None,
            finish: str | None = None, error: str | None = None, tokens: Tokens = NO_TOKENS,
            cost: float = 0.0) -> Message:
    return Message(id=id, session_id=session, role=role, time_created=at, time_completed=done, parent_id=parent,
                   provider="anthropic", model="claude-sonnet-4-5", agent="build", finish=finish, error=error,
                   era="1.18", tokens=tokens, cost_usd=cost, estimated_usd=None, steps=1)


def tool(id: str, message_id: str, session: str, name: str, status: str, start: int, end: int | None, *,
         mcp: str | None = None, child: str | None = None, error: str | None = None) -> ToolCall:
    return ToolCall(id=id, message_id=message_id, session_id=session, call_id=f"call_{id}", tool=name, status=status,
                    time_start=start, time_end=end, error=error, mcp_server=mcp, child_session_id=child)


def records() -> Records:
    """A root session whose turn asks for tools, one of them a subagent (`task`) whose turn fails,
    and an answer still streaming."""
    return Records(
        projects=[Project("p1", "/work/app", "app")],
        sessions=[Session("ses_root", "p1", None, "/work/app", "root", "1.18.33", T, T),
                  Session("ses_child", "p1", "ses_root", "/work/app", "child", "1.18.33", T, T)],
        messages=[
            message("msg_u1", "ses_root", "user", T),
            message("msg_a1", "ses_root", "assistant", T + 10, done=T + 900, parent="msg_u1", finish="tool-calls",
                    tokens=Tokens(input=100, output=20, reasoning=5, cache_read=1000, cache_write=50), cost=0.25),
            message("msg_a2", "ses_root", "assistant", T + 5000, done=T + 6000, parent="msg_u1", finish="stop",
                    tokens=Tokens(input=10, output=7), cost=0.5),
            message("msg_u2", "ses_child", "user", T + 1000),
            message("msg_a3", "ses_child", "assistant", T + 1100, done=T + 1050, parent="msg_u2",
                    error="APIError"),
            message("msg_u3", "ses_root", "user", T + 7000),
            message("msg_a4", "ses_root", "assistant", T + 7100, parent="msg_u3"),  # still streaming
        ],
        steps=[],
        tool_calls=[
            tool("prt_task", "msg_a1", "ses_root", "task", "completed", T + 950, T + 4000, child="ses_child"),
            tool("prt_mcp", "msg_a1", "ses_root", "github_search", "error", T + 960, T + 970, mcp="github",
                 error="rate limited"),
            tool("prt_run", "msg_a1", "ses_root", "bash", "running", T + 980, None),
        ],
        skipped=[],
    )


def exported(recs: Records, include_content: bool = False) -> dict[str, ReadableSpan]:
    """The spans as the SDK's in-memory exporter got them, by record."""
    exporter = InMemorySpanExporter()
    data = mapping.spans(recs, include_content=include_content)
    assert otlp.export_spans(exporter, data, RESOURCE)
    got = exporter.get_finished_spans()
    assert len(got) == len(data)
    return {s.record: span for s, span in zip(data, got)}


def test_only_finished_records_become_spans_with_the_conventions_names_and_kinds():
    spans = exported(records())
    assert {r: (s.name, s.kind) for r, s in spans.items()} == {
        "msg_u1": ("invoke_agent build", SpanKind.INTERNAL),
        "msg_a1": ("chat claude-sonnet-4-5", SpanKind.CLIENT),
        "msg_a2": ("chat claude-sonnet-4-5", SpanKind.CLIENT),
        "msg_u2": ("invoke_agent build", SpanKind.INTERNAL),
        "msg_a3": ("chat claude-sonnet-4-5", SpanKind.CLIENT),
        "prt_task": ("execute_tool task", SpanKind.INTERNAL),
        "prt_mcp": ("execute_tool github_search", SpanKind.INTERNAL),
    }


def test_ids_are_the_records_hashes_and_a_subagent_hangs_under_its_task_call_in_the_parents_trace():
    spans = exported(records())
    trace = mapping.trace_id("ses_root")
    for record, span in spans.items():
        assert span.context.span_id == mapping.span_id(record)
        assert span.context.trace_id == trace and not span.context.is_remote
    parent = {r: s.parent.span_id if s.parent else None for r, s in spans.items()}
    sid = mapping.span_id
    assert parent == {"msg_u1": None, "msg_a1": sid("msg_u1"), "msg_a2": sid("msg_u1"), "prt_task": sid("msg_a1"),
                      "prt_mcp": sid("msg_a1"), "msg_u2": sid("prt_task"), "msg_a3": sid("msg_u2")}
    assert all(s.parent.trace_id == trace for s in spans.values() if s.parent)


def test_times_are_the_records_and_an_end_before_the_start_is_clamped():
    spans = exported(records())
    ms = 1_000_000
    assert (spans["msg_u1"].start_time, spans["msg_u1"].end_time) == (T * ms, (T + 6000) * ms)  # its last answer
    assert (spans["msg_a1"].start_time, spans["msg_a1"].end_time) == ((T + 10) * ms, (T + 900) * ms)
    assert (spans["prt_task"].start_time, spans["prt_task"].end_time) == ((T + 950) * ms, (T + 4000) * ms)
    assert spans["msg_a3"].start_time == spans["msg_a3"].end_time == (T + 1100) * ms


def test_attributes_follow_the_genai_conventions():
    spans = exported(records())
    assert dict(spans["msg_a1"].attributes) == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "ocsight.provider.id": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5", "gen_ai.response.model": "claude-sonnet-4-5",
        "gen_ai.conversation.id": "ses_root", "gen_ai.agent.name": "build",
        "gen_ai.usage.input_tokens": 1150, "gen_ai.usage.output_tokens": 25,  # cache inside input, reasoning inside output
        "gen_ai.usage.cache_read.input_tokens": 1000, "gen_ai.usage.cache_creation.input_tokens": 50,
        "gen_ai.usage.reasoning.output_tokens": 5, "gen_ai.usage.cost": 0.25, "ocsight.cost.estimated": False,
        "gen_ai.response.finish_reasons": ("tool-calls",), "ocsight.project": "/work/app",
    }
    assert dict(spans["msg_u1"].attributes) == {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "build", "gen_ai.conversation.id": "ses_root",
        "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 1160, "gen_ai.usage.output_tokens": 32, "gen_ai.usage.cost": 0.75,
        "ocsight.project": "/work/app",
    }
    assert dict(spans["prt_mcp"].attributes) == {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "github_search", "gen_ai.tool.type": "extension",
        "ocsight.tool.status": "error", "gen_ai.tool.call.id": "call_prt_mcp", "ocsight.mcp.server": "github",
        "error.type": "tool_error",
    }
    assert spans["prt_task"].attributes["gen_ai.tool.type"] == "function"
    assert "ocsight.tool.error" not in spans["prt_mcp"].attributes  # no content unless asked
    assert exported(records(), include_content=True)["prt_mcp"].attributes["ocsight.tool.error"] == "rate limited"


def test_status_is_an_error_only_for_failed_records_and_every_span_has_ocsights_scope_and_resource():
    spans = exported(records())
    failed = {r: s.status.description for r, s in spans.items() if s.status.status_code is StatusCode.ERROR}
    assert failed == {"msg_a3": "APIError", "msg_u2": "APIError", "prt_mcp": "tool_error"}
    assert all(s.status.status_code is StatusCode.UNSET for r, s in spans.items() if r not in failed)
    for span in spans.values():
        assert (span.instrumentation_scope.name, span.instrumentation_scope.version) == ("ocsight", __version__)
        assert span.resource is RESOURCE


def test_an_empty_batch_sends_nothing():
    exporter = InMemorySpanExporter()
    assert otlp.export_spans(exporter, [], RESOURCE)
    assert exporter.get_finished_spans() == ()
