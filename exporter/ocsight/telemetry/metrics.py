"""Token, cost and call metrics, tagged by provider, model, agent and project (never by session).

The counters are read from the index's cumulative totals at every collection: after a restart
they go on from the true total, neither from zero nor twice. `Totals` reads them, and the pure
mappings of `INDEX_METRICS` turn its rows into points; `telemetry.observed` makes them the SDK's
observable instruments, which the SDK renders for OTLP and Prometheus alike. The conventions' two
histograms are SDK instruments, recorded once per model or tool call, when its span is
acknowledged. Every point carries the sidecar's user and host, so many sidecars can share one
collector without their series colliding.

Prometheus names (the sidecar's endpoint and the collector's agree; `tests/metric_names.py` pins them):
`ocsight_tokens_total`, `ocsight_cost_usd_total`, `ocsight_model_calls_total`, `ocsight_sessions_total`,
`ocsight_tool_calls_total`, `ocsight_errors_total`, `ocsight_spend_usd`, `ocsight_budget_usd`,
`ocsight_unpriced_calls`.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.semconv.attributes import error_attributes
from opentelemetry.util.types import AttributeValue

from ocsight.index import IndexReader
from ocsight.model import PICO, Message, ToolCall, mcp_server
from ocsight.normalise import TOKEN_KEYS
from ocsight.telemetry.spans import PROJECT, TOOL_ERROR, provider_name

TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
SUBAGENT = "ocsight.subagent"
TOOL_SERVER = "ocsight.tool.server"  # an MCP tool's server; "opencode" for OpenCode's own tools
PERIOD = "ocsight.budget.period"
ALL_PROJECTS = "*"


Row = tuple[Any, ...]  # one row of an index query
Rows = list[Row]
Labels = dict[str, AttributeValue]


def _model_labels(provider: str, model: str) -> Labels:
    return {gen_ai.GEN_AI_PROVIDER_NAME: provider_name(provider), "ocsight.provider.id": provider,
            gen_ai.GEN_AI_REQUEST_MODEL: model}


def tool_server(mcp_server: str | None) -> str:
    return mcp_server or "opencode"


def period_starts(now: dt.datetime) -> dict[str, dt.datetime]:
    """The current day, ISO week and month in `now`'s zone: what the spend gauges sum from."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return {"daily": day, "weekly": day - dt.timedelta(days=day.weekday()), "monthly": day.replace(day=1)}


def _spend_since(reader: IndexReader, mode: str, since_ms: int) -> Rows:
    return list(reader.spend_by_project(mode, since_ms))


class Totals:
    """Reads the index's cumulative totals for the index-derived instruments (on a read-only
    connection of its own, opened for each reading: the metric reader runs on its own thread)."""

    def __init__(self, index_path: Callable[[], Path | None], cost_mode: str, tz: dt.tzinfo | None = None,
                 fork_copies: bool = False) -> None:
        self.path, self.mode, self.tz, self.fork_copies = index_path, cost_mode, tz, fork_copies

    def _read(self, query: Callable[[IndexReader], Rows]) -> Rows:
        path = self.path()
        if path is None or not path.exists():
            return []
        con = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True, timeout=10)
        try:
            return query(IndexReader(con, self.fork_copies))
        except sqlite3.DatabaseError:
            return []  # not built yet
        finally:
            con.close()

    def usage(self) -> Rows:
        """(provider, model, agent, project, subagent, calls, *tokens, stored, estimated), a row per label set."""
        return self._read(lambda r: r.usage_by_labels(self.mode))

    def errors(self) -> Rows:
        """(provider, model, agent, project, subagent, error type, failed calls)."""
        return self._read(lambda r: r.errors_by_labels())

    def sessions(self) -> Rows:
        """(provider, model, agent, project, subagent, sessions)."""
        return self._read(lambda r: r.sessions_by_labels())

    def tools(self) -> Rows:
        """(provider, model, project, tool, calls, errors)."""
        return self._read(lambda r: r.tools_by_labels())

    def unpriced(self) -> Rows:
        return self._read(lambda r: r.unpriced_by_model(self.mode))

    def spend(self, now: dt.datetime | None = None) -> list[tuple[str, str, float]]:
        """(period, project or '*', USD) for the current day, week and month in the configured zone."""
        # naive local time when no zone is set: its .timestamp() then knows the local DST rules
        now = now or dt.datetime.now(self.tz)
        out: list[tuple[str, str, float]] = []
        for period, start in period_starts(now).items():
            rows: list[tuple[str, int]] = self._read(partial(_spend_since, mode=self.mode,
                                                             since_ms=int(start.timestamp() * 1000)))
            out.append((period, ALL_PROJECTS, sum(pico for _p, pico in rows) / PICO))
            out += [(period, project, pico / PICO) for project, pico in rows]
        return out


