"""The shipped alert rules and Alertmanager config: valid for the real tools, unit-tested, on the contract."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from metric_names import METRIC_LABELS, METRIC_NAMES, SCRAPE_LABELS
from promstack import AMTOOL, PROMTOOL, binary

DEPLOY = Path(__file__).parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "ocsight-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "ocsight-alerts.test.yml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"

LABEL_NAMES = frozenset().union(*METRIC_LABELS.values()) | SCRAPE_LABELS
BUDGET_ALERTS = {"OcsightDailyBudgetExceeded", "OcsightMonthlyBudgetExceeded", "OcsightMonthlyBudgetForecast",
                 "OcsightSpendSpike"}
# Series Prometheus makes itself, not ocsight: `up` of each scrape target (the export-lag alert takes the lag
# only from a direct scrape of the sidecar, matched to its target's `up`).
PROMETHEUS_SERIES = frozenset({"up"})
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
                   "group_right", "inf", "nan"}


def alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=False, capture_output=True, text=True, timeout=300)


def metric_names_in(expr: str) -> set[str]:
    """Series names a PromQL expression selects (without a parser: strings, matchers, ranges,
    groupings and offsets removed, then every identifier that is not a function or keyword)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\boffset\s+\w+", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w:.])[a-zA-Z_:][\w:]*", e):
        if not e[m.end():].lstrip().startswith("(") and m.group(0).lower() not in PROMQL_KEYWORDS:
            names.add(m.group(0))
    return names


