"""Token, cost and call metrics, tagged by provider, model, agent and project (never by session).

The counters are observed from the index's cumulative totals at every collection: after a restart
they go on from the true total, neither from zero nor twice. The conventions' two histograms are
recorded once per model call, when its span is acknowledged.

Prometheus names (the SDK's exporter and the collector's agree): `ocsight_tokens_total`,
`ocsight_cost_usd_total`, `ocsight_model_calls_total`, `ocsight_sessions_total`,
`ocsight_tool_calls_total`, `ocsight_errors_total`, `ocsight_budget_usd`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.semconv.attributes import error_attributes

from ocsight.query import PICO, PROJECT_SQL, TOKEN_KEYS
from ocsight.records import Message
from ocsight.telemetry.spans import PROJECT, provider_name

TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
DIMENSIONS = f"c.provider, c.model, c.agent, {PROJECT_SQL}"
_FROM = "FROM {cube} c LEFT JOIN session s ON s.id = c.session_id LEFT JOIN project p ON p.id = s.project_id"


def _labels(provider: str, model: str, agent: str, project: str) -> dict:
    return {gen_ai.GEN_AI_PROVIDER_NAME: provider_name(provider), "ocsight.provider.id": provider,
            gen_ai.GEN_AI_REQUEST_MODEL: model, gen_ai.GEN_AI_AGENT_NAME: agent, PROJECT: project}


class Totals:
    """Reads the index's cumulative totals for the observable counters (its own read-only connection)."""

    def __init__(self, index_path: Callable[[], Path | None], cost_mode: str) -> None:
        self.path, self.mode = index_path, cost_mode

    def _rows(self, sql: str) -> list[tuple]:
        path = self.path()
        if path is None or not path.exists():
            return []
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute(sql).fetchall()
        except sqlite3.DatabaseError:
            return []  # not built yet
        finally:
            con.close()

    def usage(self) -> list[tuple]:
        est = {"stored": "0", "calculate": "sum(c.est_all_pico)"}.get(self.mode, "sum(c.est_zero_pico)")
        stored = "0" if self.mode == "calculate" else "sum(c.stored_pico)"
        return self._rows(
            f"SELECT {DIMENSIONS}, sum(c.messages), {', '.join(f'sum(c.{k})' for k in TOKEN_KEYS)}, {stored}, {est}, "
            f"count(DISTINCT c.session_id), c.error {_FROM.format(cube='usage_cube')} WHERE c.role = 'assistant' "
            f"GROUP BY 1, 2, 3, 4, c.error"
        )

    def tools(self) -> list[tuple]:
        return self._rows(
            f"SELECT {DIMENSIONS}, c.tool, sum(c.calls), sum(c.errors) {_FROM.format(cube='tool_cube')} "
            f"GROUP BY 1, 2, 3, 4, c.tool"
        )


def install(meter_provider, totals: Totals, budgets: Callable[[], list[tuple[str, str | None, float]]]):
    """Creates every instrument on the provider; returns `record_call(message)` for the histograms."""
    meter = meter_provider.get_meter("ocsight")

    def tokens(_o: CallbackOptions):
        for p, m, a, proj, _n, *counts in totals.usage():
            for kind, value in zip(TOKEN_KEYS, counts[:5]):
                yield Observation(value or 0, {**_labels(p, m, a, proj), gen_ai.GEN_AI_TOKEN_TYPE: kind})

    def cost(_o: CallbackOptions):
        for p, m, a, proj, _n, *rest in totals.usage():
            stored, estimated = rest[5], rest[6]
            yield Observation((stored or 0) / PICO, {**_labels(p, m, a, proj), "ocsight.cost.estimated": False})
            yield Observation((estimated or 0) / PICO, {**_labels(p, m, a, proj), "ocsight.cost.estimated": True})

    def calls(_o: CallbackOptions):
        for p, m, a, proj, n, *_rest in totals.usage():
            yield Observation(n or 0, _labels(p, m, a, proj))

    def errors(_o: CallbackOptions):
        for p, m, a, proj, n, *rest in totals.usage():
            if rest[-1]:
                yield Observation(n or 0, {**_labels(p, m, a, proj), error_attributes.ERROR_TYPE: rest[-1]})

    def sessions(_o: CallbackOptions):
        for p, m, a, proj, _n, *rest in totals.usage():
            yield Observation(rest[7] or 0, _labels(p, m, a, proj))

    def tools(_o: CallbackOptions):
        for p, m, a, proj, tool, n, errs in totals.tools():
            base = {**_labels(p, m, a, proj), gen_ai.GEN_AI_TOOL_NAME: tool}
            yield Observation((n or 0) - (errs or 0), {**base, "ocsight.tool.status": "completed"})
            yield Observation(errs or 0, {**base, "ocsight.tool.status": "error"})

    def budget(_o: CallbackOptions):
        for period, project, usd in budgets():
            yield Observation(usd, {"ocsight.budget.period": period, PROJECT: project or "*"})

    meter.create_observable_counter("ocsight.tokens", [tokens], unit="{token}", description="Tokens by type")
    meter.create_observable_counter("ocsight.cost.usd", [cost], unit="{USD}", description="Cost in US dollars")
    meter.create_observable_counter("ocsight.model.calls", [calls], unit="{call}", description="Model calls")
    meter.create_observable_counter("ocsight.errors", [errors], unit="{error}", description="Failed model calls")
    meter.create_observable_counter("ocsight.sessions", [sessions], unit="{session}",
                                    description="Sessions with model calls")
    meter.create_observable_counter("ocsight.tool.calls", [tools], unit="{call}", description="Tool calls")
    meter.create_observable_gauge("ocsight.budget.usd", [budget], unit="{USD}", description="Configured budgets")
    token_hist = meter.create_histogram(gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE, unit="{token}",
                                        description="Tokens per model call", explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
    duration = meter.create_histogram(gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION, unit="s",
                                      description="Model call duration",
                                      explicit_bucket_boundaries_advisory=DURATION_BUCKETS)

    def record_call(m: Message) -> None:
        attrs = {gen_ai.GEN_AI_OPERATION_NAME: "chat", gen_ai.GEN_AI_PROVIDER_NAME: provider_name(m.provider),
                 gen_ai.GEN_AI_REQUEST_MODEL: m.model}
        t = m.tokens
        token_hist.record(t.input + t.cache_read + t.cache_write, {**attrs, gen_ai.GEN_AI_TOKEN_TYPE: "input"})
        token_hist.record(t.output + t.reasoning, {**attrs, gen_ai.GEN_AI_TOKEN_TYPE: "output"})
        if m.time_completed and m.time_created:
            extra = {error_attributes.ERROR_TYPE: m.error} if m.error else {}
            duration.record(max(0, m.time_completed - m.time_created) / 1000, {**attrs, **extra})

    return record_call
