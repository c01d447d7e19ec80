"""The MCP server: resources, tools, a prompt and argument completion over `ocsight.mcp.answers`.

Built on the official SDK's `MCPServer`. Every handler refreshes the index first (`Service`), so
answers follow what OpenCode writes; none writes anything. A bad argument, an unknown ID or a data
problem is an MCP error with a one-line message: a tool result with `isError`, or for a resource
a protocol error (-32602 when the ID is unknown).
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.types import CallToolResult, Completion, CompletionArgument, ContentBlock, TextContent, ToolAnnotations
from pydantic import Field, ValidationError

from ocsight import __version__
from ocsight.errors import OcsightError
from ocsight.filters import Filters
from ocsight.index import Index
from ocsight.mcp import answers
from ocsight.mcp.answers import Answer, NotFound, Window
from ocsight.mcp.service import Config, Service

INSTRUCTIONS = (
    "Exact token and cost figures for OpenCode, read from OpenCode's own data on this machine "
    "(sessions, messages, tool calls), up to date at each call. Costs are in US dollars: `usd` = "
    "`stored_usd` (what OpenCode recorded) + `estimated_usd` (ocsight's estimate from prices). Use "
    "usage_summary for totals and breakdowns by provider, model, agent, project and tool; top_sessions "
    "for the costliest sessions; provider_trends for spend per day or week; session_details for one "
    "session. Windows are whole days: `days` (the last N, today included) or `since`/`until` (YYYY-MM-DD)."
)
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                            open_world_hint=False)
COMPLETED = {"id": "session", "session_id": "session", "provider": "provider", "model": "model",
             "project": "project", "agent": "agent"}
MAX_COMPLETIONS = 100
LOOPBACK = ("127.0.0.1", "localhost", "::1")

Days = Annotated[int | None, Field(description="Only the last N days, today included.", ge=1)]
Since = Annotated[str | None, Field(description="From this day on (YYYY-MM-DD), inclusive.")]
Until = Annotated[str | None, Field(description="Up to this day (YYYY-MM-DD), inclusive.")]
Provider = Annotated[str | None, Field(description="Only these providers (comma-separated), e.g. anthropic.")]
Model = Annotated[str | None, Field(description="Only these models (comma-separated): ID or provider/ID.")]
Project = Annotated[str | None, Field(description="Only projects whose path contains this text.")]
Agent = Annotated[str | None, Field(description="Only these agents (comma-separated): build, plan, general, ...")]
Limit = Annotated[int, Field(description="How many sessions.", ge=1, le=answers.MAX_LIMIT)]
By = Annotated[Literal["cost", "tokens"], Field(description="Rank by cost or by tokens.")]
TrendDays = Annotated[int | None, Field(description="The last N days (default: the 30 days up to until, or today).",
                                        ge=1)]
Interval = Annotated[Literal["day", "week"], Field(description="day, or week (Monday to Sunday, labelled by Monday).")]
SessionId = Annotated[str, Field(description="A session ID (ses_...), e.g. from top_sessions.")]


class _Server(MCPServer):
    """`MCPServer`, with arguments checked strictly and their errors said in one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parameters: dict[str, set[str]] = {}

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context | None = None) -> Any:
        unknown = sorted(set(arguments) - self.parameters.get(name, set(arguments)))
        if unknown:
            known = ", ".join(sorted(self.parameters[name])) or "none"
            raise ToolError(f"Error executing tool {name}: unknown argument {unknown[0]!r} (arguments: {known})")
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as e:
            if isinstance(e.__cause__, ValidationError):
                raise ToolError(f"Error executing tool {name}: {_one_line(e.__cause__)}") from e.__cause__
            raise


def _one_line(e: ValidationError) -> str:
    first = e.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "arguments"
    return f"bad argument {where}: {first['msg']} (got {first.get('input')!r})"


