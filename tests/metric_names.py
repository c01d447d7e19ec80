"""The Prometheus metric contract of ocsight: every series name and its labels, in one place.

Dashboards, alert rules and exposition tests check against this so that a renamed metric or label breaks a test
rather than a panel. Scrape labels (`job`, `instance`) come from Prometheus and are listed apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

SCRAPE_LABELS: frozenset[str] = frozenset({"job", "instance"})
SIDECAR_LABELS: frozenset[str] = frozenset({"user_name", "host_name"})
USAGE_LABELS: frozenset[str] = SIDECAR_LABELS | {
    "gen_ai_provider_name",
    "ocsight_provider_id",
    "gen_ai_request_model",
    "gen_ai_agent_name",
    "ocsight_project",
    "ocsight_subagent",
}

_TOKEN_USAGE = SIDECAR_LABELS | {"gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model",
                                 "gen_ai_token_type"}
_DURATION = SIDECAR_LABELS | {"gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "error_type",
                              "gen_ai_tool_name", "ocsight_tool_server"}
_BUDGET = SIDECAR_LABELS | {"ocsight_budget_period", "ocsight_project"}


def _histogram(base: str, labels: frozenset[str]) -> dict[str, frozenset[str]]:
    return {f"{base}_bucket": labels | {"le"}, f"{base}_sum": labels, f"{base}_count": labels}


METRIC_LABELS: Mapping[str, frozenset[str]] = MappingProxyType({
    # counters
    "ocsight_tokens_total": USAGE_LABELS | {"gen_ai_token_type"},
    "ocsight_cost_usd_total": USAGE_LABELS | {"ocsight_cost_estimated"},
    "ocsight_model_calls_total": USAGE_LABELS,
    "ocsight_errors_total": USAGE_LABELS | {"error_type"},
    "ocsight_sessions_total": USAGE_LABELS,
    # tools are the largest label space: no agent, no subagent
    "ocsight_tool_calls_total": SIDECAR_LABELS | {"gen_ai_provider_name", "ocsight_provider_id", "gen_ai_request_model",
                                                  "ocsight_project", "gen_ai_tool_name", "ocsight_tool_status",
                                                  "ocsight_tool_server"},
    "ocsight_export_failures_total": SIDECAR_LABELS,
    # gauges
    "ocsight_spend_usd": _BUDGET,
    "ocsight_budget_usd": _BUDGET,
    "ocsight_unpriced_calls": SIDECAR_LABELS | {"gen_ai_provider_name", "ocsight_provider_id", "gen_ai_request_model"},
    "ocsight_export_lag_seconds": SIDECAR_LABELS,
    "ocsight_skipped_records": SIDECAR_LABELS,
    # histograms
    **_histogram("gen_ai_client_token_usage", _TOKEN_USAGE),
    **_histogram("gen_ai_client_operation_duration_seconds", _DURATION),
})

METRIC_NAMES: frozenset[str] = frozenset(METRIC_LABELS)
