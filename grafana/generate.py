#!/usr/bin/env python3
"""Builds ocsight's Grafana dashboards with the Grafana Foundation SDK and writes them as JSON.

    python grafana/generate.py [OUTDIR]      (default: grafana/dashboards next to this script)

The JSON in grafana/dashboards is generated: edit this file and run it again (a test checks they agree).
Metric and label names follow ocsight's metric contract (tests/metric_names.py).
"""

from __future__ import annotations

import itertools
import json
import sys
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, gauge, prometheus, stat, table, tempo, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

TAG = "ocsight"
PROMETHEUS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
TEMPO = dm.DataSourceRef(type_val="tempo", uid="${tempo}")

# (variable, label, shown as): the filters every usage panel applies.
FILTERS = (
    ("provider", "gen_ai_provider_name", "Provider"),
    ("model", "gen_ai_request_model", "Model"),
    ("project", "ocsight_project", "Project"),
    ("user", "user_name", "User"),
)
USAGE = ("provider", "model", "project", "user")  # counters carry every usage label
HISTOGRAM = ("provider", "model", "user")  # the conventions' histograms and ocsight_unpriced_calls have no project
SIDECAR = ("user",)  # sidecar health and the spend/budget gauges

Panel = Builder[dm.Panel]


# --- PromQL ----------------------------------------------------------------------------------------------------

def sel(metric: str, *matchers: str, by: Sequence[str] = USAGE) -> str:
    """`metric{matchers, <label>=~"$<variable>" for the given variables}`."""
    labels = {var: label for var, label, _ in FILTERS}
    parts = [*matchers, *(f'{labels[var]}=~"${var}"' for var in by)]
    return f"{metric}{{{', '.join(parts)}}}"


def rate(selector: str) -> str:
    return f"rate({selector}[$__rate_interval])"


def one_per_label_set(expr: str) -> str:
    """The largest of a label set's instances: for a budget, which every sidecar of a user exports from the same
    settings (two sidecars of one user and host, or one restarted with a new instance, count it once)."""
    return f"max without (job, instance) ({expr})"


# An instance is new while its heartbeat had no sample 12 minutes earlier: longer than the collector keeps an old
# instance's series after its last update (metric_expiration, 10 minutes).
HEARTBEAT = sel("ocsight_export_lag_seconds", by=SIDECAR)
NEW_INSTANCES = f"({HEARTBEAT} unless {HEARTBEAT} offset 12m)"


def across_instances(selector: str) -> str:
    """A gauge summed over the instances of each label set: two sidecars of one user and host add up. While a
    user and host has a new instance, the larger of the new instances' sum and the others' is taken, so an old
    instance the collector keeps for 10 minutes is never added to its successor (the rules do the same; the
    README's "What the metrics hold" says what it costs)."""
    old = f"sum without (job, instance) ({selector} unless on(job, instance) {NEW_INSTANCES})"
    new = f"sum without (job, instance) ({selector} and on(job, instance) {NEW_INSTANCES})"
    return f"({old} >= {new} or {new} or {old})"


def over_range(selector: str) -> str:
    """The increase over the dashboard's time range (for instant queries), per series: its total now minus its
    last total before the range began (looked for up to a day back, so what was spent while its sidecar was
    down counts when it comes back); a series with no total in that day counts its increase() within the range,
    which ignores its first sample (see the README's "What the metrics hold"). Summed by the caller: an old
    instance that no longer grows adds nothing, two sidecars of one user add up."""
    return (f"(clamp_min({selector} - last_over_time({selector}[1d] offset $__range), 0)"
            f" or increase({selector}[$__range]))")


def total(expr: str, by: Sequence[str] = ()) -> str:
    return f"sum by ({', '.join(by)}) ({expr})" if by else f"sum({expr})"


def share(part: str, whole: str, by: Sequence[str] = ()) -> str:
    """sum(part) / sum(whole), 0 (not empty) where `whole` has data and `part` has none."""
    return f"({total(part, by)} or 0 * {total(whole, by)}) / {total(whole, by)}"


def quantile(q: float, bucket_selector: str, by: Sequence[str]) -> str:
    return f"histogram_quantile({q}, {total(rate(bucket_selector), ('le', *by))})"