def _dumps(doc: dict) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def build(service: Service) -> MCPServer:
    """The server, its handlers bound to one service (one set of sources, one cost mode)."""
    cfg = service.config
    server = _Server("ocsight", title="ocsight: OpenCode usage", version=__version__, instructions=INSTRUCTIONS,
                     website_url="https://opencode.ai", log_level="WARNING")

    def tool(fn: Callable[..., CallToolResult], title: str) -> None:
        server.add_tool(fn, title=title, description=" ".join((fn.__doc__ or "").split()), annotations=READ_ONLY)
        server.parameters[fn.__name__] = set(fn.__code__.co_varnames[: fn.__code__.co_argcount])

    def answer(work: Callable[[Index, float], Answer]) -> CallToolResult:
        """The text for the model to read, then the JSON (also as structured content)."""
        try:
            a = service.run(work)
        except OcsightError as e:
            raise ToolError(str(e)) from None
        content: list[ContentBlock] = [TextContent(type="text", text=a.text),
                                       TextContent(type="text", text=_dumps(a.doc))]
        return CallToolResult(content=content, structured_content=a.doc)

    def resource(work: Callable[[Index], dict]) -> str:
        try:
            return _dumps(service.answer(work))
        except NotFound as e:
            raise ResourceNotFoundError(str(e)) from None
        except OcsightError as e:
            raise ResourceError(str(e)) from None

    def window(idx: Index, w: Window) -> Filters:
        return answers.filters(idx.reader, w, cfg.timezone)

    # -- tools -------------------------------------------------------------------------------------

    def usage_summary(days: Days = None, since: Since = None, until: Until = None, provider: Provider = None,
                      model: Model = None, project: Project = None, agent: Agent = None) -> CallToolResult:
        """Tokens and cost in a window: totals, and breakdowns by provider, model, agent, project, tool and
        error, exactly as `ocsight stats --json`. Without arguments: all history."""
        w = Window(days, since, until, provider, model, project, agent)
        return answer(lambda idx, _s: answers.usage_summary(idx, window(idx, w), cfg.cost_mode))

    def top_sessions(limit: Limit = 10, by: By = "cost", days: Days = None, since: Since = None,
                     until: Until = None, provider: Provider = None, model: Model = None, project: Project = None,
                     agent: Agent = None) -> CallToolResult:
        """The costliest (or largest) sessions, each with its subagent sessions nested and rolled up, as in
        `ocsight session --json`. Without a window: all history."""
        w = Window(days, since, until, provider, model, project, agent)
        return answer(lambda idx, _s: answers.top_sessions(idx, window(idx, w), cfg.cost_mode, limit, by, cfg.tz))

    def provider_trends(days: TrendDays = None, interval: Interval = "day", since: Since = None,
                        until: Until = None, provider: Provider = None, model: Model = None, project: Project = None,
                        agent: Agent = None) -> CallToolResult:
        """Usage per day or week, overall and per provider, as `ocsight daily --json` / `weekly --json`."""
        w = Window(days, since, until, provider, model, project, agent)
        return answer(lambda idx, _s: answers.provider_trends(idx, window(idx, answers.trend_window(w)), cfg.cost_mode,
                                                          interval, cfg.tz))

    def session_details(id: SessionId) -> CallToolResult:
        """One session: its tokens, cost, model calls and tool calls, its subagent sessions (nested, with
        roll-ups), and the breakdowns of the session with its subagents."""
        return answer(lambda idx, _s: answers.session_details(idx, id, cfg.cost_mode, cfg.timezone))

    def refresh_index() -> CallToolResult:
        """Reads what OpenCode wrote since the last call and says what the index holds. Every other tool
        does this by itself first; this one only reports it."""
        return answer(answers.refresh)

    tool(usage_summary, "Usage summary")
    tool(top_sessions, "Top sessions")
    tool(provider_trends, "Provider trends")
    tool(session_details, "Session details")
    tool(refresh_index, "Refresh the index")

    # -- resources ---------------------------------------------------------------------------------

    @server.resource("ocsight://metrics/summary", name="metrics_summary", title="Usage, all history",
                     mime_type="application/json",
                     description="`ocsight stats --json` over all history: totals and every breakdown.")
    def metrics_summary() -> str:
        return resource(lambda idx: answers.metrics_summary(idx, cfg.cost_mode, cfg.timezone))

    @server.resource("ocsight://providers", name="providers", title="Providers and models",
                     mime_type="application/json",
                     description="Every provider and model with its usage, all history (by_provider, by_model).")
    def providers() -> str:
        return resource(lambda idx: answers.providers(idx, cfg.cost_mode, cfg.timezone))

    @server.resource("ocsight://providers/{provider}", name="provider", title="One provider",
                     mime_type="application/json",
                     description="`ocsight stats --json --provider PROVIDER` over all history.")
    def provider(provider: str) -> str:
        return resource(lambda idx: answers.provider(idx, provider, cfg.cost_mode, cfg.timezone))

    @server.resource("ocsight://sessions/{id}", name="session", title="One session", mime_type="application/json",
                     description="The session_details document of one session.")
    def session(id: str) -> str:
        return resource(lambda idx: answers.session_details(idx, id, cfg.cost_mode, cfg.timezone).doc)

    # -- a prompt, and completion of its arguments and the templates' ----------------------------------

    @server.prompt(name="usage_report", title="Usage report",
                   description="Ask for a spend report: totals, models, projects and the costliest sessions.")
    def usage_report(days: str | None = None, provider: str | None = None, model: str | None = None,
                     project: str | None = None, agent: str | None = None) -> str:
        args: dict[str, Any] = {k: v for k, v in (("provider", provider), ("model", model), ("project", project),
                                                  ("agent", agent)) if v}
        if days:
            args["days"] = int(days) if days.strip().isdigit() else days
        return (f"Use the ocsight tools usage_summary and top_sessions with the arguments {json.dumps(args)}, "
                "then report the total cost, the models and projects that cost most, and the three costliest "
                "sessions, with exact figures.")

    @server.completion()
    async def complete(ref: Any, argument: CompletionArgument, context: Any) -> Completion | None:
        dim = COMPLETED.get(argument.name)
        if dim is None:
            return None

        def values() -> list[str]:
            try:
                return service.answer(lambda idx: idx.reader.known_values(dim, argument.value, MAX_COMPLETIONS + 1))
            except OcsightError:
                return []

        found = await anyio.to_thread.run_sync(values)
        return Completion(values=found[:MAX_COMPLETIONS], has_more=len(found) > MAX_COMPLETIONS)

    return server


