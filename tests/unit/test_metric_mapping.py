"""The index's rows -> the SDK's observable instruments -> metric points, collected with the SDK's
`InMemoryMetricReader`: names, kinds, temporality, labels and values of hand-built rows."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import AggregationTemporality, Gauge, InMemoryMetricReader, Metric, Sum
from opentelemetry.sdk.resources import Resource

from ocsight.telemetry import meters, metrics, observed

PICO = 10**12
ME = {"user.name": "ana", "host.name": "box"}
SONNET = ("anthropic", "claude-sonnet-4-5")
ROWS: dict[str, list[tuple]] = {
    # provider, model, agent, project, subagent, calls, input, output, reasoning, cache_read, cache_write, stored, est.
    "usage": [(*SONNET, "build", "/work/app", 0, 3, 100, 20, 5, 1000, 50, PICO // 4, 0),
              ("openai", "gpt-5", "general", "/work/app", 1, 1, 10, 2, 0, 0, 0, 0, PICO // 8)],
    "errors": [(*SONNET, "build", "/work/app", 0, "APIError", 1)],
    "sessions": [(*SONNET, "build", "/work/app", 0, 2), ("openai", "gpt-5", "general", "/work/app", 1, 1)],
    "tools": [(*SONNET, "/work/app", "github_search", 4, 1), (*SONNET, "/work/app", "bash", 3, 0)],
    "unpriced": [("local", "llama-3", 2)],
    "spend": [("daily", "*", 0.375), ("daily", "/work/app", 0.375)],
    "budgets": [("daily", None, 5.0), ("monthly", "/work/app", 40.0)],
}
SONNET_LABELS = {"gen_ai.provider.name": "anthropic", "ocsight.provider.id": "anthropic",
                 "gen_ai.request.model": "claude-sonnet-4-5"}


def collect(rows: dict[str, list[tuple]], reader: InMemoryMetricReader | None = None) -> dict[str, Metric]:
    """Every metric one collection gives, by name."""
    if reader is None:
        reader = InMemoryMetricReader()
        provider = meters.provider(Resource({"service.name": "ocsight"}), [reader])
        observed.register(provider.get_meter("ocsight"), lambda source: rows[source], ME)
    data = reader.get_metrics_data()
    out: dict[str, Metric] = {}
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "ocsight"
            out.update({m.name: m for m in sm.metrics})
    return out


def points(metric: Metric) -> dict[frozenset, float]:
    return {frozenset(p.attributes.items()): p.value for p in metric.data.data_points}


def test_counters_are_cumulative_monotonic_sums_and_the_rest_gauges():
    got = collect(ROWS)
    assert set(got) == {i.name for i in metrics.INSTRUMENTS}
    for instrument in metrics.INSTRUMENTS:
        metric = got[instrument.name]
        assert (metric.unit, metric.description) == (instrument.unit, instrument.description)
        if instrument.counter:
            assert isinstance(metric.data, Sum) and metric.data.is_monotonic
            assert metric.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
        else:
            assert isinstance(metric.data, Gauge)


def test_every_point_carries_the_sidecars_user_and_host():
    for metric in collect(ROWS).values():
        assert all(ME.items() <= dict(p.attributes).items() for p in metric.data.data_points), metric.name


def test_tokens_cost_and_calls_are_split_by_type_and_labelled_by_model_agent_project_and_subagent():
    got = collect(ROWS)
    usage = {**SONNET_LABELS, "gen_ai.agent.name": "build", "ocsight.project": "/work/app", "ocsight.subagent": False,
             **ME}
    tokens = points(got["ocsight.tokens"])
    assert len(tokens) == 10
    assert {k: tokens[frozenset({**usage, "gen_ai.token.type": k}.items())] for k in
            ("input", "output", "reasoning", "cache_read", "cache_write")} == {
        "input": 100, "output": 20, "reasoning": 5, "cache_read": 1000, "cache_write": 50}
    cost = points(got["ocsight.cost.usd"])
    assert cost[frozenset({**usage, "ocsight.cost.estimated": False}.items())] == 0.25
    assert cost[frozenset({**usage, "ocsight.cost.estimated": True}.items())] == 0.0
    gpt = {"gen_ai.provider.name": "openai", "ocsight.provider.id": "openai", "gen_ai.request.model": "gpt-5",
           "gen_ai.agent.name": "general", "ocsight.project": "/work/app", "ocsight.subagent": True, **ME}
    assert cost[frozenset({**gpt, "ocsight.cost.estimated": True}.items())] == 0.125
    assert points(got["ocsight.model.calls"]) == {frozenset(usage.items()): 3, frozenset(gpt.items()): 1}
    assert points(got["ocsight.sessions"]) == {frozenset(usage.items()): 2, frozenset(gpt.items()): 1}
    assert points(got["ocsight.errors"]) == {frozenset({**usage, "error.type": "APIError"}.items()): 1}


def test_tool_calls_are_split_by_status_and_named_by_their_server():
    got = points(collect(ROWS)["ocsight.tool.calls"])
    base = {**SONNET_LABELS, "ocsight.project": "/work/app", **ME}

    def tool(name: str, server: str, status: str) -> frozenset:
        return frozenset({**base, "gen_ai.tool.name": name, "ocsight.tool.server": server,
                          "ocsight.tool.status": status}.items())

    assert got == {tool("github_search", "github", "completed"): 3, tool("github_search", "github", "error"): 1,
                   tool("bash", "opencode", "completed"): 3, tool("bash", "opencode", "error"): 0}


def test_budgets_and_spend_share_one_label_set_and_unpriced_calls_count_per_model():
    got = collect(ROWS)

    def period(p: str, project: str) -> frozenset:
        return frozenset({"ocsight.budget.period": p, "ocsight.project": project, **ME}.items())

    assert points(got["ocsight.budget.usd"]) == {period("daily", "*"): 5.0, period("monthly", "/work/app"): 40.0}
    assert points(got["ocsight.spend.usd"]) == {period("daily", "*"): 0.375, period("daily", "/work/app"): 0.375}
    assert points(got["ocsight.unpriced.calls"]) == {frozenset({
        "gen_ai.provider.name": "local", "ocsight.provider.id": "local", "gen_ai.request.model": "llama-3",
        **ME}.items()): 2}


def test_an_instrument_without_rows_sends_no_metric():
    got = collect({**ROWS, "errors": [], "budgets": []})
    assert "ocsight.errors" not in got and "ocsight.budget.usd" not in got and "ocsight.tokens" in got


def test_a_counter_keeps_its_start_and_goes_on_from_the_new_total():
    rows = dict(ROWS)
    reader = InMemoryMetricReader()
    provider = meters.provider(Resource({}), [reader])
    observed.register(provider.get_meter("ocsight"), lambda source: rows[source], ME)
    first = collect(rows, reader)["ocsight.model.calls"].data.data_points
    rows["usage"] = [(*ROWS["usage"][0][:5], 7, *ROWS["usage"][0][6:]), ROWS["usage"][1]]
    second = collect(rows, reader)["ocsight.model.calls"].data.data_points
    assert sorted(p.value for p in first) == [1, 3] and sorted(p.value for p in second) == [1, 7]
    assert {p.start_time_unix_nano for p in first} == {p.start_time_unix_nano for p in second}
    assert all(p.start_time_unix_nano < p.time_unix_nano for p in first + second)


def test_the_snapshot_reads_a_source_once_until_the_index_changes():
    reads: list[str] = []

    def source(name: str, rows: list[tuple]):
        def read() -> list[tuple]:
            reads.append(name)
            return rows
        return read

    snapshot = observed.Snapshot({"usage": source("usage", ROWS["usage"]), "errors": source("errors", []),
                                  "spend": source("spend", ROWS["spend"])})
    for _ in range(3):
        assert snapshot.rows("usage") == ROWS["usage"]
        assert snapshot.rows("errors") == []
        assert snapshot.rows("spend") == ROWS["spend"]
    # empty rows may be an index not built yet; spend moves with the clock
    assert reads == ["usage", "errors", "spend", "errors", "spend", "errors", "spend"]
    reads.clear()
    snapshot.invalidate()
    snapshot.rows("usage")
    assert reads == ["usage"]