def budget_selector(metric: str, period: str) -> str:
    """All projects' spend or budget gauge for a period ("daily", or a regex such as "daily|monthly")."""
    op = "=~" if "|" in period else "="
    return sel(metric, f'ocsight_budget_period{op}"{period}"', 'ocsight_project="*"', by=SIDECAR)


def gauge_of(metric: str, period: str) -> str:
    """A spend gauge summed over a user's instances on a host; a budget gauge once per user, host and period."""
    selector = budget_selector(metric, period)
    return one_per_label_set(selector) if metric == "ocsight_budget_usd" else across_instances(selector)


def spend(period: str, by: Sequence[str] = ()) -> str:
    return total(gauge_of("ocsight_spend_usd", period), by)


def budget(period: str, by: Sequence[str] = ()) -> str:
    return total(gauge_of("ocsight_budget_usd", period), by)


def budget_used(period: str, by: Sequence[str] = ()) -> str:
    """Percent of the budget spent, counting only the sidecars that have a budget for the period."""
    spent, limit = gauge_of("ocsight_spend_usd", period), gauge_of("ocsight_budget_usd", period)
    return f"100 * {total(f'{spent} and {limit}', by)} / {total(limit, by)}"


SIDECAR_LEGEND = "{{user_name}}@{{host_name}}"
TOKENS = "ocsight_tokens_total"
COST = "ocsight_cost_usd_total"
CALLS = "ocsight_model_calls_total"
ERRORS = "ocsight_errors_total"
SESSIONS = "ocsight_sessions_total"
TOOLS = "ocsight_tool_calls_total"
DURATION = "gen_ai_client_operation_duration_seconds"
CACHE_READ = 'gen_ai_token_type="cache_read"'
PROMPT = 'gen_ai_token_type=~"input|cache_read|cache_write"'
INPUT, OUTPUT = 'gen_ai_token_type="input"', 'gen_ai_token_type="output"'
STORED, ESTIMATED = 'ocsight_cost_estimated="false"', 'ocsight_cost_estimated="true"'
CHAT = 'gen_ai_operation_name="chat"'
SUCCEEDED = 'error_type=""'  # the label is only on failures


# --- panels ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Q:
    """A PromQL target: expression, legend, and whether it is an instant table query."""

    expr: str
    legend: str = ""
    instant: bool = False


def targets(queries: Sequence[Q], *, as_table: bool = False) -> list[prometheus.Dataquery]:
    out = []
    for ref, q in zip("ABCDEFGHIJ", queries, strict=False):
        t = prometheus.Dataquery().expr(q.expr).ref_id(ref).datasource(PROMETHEUS)
        if q.legend:
            t = t.legend_format(q.legend)
        if q.instant or as_table:
            t = t.instant()
        if as_table:
            t = t.format(PromQueryFormat.TABLE)
        out.append(t)
    return out


def per_sidecar(aggregation: str, expr: str) -> list[Q]:
    return [Q(f"{aggregation} by (user_name, host_name) ({expr})", SIDECAR_LEGEND)]


def thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=value, color=color) for value, color in steps])


NEUTRAL = thresholds((None, "green"))
BUDGET = thresholds((None, "green"), (80, "orange"), (100, "red"))


def ts(title: str, description: str, queries: Sequence[Q], unit: str = "short", *, w: int = 12, h: int = 8,
       stack: bool = False, maximum: float | None = None) -> Panel:
    p = (timeseries.Panel().title(title).description(description).datasource(PROMETHEUS).unit(unit)
         .targets(targets(queries)).span(w).height(h).fill_opacity(20 if stack else 10)
         .legend(cb.VizLegendOptions().display_mode(cm.LegendDisplayMode.TABLE).placement(cm.LegendPlacement.BOTTOM)
                 .show_legend(True).calcs(["mean", "max"]))
         .stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL if stack else cm.StackingMode.NONE)))
    if maximum is not None:
        p = p.min(0).max(maximum)
    return p