def label_names_in(expr: str) -> set[str]:
    """Label names in matchers ({name="..."}) and in by/without/on/ignoring lists."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    out = {m for braces in re.findall(r"\{([^}]*)\}", e) for m in re.findall(r"([a-zA-Z_]\w*)\s*[=!]", braces)}
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", e):
        out |= {x.strip() for x in group.split(",") if x.strip()}
    return out


def test_the_rules_file_passes_promtool_check_rules():
    r = run(binary(PROMTOOL), "check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in r.stdout


def test_the_rule_unit_tests_pass_promtool_test_rules():
    r = run(binary(PROMTOOL), "test", "rules", str(RULE_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_alert_has_a_firing_and_a_not_firing_unit_test():
    cases: dict[str, set[bool]] = {}
    for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in group.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    for rule in alerts():
        assert cases.get(rule["alert"]) == {True, False}, rule["alert"]
    assert set(cases) <= {r["alert"] for r in alerts()}  # no test of an alert that does not exist


def test_every_firing_unit_test_expects_exact_labels_and_all_annotations():
    for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in group.get("alert_rule_test", []):
            for exp in case.get("exp_alerts") or []:
                assert exp["exp_labels"].get("severity"), (group["name"], case["eval_time"])
                assert set(exp["exp_annotations"]) == {"summary", "description", "runbook"}, group["name"]


def test_every_alert_has_a_severity_summary_description_and_runbook():
    for rule in alerts():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        for key in ("summary", "description", "runbook"):
            assert len(rule["annotations"].get(key, "").strip()) > 20, (rule["alert"], key)
        assert "threshold" in rule["annotations"]["description"], rule["alert"]  # thresholds are named


def test_alert_names_and_groups_follow_the_naming_scheme():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert all(g["name"].startswith("ocsight-") and g.get("interval") for g in groups)
    assert all(re.fullmatch(r"Ocsight[A-Z][A-Za-z]+", r["alert"]) for r in alerts())
    assert len({r["alert"] for r in alerts()}) == len(alerts())


def test_the_rules_use_only_metric_names_of_the_contract():
    used = set().union(*(metric_names_in(r["expr"]) for r in alerts()))
    assert {"ocsight_spend_usd", "ocsight_budget_usd", "ocsight_cost_usd_total", "ocsight_export_lag_seconds"} <= used
    assert used <= METRIC_NAMES | PROMETHEUS_SERIES, sorted(used - METRIC_NAMES - PROMETHEUS_SERIES)


def test_the_rules_use_only_label_names_of_the_contract():
    used = set().union(*(label_names_in(r["expr"]) for r in alerts()))
    assert {"ocsight_budget_period", "user_name", "host_name", "gen_ai_tool_name"} <= used
    assert used <= LABEL_NAMES, sorted(used - LABEL_NAMES)


def test_the_annotations_name_only_metrics_and_labels_of_the_contract():
    for rule in alerts():
        text = " ".join(rule["annotations"].values())
        words = set(re.findall(r"\b(?:ocsight|gen_ai)_\w+", text))
        assert words <= METRIC_NAMES | LABEL_NAMES, (rule["alert"], sorted(words - METRIC_NAMES - LABEL_NAMES))


def test_the_metric_name_extraction_sees_through_functions_matchers_and_offsets():
    expr = ('sum by (user_name) (increase(ocsight_cost_usd_total{a="x y"}[1h] offset 1w)) > 3 * '
            'predict_linear(ocsight_spend_usd[24h], scalar(days_in_month() - time() % 86400)) and on(job) up')
    assert metric_names_in(expr) == {"ocsight_cost_usd_total", "ocsight_spend_usd", "up"}
    assert label_names_in(expr) == {"user_name", "a", "job"}


def test_the_unit_tests_check_the_rules_own_month_end_expression():
    forecast = " ".join(next(r for r in alerts() if r["alert"] == "OcsightMonthlyBudgetForecast")["expr"].split())
    group = next(g for g in yaml.safe_load(RULE_TESTS.read_text())["tests"] if g["name"] == "seconds left in the month")
    exprs = {" ".join(t["expr"].split()) for t in group["promql_expr_test"]}
    assert len(exprs) == 1 and f"scalar({exprs.pop()})" in forecast


def test_the_alertmanager_config_passes_amtool_check_config():
    r = run(binary(AMTOOL), "check-config", str(ALERTMANAGER))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_the_default_receiver_has_no_integration():
    doc = yaml.safe_load(ALERTMANAGER.read_text())
    assert doc["route"]["receiver"] == "default"
    assert [r for r in doc["receivers"] if r["name"] == "default"] == [{"name": "default"}]


def test_the_commented_slack_and_email_examples_are_valid_once_uncommented(tmp_path: Path):
    """The examples are meant to be copied: uncommented as they are, amtool must accept them."""
    lines = []
    for line in ALERTMANAGER.read_text().splitlines():
        m = re.match(r"^(\s*)# (.*)$", line)
        if m and (re.match(r"(smtp_|slack_api_url)", m.group(2)) or re.match(r"(- |  )", m.group(2))):
            line = m.group(1) + m.group(2)
        lines.append(line)
    uncommented = tmp_path / "alertmanager.yml"
    uncommented.write_text("\n".join(lines) + "\n")
    receivers = {r["name"]: r for r in yaml.safe_load(uncommented.read_text())["receivers"]}
    assert set(receivers) == {"default", "slack", "email"}
    assert receivers["slack"]["slack_configs"] and receivers["email"]["email_configs"]
    r = run(binary(AMTOOL), "check-config", str(uncommented))
    assert r.returncode == 0, r.stdout + r.stderr


def _route_for(route: dict, labels: dict[str, str]) -> dict:
    """The first child route whose matchers all match (Alertmanager's order, `continue` unused)."""
    for child in route.get("routes", []):
        if all(_matches(m, labels) for m in child.get("matchers", [])):
            return {**route, **_route_for(child, labels)}
    return route


def _matches(matcher: str, labels: dict[str, str]) -> bool:
    name, op, value = re.fullmatch(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*', matcher).groups()
    got = labels.get(name, "")
    return {"=": got == value, "!=": got != value, "=~": bool(re.fullmatch(value, got)),
            "!~": not re.fullmatch(value, got)}[op]


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r["alert"])
def test_budget_alerts_repeat_twice_a_day_and_the_others_every_four_hours(rule: dict):
    route = yaml.safe_load(ALERTMANAGER.read_text())["route"]
    assert {"alertname", "user_name", "host_name", "ocsight_project"} <= set(route["group_by"])
    chosen = _route_for(route, {"alertname": rule["alert"], **rule["labels"]})
    assert chosen is not route  # every ocsight alert has its own route
    assert chosen["repeat_interval"] == ("12h" if rule["alert"] in BUDGET_ALERTS else "4h")


def test_the_inhibit_rules_name_alerts_that_exist_and_labels_they_carry():
    names = {r["alert"] for r in alerts()}
    for rule in yaml.safe_load(ALERTMANAGER.read_text())["inhibit_rules"]:
        for m in rule["source_matchers"] + rule["target_matchers"]:
            if m.startswith("alertname"):
                pattern = re.fullmatch(r'alertname\s*=~?\s*"?(.*?)"?', m).group(1)
                assert any(re.fullmatch(pattern, n) for n in names), m
        assert set(rule["equal"]) <= LABEL_NAMES


def test_an_absent_sidecar_silences_only_the_alerts_of_its_own_instance():
    """Two sidecars of one user and host, or one restarted with a new instance: the missing one must not hide
    the other's export-lag or unpriced-model alerts."""
    rule = next(r for r in yaml.safe_load(ALERTMANAGER.read_text())["inhibit_rules"]
                if "alertname = OcsightSidecarAbsent" in r["source_matchers"])
    assert {"user_name", "host_name", "instance"} <= set(rule["equal"])


def test_the_export_lag_alert_prefers_a_direct_scrape_of_the_sidecar():
    """The lag of a direct scrape where one exists; through OTLP only for a user and host no job "ocsight" scraped
    in the last hour (promtool cases: deploy/prometheus/tests, "export lag growing")."""
    expr = " ".join(next(r for r in alerts() if r["alert"] == "OcsightExportLagGrowing")["expr"].split())
    assert re.search(r'and on\s*\(job, instance\)\s*up\{job="ocsight"\} == 1 or', expr), expr
    assert expr.endswith('unless on(user_name, host_name) (max_over_time(ocsight_export_lag_seconds[1h]) '
                         'and on(job, instance) up{job="ocsight"})'), expr
    scrape = {j["job_name"]: j for j in yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())[
        "scrape_configs"]}
    assert scrape["ocsight"]["static_configs"] == [{"targets": ["ocsight:9464"]}]
    assert not scrape["ocsight"].get("honor_labels")  # job="ocsight", instance="ocsight:9464": the target's own