@dataclass(frozen=True)
class Instrument:
    """One of the index-derived instruments: a cumulative monotonic sum (`counter`) or a gauge."""

    name: str
    unit: str
    description: str
    counter: bool


Point = tuple[Labels, int | float]  # (attributes, value)
PointMapping = Callable[[Rows, Mapping[str, str]], Iterator[Point]]  # rows and identity -> points


def _usage_labels(p: str, m: str, a: str, proj: str, sub: int, me: Mapping[str, str]) -> Labels:
    return {**_model_labels(p, m), gen_ai.GEN_AI_AGENT_NAME: a, PROJECT: proj, SUBAGENT: bool(sub), **me}


def _tokens(rows: Rows, me: Mapping[str, str]) -> Iterator[Point]:
    for p, m, a, proj, sub, _n, *counts in rows:
        base = _usage_labels(p, m, a, proj, sub, me)
        for kind, value in zip(TOKEN_KEYS, counts[:5]):
            yield {**base, gen_ai.GEN_AI_TOKEN_TYPE: kind}, value or 0


def _cost(rows: Rows, me: Mapping[str, str]) -> Iterator[Point]:
    for p, m, a, proj, sub, _n, *rest in rows:
        stored, estimated = rest[5:7]
        base = _usage_labels(p, m, a, proj, sub, me)
        yield {**base, "ocsight.cost.estimated": False}, (stored or 0) / PICO
        yield {**base, "ocsight.cost.estimated": True}, (estimated or 0) / PICO


def _calls(rows: Rows, me: Mapping[str, str]) -> Iterator[Point]:
    for p, m, a, proj, sub, n, *_rest in rows:
        yield _usage_labels(p, m, a, proj, sub, me), n or 0


def _errors(rows: Rows, me: Mapping[str, str]) -> Iterator[Point]:
    for p, m, a, proj, sub, error, n in rows:
        yield {**_usage_labels(p, m, a, proj, sub, me), error_attributes.ERROR_TYPE: error}, n or 0


def _sessions(rows: Rows, me: Mapping[str, str]) -> Iterator[Point]:
    for p, m, a, proj, sub, n in rows:
        yield _usage_labels(p, m, a, proj, sub, me), n


def _tools(rows: Rows, me: Mapping[str, str]) -> Iterator[Point]:
    for p, m, proj, tool, n, errs in rows:
        base: Labels = {**_model_labels(p, m), PROJECT: proj, gen_ai.GEN_AI_TOOL_NAME: tool,
                TOOL_SERVER: tool_server(mcp_server(tool)), **me}
        yield {**base, "ocsight.tool.status": "completed"}, (n or 0) - (errs or 0)
        yield {**base, "ocsight.tool.status": "error"}, errs or 0


def _unpriced(rows: Rows, me: Mapping[str, str]) -> Iterator[Point]:
    for p, m, n in rows:
        yield {**_model_labels(p, m), **me}, n or 0