def single(title: str, description: str, queries: Sequence[Q], unit: str = "short", *, w: int = 4, h: int = 5,
           steps: db.ThresholdsConfig = NEUTRAL) -> Panel:
    """A stat panel of instant values (one per query or series)."""
    return (stat.Panel().title(title).description(description).datasource(PROMETHEUS).unit(unit)
            .targets(targets([Q(q.expr, q.legend, instant=True) for q in queries])).span(w).height(h)
            .thresholds(steps).color_mode(cm.BigValueColorMode.VALUE).graph_mode(cm.BigValueGraphMode.NONE)
            .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def percent_gauge(title: str, description: str, expr: str, *, w: int = 4, h: int = 5) -> Panel:
    return (gauge.Panel().title(title).description(description).datasource(PROMETHEUS).unit("percent")
            .min(0).max(120).thresholds(BUDGET).targets(targets([Q(expr, instant=True)])).span(w).height(h)
            .show_threshold_markers(True)
            .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def percent_bars(title: str, description: str, expr: str, legend: str, *, w: int = 12, h: int = 8) -> Panel:
    return (bargauge.Panel().title(title).description(description).datasource(PROMETHEUS).unit("percent")
            .min(0).max(120).thresholds(BUDGET).targets(targets([Q(expr, legend, instant=True)])).span(w).height(h)
            .display_mode(cm.BarGaugeDisplayMode.GRADIENT).orientation(cm.VizOrientation.HORIZONTAL)
            .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def tabulate(title: str, description: str, columns: Sequence[tuple[str, str, str]], *, w: int = 24,
             h: int = 9) -> Panel:
    """A table of instant queries joined on their labels; each column is (header, expr, unit)."""
    refs = "ABCDEFGHIJ"
    rename = {f"Value #{ref}": header for ref, (header, _, _) in zip(refs, columns, strict=False)}
    p = (table.Panel().title(title).description(description).datasource(PROMETHEUS)
         .targets(targets([Q(expr) for _, expr, _ in columns], as_table=True)).span(w).height(h)
         .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
         .with_transformation(dm.DataTransformerConfig(id_val="organize", options={
             "excludeByName": {"Time": True}, "renameByName": rename}))
         .sort_by([cb.TableSortByFieldState().display_name(columns[0][0]).desc(True)]))
    for header, _, unit in columns:
        p = p.override_by_name(header, [dm.DynamicConfigValue(id_val="unit", value=unit)])
    return p


def explore_url(datasource_uid: str, query: str, query_type: str = "traceql") -> str:
    """A link into Explore; `${...}` placeholders are left for Grafana to fill in."""
    panes = {"trace": {"datasource": datasource_uid, "queries": [{
        "refId": "A", "datasource": {"type": "tempo", "uid": datasource_uid}, "queryType": query_type,
        "query": query}], "range": {"from": "${__from}", "to": "${__to}"}}}
    encoded = urllib.parse.quote(json.dumps(panes, separators=(",", ":"), sort_keys=True), safe="")
    for placeholder in ("${__from}", "${__to}", "${__value.raw}", "${tempo}"):
        encoded = encoded.replace(urllib.parse.quote(placeholder, safe=""), placeholder)
    return f"/explore?schemaVersion=1&orgId=1&panes={encoded}"


def traces_table(title: str, description: str, traceql: str, *, w: int = 24, h: int = 10) -> Panel:
    """Tempo search results, one row per trace, with the trace id opening the trace in Explore."""
    link = {"title": "Open trace in Explore", "url": explore_url("${tempo}", "${__value.raw}")}
    return (table.Panel().title(title).description(description).datasource(TEMPO).span(w).height(h)
            .targets([tempo.TempoQuery().ref_id("A").datasource(TEMPO).query_type("traceql").query(traceql)
                      .table_type("traces").limit(20).spss(10)])
            # the trace id field: named traceID, shown as "Trace ID"
            .override_by_regexp("(traceID|Trace ID)", [dm.DynamicConfigValue(id_val="links", value=[link])]))


# --- dashboards ----------------------------------------------------------------------------------------------------

@dataclass
class Row:
    """A dashboard row; a collapsed row holds its panels, an open one is followed by them."""

    title: str
    panels: list[Panel] = field(default_factory=list)
    collapsed: bool = False


def variables(tempo_too: bool) -> list[Builder[dm.VariableModel]]:
    out: list[Builder[dm.VariableModel]] = [
        db.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
        .current(dm.VariableOption(text="Prometheus", value="prometheus"))]
    if tempo_too:
        out.append(db.DatasourceVariable("tempo").label("Tempo").type("tempo")
                   .current(dm.VariableOption(text="Tempo", value="tempo")))
    for var, label, shown in FILTERS:
        metric = sel(CALLS, by=("provider",)) if var == "model" else CALLS  # models of the chosen providers
        out.append(db.QueryVariable(var).label(shown).datasource(PROMETHEUS)
                   .query(f"label_values({metric}, {label})")
                   .multi(True).include_all(True).all_value(".*")
                   .current(dm.VariableOption(text=["All"], value=["$__all"]))
                   .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
    return out


def build(uid: str, title: str, description: str, rows: Sequence[Row], *, tempo_too: bool = False,
          links: Sequence[Builder[dm.DashboardLink]] = ()) -> dm.Dashboard:
    d = (db.Dashboard(title).uid(uid).description(description).tags([TAG]).time("now-24h", "now").refresh("1m")
         .timezone("browser").tooltip(dm.DashboardCursorSync.CROSSHAIR).readonly().variables(variables(tempo_too))
         .links([db.DashboardLink("ocsight dashboards").type(dm.DashboardLinkType.DASHBOARDS).tags([TAG])
                 .as_dropdown(True).include_vars(True).keep_time(True), *links]))
    for row in rows:
        if row.collapsed:  # Grafana keeps a row's own panels only while it is collapsed
            r = db.Row(row.title)
            for p in row.panels:
                r = r.with_panel(p)
            d = d.with_row(r.collapsed(True))
        else:
            d = d.with_row(db.Row(row.title))
            for p in row.panels:
                d = d.with_panel(p)
    model = d.build()
    ids = itertools.count(1)
    for panel in model.panels or []:
        panel.id_val = next(ids)
        for inner in getattr(panel, "panels", None) or []:
            inner.id_val = next(ids)
    return model


def overview() -> dm.Dashboard:
    def cost_per_hour(label: str) -> list[Q]:
        """Stored (recorded by OpenCode) and estimated (priced by ocsight) cost, per hour."""
        return [Q(f"3600 * {total(rate(sel(COST, flag)), (label,))}", f"{{{{{label}}}}} {name}")
                for flag, name in ((STORED, "stored"), (ESTIMATED, "estimated"))]

    budgets = Row("Spend and budgets (all projects)", [
        single("Spend today", "Spend so far today (the user's time zone) across all projects, and the daily budget.",
               [Q(spend("daily"), "spent"), Q(budget("daily"), "budget")], "currencyUSD"),
        percent_gauge("Daily budget used", "Today's spend as a percentage of the daily budget, for the sidecars "
                      "that have one.", budget_used("daily")),
        single("Spend this week", "Spend so far this ISO week across all projects (there is no weekly budget).",
               [Q(spend("weekly"), "spent")], "currencyUSD"),
        single("Spend this month", "Spend so far this month across all projects, and the monthly budget.",
               [Q(spend("monthly"), "spent"), Q(budget("monthly"), "budget")], "currencyUSD"),
        percent_gauge("Monthly budget used", "This month's spend as a percentage of the monthly budget, for the "
                      "sidecars that have one.", budget_used("monthly")),
        single("Cost in range", "Cost of the model calls in the selected time range, stored and estimated.",
               [Q(total(over_range(sel(COST))))], "currencyUSD"),
    ])
    usage = Row("Usage", [
        ts("Tokens by type", "Tokens per second, by type (input, output, reasoning, cache read, cache write).",
           [Q(total(rate(sel(TOKENS)), ("gen_ai_token_type",)), "{{gen_ai_token_type}}")], stack=True),
        ts("Cache hit ratio", "Cache-read tokens as a share of all prompt tokens (input + cache read + cache "
           "write).", [Q(share(rate(sel(TOKENS, CACHE_READ)), rate(sel(TOKENS, PROMPT))), "cache hit ratio")],
           "percentunit", maximum=1),
        ts("Cost by provider (USD per hour)", "Cost rate by provider; stored is what OpenCode recorded, estimated "
           "is what ocsight priced.", cost_per_hour("gen_ai_provider_name"), "currencyUSD", stack=True),
        ts("Cost by model (USD per hour)", "Cost rate by model; stored is what OpenCode recorded, estimated is "
           "what ocsight priced.", cost_per_hour("gen_ai_request_model"), "currencyUSD", stack=True),
        tabulate("Cost by provider and model in range", "Cost in the selected range per provider and model, "
                 "split into stored and estimated.", [
                     ("Stored USD", total(over_range(sel(COST, STORED)),
                                          ("gen_ai_provider_name", "gen_ai_request_model")), "currencyUSD"),
                     ("Estimated USD", total(over_range(sel(COST, ESTIMATED)),
                                             ("gen_ai_provider_name", "gen_ai_request_model")), "currencyUSD")]),
        single("Sessions in range", "Sessions started in the selected range.",
               [Q(total(over_range(sel(SESSIONS))))], w=6),
        single("Cache hit ratio in range", "Cache-read tokens as a share of prompt tokens in the selected range.",
               [Q(share(over_range(sel(TOKENS, CACHE_READ)), over_range(sel(TOKENS, PROMPT))))], "percentunit",
               w=6),
        single("Model-call error rate in range", "Failed model calls as a share of all model calls in the "
               "selected range.", [Q(share(over_range(sel(ERRORS)), over_range(sel(CALLS))))], "percentunit", w=6,
               steps=thresholds((None, "green"), (0.05, "orange"), (0.2, "red"))),
        single("Model calls in range", "Model calls in the selected range.", [Q(total(over_range(sel(CALLS))))],
               w=6),
        ts("Model-call error rate", "Failed model calls as a share of all model calls.",
           [Q(share(rate(sel(ERRORS)), rate(sel(CALLS))), "error rate")], "percentunit", w=24, maximum=1),
    ])
    lag = sel("ocsight_export_lag_seconds", by=SIDECAR)
    health = Row("Sidecar health", [
        single("Sidecars reporting", "Users and hosts whose sidecar's heartbeat (the export-lag gauge) is present "
               "(a sidecar scraped directly and through the collector, or restarted with a new instance, counts "
               "once; so do two sidecars of one user on one host).",
               [Q(f"count(max by (user_name, host_name) ({lag}))")], w=4),
        single("Export lag", "Age of the oldest finished record not yet acknowledged by the receiver (0 when "
               "caught up), per sidecar.", per_sidecar("max", lag), "s", w=5,
               steps=thresholds((None, "green"), (300, "orange"), (900, "red"))),
        single("Export failures in range", "Failed OTLP sends in the selected range, per sidecar.",
               per_sidecar("sum", over_range(sel("ocsight_export_failures_total", by=SIDECAR))), w=5,
               steps=thresholds((None, "green"), (1, "red"))),
        single("Skipped records", "Records the sidecar could not read and skipped, per sidecar.",
               per_sidecar("max", sel("ocsight_skipped_records", by=SIDECAR)), w=5,
               steps=thresholds((None, "green"), (1, "orange"))),
        single("Unpriced calls", "Model calls with no known price, by model; configure a price to bring it to 0.",
               [Q(total(across_instances(sel("ocsight_unpriced_calls", by=HISTOGRAM)), ("gen_ai_request_model",)),
                  "{{gen_ai_request_model}}")], w=5, steps=thresholds((None, "green"), (1, "orange"))),
    ], collapsed=True)
    return build("ocsight-overview", "ocsight / Overview", "Spend against budgets, tokens, cost, cache, sessions, "
                 "errors, and the health of the ocsight sidecars.", [budgets, usage, health])


def models() -> dm.Dashboard:
    model = ("gen_ai_request_model",)
    by = ("gen_ai_provider_name", *model)
    output_tokens = total(rate(sel("gen_ai_client_token_usage_sum", CHAT, OUTPUT, by=HISTOGRAM)), model)
    busy_seconds = total(rate(sel(f"{DURATION}_sum", CHAT, SUCCEEDED, by=HISTOGRAM)), model)
    latency = Row("Latency and throughput (calls made while the sidecar runs)", [
        ts("Chat latency p50 by model", "Median duration of a model call.",
           [Q(quantile(0.5, sel(f"{DURATION}_bucket", CHAT, by=HISTOGRAM), model), "{{gen_ai_request_model}}")], "s"),
        ts("Chat latency p95 by model", "95th percentile duration of a model call.",
           [Q(quantile(0.95, sel(f"{DURATION}_bucket", CHAT, by=HISTOGRAM), model), "{{gen_ai_request_model}}")],
           "s"),
        ts("Output tokens per second by model", "Output tokens divided by the time spent in successful model "
           "calls.", [Q(f"{output_tokens} / {busy_seconds}", "{{gen_ai_request_model}}")]),
        ts("Cost per call by model", "Average cost of one model call.",
           [Q(f"{total(rate(sel(COST)), model)} / {total(rate(sel(CALLS)), model)}", "{{gen_ai_request_model}}")],
           "currencyUSD"),
    ])
    volume = Row("Volume", [
        ts("Model calls by model", "Model calls per second, by model.",
           [Q(total(rate(sel(CALLS)), model), "{{gen_ai_request_model}}")], "reqps", stack=True),
        ts("Tokens by model", "Tokens per second, by model (all token types).",
           [Q(total(rate(sel(TOKENS)), model), "{{gen_ai_request_model}}")], stack=True),
        tabulate("Models in range", "Per provider and model in the selected range: calls, tokens, cost, cost per "
                 "call and failed calls.", [
                     ("Calls", total(over_range(sel(CALLS)), by), "short"),
                     ("Input tokens", total(over_range(sel(TOKENS, INPUT)), by), "short"),
                     ("Output tokens", total(over_range(sel(TOKENS, OUTPUT)), by), "short"),
                     ("Cost", total(over_range(sel(COST)), by), "currencyUSD"),
                     ("Cost per call", f"{total(over_range(sel(COST)), by)} / {total(over_range(sel(CALLS)), by)}",
                      "currencyUSD"),
                     ("Errors", total(over_range(sel(ERRORS)), by), "short")]),
    ])
    errors = Row("Errors", [
        ts("Error rate by model", "Failed model calls as a share of the model's calls.",
           [Q(share(rate(sel(ERRORS)), rate(sel(CALLS)), model), "{{gen_ai_request_model}}")], "percentunit"),
        ts("Error rate by model and error type", "Failed model calls of each error type as a share of the "
           "model's calls.", [Q(f"{total(rate(sel(ERRORS)), (*model, 'error_type'))} / ignoring(error_type) "
                                f"group_left {total(rate(sel(CALLS)), model)}",
                                "{{gen_ai_request_model}} {{error_type}}")], "percentunit"),
    ])
    return build("ocsight-models", "ocsight / Models and providers", "Latency, throughput, cost per call, volume and "
                 "errors of each model and provider.", [latency, volume, errors])


def sessions() -> dm.Dashboard:
    agent = ("gen_ai_agent_name",)
    subagent = 'ocsight_subagent="true"'
    activity = Row("Sessions and subagents", [
        ts("Sessions per hour", "Sessions started per hour, by agent.",
           [Q(f"3600 * {total(rate(sel(SESSIONS)), agent)}", "{{gen_ai_agent_name}}")], w=12, stack=True),
        single("Sessions in range", "Sessions started in the selected range.",
               [Q(total(over_range(sel(SESSIONS))))], w=4, h=8),
        single("Subagent share of cost", "Share of the cost in the selected range spent in subagent sessions.",
               [Q(share(over_range(sel(COST, subagent)), over_range(sel(COST))))], "percentunit", w=4, h=8),
        single("Subagent share of tokens", "Share of the tokens in the selected range used in subagent sessions.",
               [Q(share(over_range(sel(TOKENS, subagent)), over_range(sel(TOKENS))))], "percentunit", w=4, h=8),
    ])
    agents = Row("Agents", [
        ts("Cost by agent (USD per hour)", "Cost rate by agent (build, plan, general, ...).",
           [Q(f"3600 * {total(rate(sel(COST)), agent)}", "{{gen_ai_agent_name}}")], "currencyUSD", stack=True),
        ts("Tokens by agent", "Tokens per second, by agent.",
           [Q(total(rate(sel(TOKENS)), agent), "{{gen_ai_agent_name}}")], stack=True),
        ts("Subagent share over time", "Share of cost and of tokens spent in subagent sessions.",
           [Q(share(rate(sel(COST, subagent)), rate(sel(COST))), "cost"),
            Q(share(rate(sel(TOKENS, subagent)), rate(sel(TOKENS))), "tokens")], "percentunit", w=24, maximum=1),
        tabulate("Agents in range", "Per agent, in subagent sessions or not: cost, tokens, model calls and "
                 "sessions in the selected range.", [
                     ("Cost", total(over_range(sel(COST)), (*agent, "ocsight_subagent")), "currencyUSD"),
                     ("Tokens", total(over_range(sel(TOKENS)), (*agent, "ocsight_subagent")), "short"),
                     ("Model calls", total(over_range(sel(CALLS)), (*agent, "ocsight_subagent")), "short"),
                     ("Sessions", total(over_range(sel(SESSIONS)), (*agent, "ocsight_subagent")), "short")]),
    ])
    traces = Row("Traces (Tempo)", [
        traces_table("Latest sessions in Tempo", "The latest agent runs (one trace per root session, subagents "
                     "inside) with their session id, agent, project, tokens and cost; the trace id opens the trace "
                     "in Explore. Tempo panels ignore the Prometheus filters.",
                     '{ resource.service.name = "ocsight" && span.gen_ai.operation.name = "invoke_agent" } | '
                     "select(span.gen_ai.conversation.id, span.gen_ai.agent.name, span.ocsight.project, "
                     "span.gen_ai.usage.input_tokens, span.gen_ai.usage.output_tokens, span.gen_ai.usage.cost)"),
    ])
    search = (db.DashboardLink("Traces in Tempo").type(dm.DashboardLinkType.LINK).icon("external link")
              .tooltip("Search ocsight's traces in Explore").keep_time(False).include_vars(False)
              .url(explore_url("${tempo}", '{ resource.service.name = "ocsight" }')))
    return build("ocsight-sessions", "ocsight / Sessions and agents", "Sessions over time, cost and tokens by "
                 "agent, the subagents' share, and the latest session traces in Tempo.", [activity, agents, traces],
                 tempo_too=True, links=[search])


def tools() -> dm.Dashboard:
    tool, server = ("gen_ai_tool_name",), ("ocsight_tool_server",)
    failed = 'ocsight_tool_status="error"'
    calls = Row("Calls", [
        ts("Tool calls by tool", "Tool calls per second, by tool.",
           [Q(total(rate(sel(TOOLS)), tool), "{{gen_ai_tool_name}}")], "reqps", stack=True),
        ts("Tool calls by server", "Tool calls per second, by MCP server (\"opencode\" for OpenCode's own tools).",
           [Q(total(rate(sel(TOOLS)), server), "{{ocsight_tool_server}}")], "reqps", stack=True),
        tabulate("Tools in range", "Per tool and server in the selected range: calls, failed calls and error rate.",
                 [("Calls", total(over_range(sel(TOOLS)), (*tool, *server)), "short"),
                  ("Errors", total(over_range(sel(TOOLS, failed)), (*tool, *server)), "short"),
                  ("Error rate", share(over_range(sel(TOOLS, failed)), over_range(sel(TOOLS)), (*tool, *server)),
                   "percentunit")]),
    ])
    errors = Row("Errors", [
        ts("Tool error rate by tool", "Failed tool calls as a share of the tool's calls.",
           [Q(share(rate(sel(TOOLS, failed)), rate(sel(TOOLS)), tool), "{{gen_ai_tool_name}}")], "percentunit"),
        ts("Tool error rate by server", "Failed tool calls as a share of the server's calls.",
           [Q(share(rate(sel(TOOLS, failed)), rate(sel(TOOLS)), server), "{{ocsight_tool_server}}")],
           "percentunit"),
    ])
    buckets = sel(f"{DURATION}_bucket", 'gen_ai_operation_name="execute_tool"', by=HISTOGRAM)
    durations = Row("Durations (calls made while the sidecar runs)", [
        ts(f"Tool duration {name} by tool and server", f"{shown} duration of a tool call.",
           [Q(quantile(q, buckets, (*tool, *server)), "{{gen_ai_tool_name}} ({{ocsight_tool_server}})")], "s")
        for q, name, shown in ((0.5, "p50", "Median"), (0.95, "p95", "95th percentile"))
    ])
    return build("ocsight-tools", "ocsight / Tools and MCP servers", "Calls, error rates and durations of each "
                 "tool and MCP server.", [calls, errors, durations])


def team() -> dm.Dashboard:
    def usage_table(label: str, shown: str) -> Panel:
        by = (label,)
        return tabulate(f"Usage by {shown} in range", f"Per {shown} in the selected range: spend, tokens, model "
                        "calls, sessions and failed calls.", [
                            ("Spend", total(over_range(sel(COST)), by), "currencyUSD"),
                            ("Tokens", total(over_range(sel(TOKENS)), by), "short"),
                            ("Model calls", total(over_range(sel(CALLS)), by), "short"),
                            ("Sessions", total(over_range(sel(SESSIONS)), by), "short"),
                            ("Errors", total(over_range(sel(ERRORS)), by), "short")], w=12)

    def per(label: str, shown: str) -> list[Panel]:
        legend = f"{{{{{label}}}}}"
        return [
            ts(f"Cost by {shown} (USD per hour)", f"Cost rate by {shown}.",
               [Q(f"3600 * {total(rate(sel(COST)), (label,))}", legend)], "currencyUSD", w=6, stack=True),
            ts(f"Tokens by {shown}", f"Tokens per second, by {shown}.",
               [Q(total(rate(sel(TOKENS)), (label,)), legend)], w=6, stack=True),
            ts(f"Model calls by {shown}", f"Model calls per second, by {shown}.",
               [Q(total(rate(sel(CALLS)), (label,)), legend)], "reqps", w=6, stack=True),
            ts(f"Errors by {shown}", f"Failed model calls per second, by {shown}.",
               [Q(total(rate(sel(ERRORS)), (label,)), legend)], "reqps", w=6, stack=True),
        ]

    people = Row("Users and hosts", [usage_table("user_name", "user"), usage_table("host_name", "host"),
                                     *per("user_name", "user"), *per("host_name", "host")])
    who = ("user_name", "host_name", "ocsight_budget_period")
    budgets = Row("Budgets (all projects)", [
        tabulate("Spend against budgets by user", "Spend so far in the current period of each user and host "
                 "against the budget configured for that period (weekly spend has no budget).", [
                     ("Spent", spend("daily|weekly|monthly", who), "currencyUSD"),
                     ("Budget", budget("daily|monthly", who), "currencyUSD"),
                     ("Used", budget_used("daily|monthly", who), "percent")]),
        percent_bars("Daily budget used by user", "Today's spend as a percentage of each user's daily budget.",
                     budget_used("daily", ("user_name", "host_name")), SIDECAR_LEGEND),
        percent_bars("Monthly budget used by user", "This month's spend as a percentage of each user's monthly "
                     "budget.", budget_used("monthly", ("user_name", "host_name")), SIDECAR_LEGEND),
    ])
    return build("ocsight-team", "ocsight / Team", "Spend, tokens, calls, sessions and errors by user and host, and "
                 "each user's spend against their budgets.", [people, budgets])


DASHBOARDS = {"overview": overview, "models": models, "sessions": sessions, "tools": tools, "team": team}


def render(model: dm.Dashboard) -> str:
    return json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str]) -> int:
    outdir = Path(argv[0]) if argv else Path(__file__).resolve().parent / "dashboards"
    outdir.mkdir(parents=True, exist_ok=True)
    for name, make in DASHBOARDS.items():
        (outdir / f"{name}.json").write_text(render(make()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