def test_the_spend_spike_sums_each_series_growth_never_its_total():
    """A total summed across instances counts an old instance the collector keeps and its successor twice: the
    spike takes each series' growth (a difference of the series with itself, or its increase()) before any sum."""
    expr = " ".join(next(r for r in alerts() if r["alert"] == "OcsightSpendSpike")["expr"].split())
    for m in re.finditer(r"ocsight_cost_usd_total", expr):
        before = expr[:m.start()]
        assert before.endswith(("clamp_min(", "last_over_time(", "increase(")), expr[:m.end()]


def test_the_forecast_waits_for_twenty_hours_of_history():
    expr = " ".join(next(r for r in alerts() if r["alert"] == "OcsightMonthlyBudgetForecast")["expr"].split())
    assert ("time() - min_over_time(timestamp(max without (job, instance) "
            "(ocsight_spend_usd{ocsight_budget_period=\"monthly\"}))[24h:5m]) >= 72000") in expr


def test_every_alert_is_tested_through_a_restart_with_a_new_instance():
    """A restart with a new instance (a new data directory or setting) keeps the old series 10 minutes next to
    the new ones: every alert has a promtool case across one (no false alert, none hidden)."""
    tested: set[str] = set()
    for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        if "new instance" in group["name"]:
            assert len({s["series"].split('instance="')[1].split('"')[0] for s in group["input_series"]
                        if 'instance="' in s["series"]}) >= 2, group["name"]
            tested |= {case["alertname"] for case in group.get("alert_rule_test", [])}
    assert tested == {r["alert"] for r in alerts()}