def _periods(rows: Rows, me: Mapping[str, str]) -> Iterator[Point]:
    """Budgets and spend: the same label set, so a rule compares them one to one."""
    for period, project, usd in rows:
        yield {PERIOD: period, PROJECT: project or ALL_PROJECTS, **me}, usd


# Every index-derived instrument: what it reads (a `Totals` method, or "budgets") and how its rows become points.
INDEX_METRICS: tuple[tuple[Instrument, str, PointMapping], ...] = (
    (Instrument("ocsight.tokens", "{token}", "Tokens by type", True), "usage", _tokens),
    (Instrument("ocsight.cost.usd", "{USD}", "Cost in US dollars", True), "usage", _cost),
    (Instrument("ocsight.model.calls", "{call}", "Model calls", True), "usage", _calls),
    (Instrument("ocsight.errors", "{error}", "Failed model calls", True), "errors", _errors),
    (Instrument("ocsight.sessions", "{session}", "Sessions with model calls", True), "sessions", _sessions),
    (Instrument("ocsight.tool.calls", "{call}", "Tool calls", True), "tools", _tools),
    (Instrument("ocsight.unpriced.calls", "{call}", "Model calls whose cost is unknown: no price for their model",
                False), "unpriced", _unpriced),
    (Instrument("ocsight.budget.usd", "{USD}", "Configured budgets", False), "budgets", _periods),
    (Instrument("ocsight.spend.usd", "{USD}", "Spend in the current day, week and month, in the configured time zone",
                False), "spend", _periods),
)
INSTRUMENTS: tuple[Instrument, ...] = tuple(i for i, _source, _points in INDEX_METRICS)


def install(meter_provider: MeterProvider, identity: Mapping[str, str]
            ) -> tuple[Callable[[Message], None], Callable[[ToolCall, Message | None], None]]:
    """Creates the conventions' two histograms on the provider; returns `(record_call(message),
    record_tool(call, message))`. `identity` (user and host) goes on every point."""
    meter = meter_provider.get_meter("ocsight")
    me = dict(identity)
    token_hist = meter.create_histogram(gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE, unit="{token}",
                                        description="Tokens per model call", explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
    duration = meter.create_histogram(gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION, unit="s",
                                      description="Model and tool call duration",
                                      explicit_bucket_boundaries_advisory=DURATION_BUCKETS)

    def record_call(m: Message) -> None:
        attrs: Labels = {gen_ai.GEN_AI_OPERATION_NAME: "chat", gen_ai.GEN_AI_PROVIDER_NAME: provider_name(m.provider),
                 gen_ai.GEN_AI_REQUEST_MODEL: m.model, **me}
        t = m.tokens
        token_hist.record(t.input + t.cache_read + t.cache_write, {**attrs, gen_ai.GEN_AI_TOKEN_TYPE: "input"})
        token_hist.record(t.output + t.reasoning, {**attrs, gen_ai.GEN_AI_TOKEN_TYPE: "output"})
        if m.time_completed and m.time_created:
            extra = {error_attributes.ERROR_TYPE: m.error} if m.error else {}
            duration.record(max(0, m.time_completed - m.time_created) / 1000, {**attrs, **extra})

    def record_tool(t: ToolCall, m: Message | None) -> None:
        if not (t.time_start and t.time_end):
            return
        attrs: Labels = {gen_ai.GEN_AI_OPERATION_NAME: "execute_tool", gen_ai.GEN_AI_TOOL_NAME: t.tool,
                 TOOL_SERVER: tool_server(t.mcp_server), **me}
        if m is not None:
            attrs |= {gen_ai.GEN_AI_PROVIDER_NAME: provider_name(m.provider), gen_ai.GEN_AI_REQUEST_MODEL: m.model}
        if t.status == "error":
            attrs[error_attributes.ERROR_TYPE] = TOOL_ERROR
        duration.record(max(0, t.time_end - t.time_start) / 1000, attrs)

    return record_call, record_tool