def check_port(host: str, port: int) -> None:
    """A one-line error now rather than a server that dies on start-up."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, port))
    except OSError as e:
        raise OcsightError(f"cannot listen on {host}:{port}: {e.strerror}", 1) from None


def run(config: Config, http: bool = False, host: str = "127.0.0.1", port: int = 8765) -> None:
    service = Service(config)
    server = build(service)
    if http:
        check_port(host, port)
        if host not in LOOPBACK:
            print(f"ocsight mcp: warning: listening on {host}, beyond this machine, without authentication",
                  file=sys.stderr, flush=True)
    service.warm()
    try:
        if http:
            shown = f"[{host}]" if ":" in host else host
            print(f"ocsight mcp: streamable HTTP on http://{shown}:{port}/mcp", file=sys.stderr, flush=True)
            server.run("streamable-http", host=host, port=port)
        else:
            server.run("stdio")
    except Exception as e:
        if not _client_gone(e):
            raise


def _client_gone(e: BaseException) -> bool:
    """Whether a failure only says that the client closed the connection (not worth a word)."""
    inner = getattr(e, "exceptions", None)
    if inner is not None:
        return all(_client_gone(x) for x in inner)
    return isinstance(e, (BrokenPipeError, ConnectionResetError, anyio.ClosedResourceError,
                          anyio.BrokenResourceError))
