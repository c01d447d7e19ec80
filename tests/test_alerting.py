"""End to end: `ocsight watch`'s gauges -> Prometheus (scraping it, with the shipped rules) ->
Alertmanager (the shipped config) -> a webhook receiver in the test.

One stack per module (Prometheus' first scrape alone takes seconds): two real sidecars of one user on one host,
each on its own copy of a store that spent $2.50 today ($5.00 together); both have a $1 daily budget (the
sidecars of one user share their settings), "over" also a $100 monthly one. The shipped files are changed only where a test must be fast: rule groups evaluated
every second, Alertmanager's group_wait one second, and the `default` receiver given a webhook.
"""

from __future__ import annotations

import calendar
import datetime as dt
import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import storegen
from harness import free_port
from otlp_receiver import Receiver
from promstack import Alertmanager, Prometheus, WebhookReceiver, alertmanager, prometheus, prometheus_config, wait_until

DEPLOY = Path(__file__).parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "ocsight-alerts.yml"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"
SPENT = (1.75, 0.75)  # USD, the two model calls made a minute ago


@dataclass
class Stack:
    prometheus: Prometheus
    alertmanager: Alertmanager
    webhook: WebhookReceiver
    over: str  # instance (host:port) of the sidecar with a monthly budget too
    under: str  # instance of the other one
    started: float  # time.monotonic() when Prometheus was up


def noon_zone(now: dt.datetime) -> str:
    """A fixed-offset zone where it is about noon: no day or month ends while the test runs."""
    offset = now.astimezone(dt.timezone.utc).hour - 12  # hours behind UTC; Etc/GMT+N is UTC-N
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{offset:+d}"


def write_store(root: Path) -> Path:
    """A store whose only project spent SPENT a minute or so ago."""
    b = storegen.Builder()
    now = int(time.time() * 1000)
    session = b.session(b.project("/home/dev/webshop"), at=now - 120_000)
    b.user(session, now - 110_000)
    for i, usd in enumerate(SPENT):
        b.assistant(session, now - 90_000 + i * 30_000, storegen.tokens(1000, 200), cost=usd)
    root.mkdir(parents=True)
    storegen.write_sqlite(b.plan, root / "opencode.db")
    return root


def start_sidecar(stack: ExitStack, store: Path, home: Path, otlp_port: int, zone: str,
                  **budgets: float) -> str:
    """`ocsight watch --prometheus-port` with its own HOME and XDG dirs; returns its host:port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCSIGHT_", "OPENCODE_", "XDG_", "OTEL_"))}
    for var, sub in (("HOME", "home"), ("XDG_CONFIG_HOME", "config"), ("XDG_CACHE_HOME", "cache"),
                     ("XDG_STATE_HOME", "state"), ("XDG_DATA_HOME", "data")):
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / sub)
    env.update({"TZ": zone, "OCSIGHT_TIMEZONE": zone, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
                **{f"OCSIGHT_{k.upper()}": str(v) for k, v in budgets.items()}})
    log_path = home / "watch.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ocsight", "watch", "--data-dir", str(store), "--protocol", "grpc",
             "--interval", "0.5", "--prometheus-port", str(port)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    stack.callback(_stop, proc)

    def serving() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"ocsight watch exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return "\nocsight_spend_usd{" in r.read().decode()

    try:
        wait_until(serving, timeout=60, what=f"ocsight_spend_usd on the sidecar's /metrics (port {port})")
    except TimeoutError as e:
        raise AssertionError(f"{e}\n{log_path.read_text()[-3000:]}") from None
    return f"127.0.0.1:{port}"


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def rules_every_second(target: Path) -> Path:
    """The shipped rules with every group evaluated each second (a group's `interval` beats the global one)."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        group["interval"] = "1s"
    target.write_text(yaml.safe_dump(doc, sort_keys=False))
    return target


def alertmanager_to(webhook_url: str) -> str:
    """The shipped config, its `default` receiver posting to the test, every group_wait one second."""
    doc = yaml.safe_load(ALERTMANAGER_YML.read_text())
    receiver = next(r for r in doc["receivers"] if r["name"] == "default")
    receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    routes = [doc["route"]]
    while routes:
        route = routes.pop()
        if "group_wait" in route:
            route["group_wait"] = "1s"
        routes += route.get("routes", [])
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("alerting")
    zone = noon_zone(dt.datetime.now(dt.timezone.utc))
    store = write_store(tmp / "store")
    otlp = Receiver()
    otlp_port = otlp.start_grpc()
    with ExitStack() as es:
        es.callback(otlp.stop)
        webhook = es.enter_context(WebhookReceiver())
        am = es.enter_context(alertmanager(alertmanager_to(webhook.url), workdir=tmp / "alertmanager"))
        other = tmp / "store2"
        shutil.copytree(store, other)
        over = start_sidecar(es, store, tmp / "over", otlp_port, zone, budget_daily_usd=1, budget_monthly_usd=100)
        under = start_sidecar(es, other, tmp / "under", otlp_port, zone, budget_daily_usd=1)
        config = prometheus_config([over, under], alertmanager=f"127.0.0.1:{am.port}")
        prom = es.enter_context(prometheus(config, [rules_every_second(tmp / "rules.yml")], workdir=tmp / "prometheus"))
        yield Stack(prom, am, webhook, over, under, time.monotonic())


def _alerts(notification: dict, alertname: str) -> list[dict]:
    return [a for a in notification.get("alerts", []) if a["labels"].get("alertname") == alertname]


def test_a_daily_budget_exceeded_reaches_the_webhook_through_prometheus_and_alertmanager(stack: Stack):
    note = stack.webhook.wait_for(lambda n: bool(_alerts(n, "OcsightDailyBudgetExceeded")), timeout=60)
    took = time.monotonic() - stack.started
    [alert] = _alerts(note, "OcsightDailyBudgetExceeded")  # one alert for the user and host, not one per sidecar
    user, host = getpass.getuser(), socket.gethostname()
    expected = {"alertname": "OcsightDailyBudgetExceeded", "severity": "critical", "ocsight_budget_period": "daily",
                "ocsight_project": "*", "user_name": user, "host_name": host}
    assert {k: alert["labels"].get(k) for k in expected} == expected
    assert not {"job", "instance"} & set(alert["labels"])
    assert note["receiver"] == "default" and note["status"] == "firing" and alert["status"] == "firing"
    assert note["groupLabels"] == {"alertname": "OcsightDailyBudgetExceeded", "user_name": user, "host_name": host,
                                   "ocsight_project": "*"}
    annotations = alert["annotations"]
    assert annotations["summary"] == f"Daily AI budget exceeded by {user}@{host} (all projects)"
    assert "budget_daily_usd" in annotations["runbook"]
    assert took < 60


def test_the_daily_budget_alert_holds_the_spend_of_both_sidecars_of_the_user(stack: Stack):
    """The notification may have gone out after Prometheus' first scrape of one sidecar; the alert's
    description, evaluated each second, holds both sidecars' spend once both are scraped."""
    user, host = getpass.getuser(), socket.gethostname()
    want = (f"{user}@{host} has spent ${2 * sum(SPENT):.2f} today on all projects, over the daily budget of $1.00 "
            "(threshold: ocsight_spend_usd > ocsight_budget_usd, period daily).")
    wait_until(lambda: [a["annotations"]["description"] for a in stack.prometheus.alerts()
                        if a["labels"]["alertname"] == "OcsightDailyBudgetExceeded"] == [want],
               timeout=30, what="one daily budget alert with the summed spend")


def test_a_budget_above_the_summed_spend_does_not_fire(stack: Stack):
    prom = stack.prometheus
    wait_until(lambda: any(a["labels"]["alertname"] == "OcsightDailyBudgetExceeded" and a["state"] == "firing"
                           for a in prom.alerts()), timeout=60, what="the daily budget alert firing")
    # Both sidecars' spend was there when the rules fired; only "over" has a monthly budget.
    assert [float(s["value"][1]) for s in prom.query(
        'ocsight_spend_usd{ocsight_budget_period="monthly",ocsight_project="*"}')] == [sum(SPENT)] * 2
    assert {s["metric"]["instance"] for s in prom.query('ocsight_budget_usd{ocsight_budget_period="monthly"}')} == {
        stack.over}
    firing = {a["labels"]["alertname"] for a in prom.alerts()}
    assert "OcsightMonthlyBudgetExceeded" not in firing  # $100 monthly budget, $5.00 spent
    assert [a["labels"]["alertname"] for a in prom.alerts()].count("OcsightDailyBudgetExceeded") == 1


def test_every_shipped_rule_evaluates_without_error_in_prometheus(stack: Stack):
    def evaluated() -> list[dict]:
        rules = [r for g in stack.prometheus.rules() for r in g["rules"]]
        return rules if all(r.get("lastEvaluation", "").startswith("2") for r in rules) else []

    rules = wait_until(evaluated, timeout=30, what="every rule evaluated")
    assert len(rules) == 9
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []


def _rule_expr(alertname: str) -> str:
    return next(r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
                if r.get("alert") == alertname)


def test_the_export_lag_alert_reads_the_lag_of_each_scraped_sidecar(stack: Stack):
    """OcsightExportLagGrowing takes the lag where the job "ocsight" scrapes the sidecar itself: both sidecars
    here (two instances of one user and host), as the rule's own matching finds them (its thresholds lowered
    so that a lag of 0 passes)."""
    prom = stack.prometheus
    wait_until(lambda: len(prom.query('ocsight_export_lag_seconds and on(job, instance) up{job="ocsight"} == 1')) == 2,
               timeout=30, what="the scraped lag of both sidecars")
    lowered = (_rule_expr("OcsightExportLagGrowing").replace("ocsight_export_lag_seconds > 600", "ocsight_export_lag_seconds >= 0")
               .replace("deriv(ocsight_export_lag_seconds[10m]) > 0", "deriv(ocsight_export_lag_seconds[10m]) >= 0"))
    found = wait_until(lambda: (r := prom.query(lowered)) and len(r) == 2 and r, timeout=30,
                       what="the lag of both sidecars through the rule's matching")
    assert {r["metric"]["instance"] for r in found} == {stack.over, stack.under}


def test_two_live_sidecars_of_one_user_and_host_are_not_reported_absent(stack: Stack):
    prom = stack.prometheus
    wait_until(lambda: len(prom.query("ocsight_export_lag_seconds")) == 2, timeout=30, what="both heartbeats")
    assert prom.query(_rule_expr("OcsightSidecarAbsent")) == []
    assert not [a for a in prom.alerts() if a["labels"]["alertname"] == "OcsightSidecarAbsent"]


def _month_end_expr() -> str:
    """The scalar(...) the forecast rule extrapolates to, cut from the shipped rule."""
    expr = next(r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
                if r.get("alert") == "OcsightMonthlyBudgetForecast")
    start = expr.index("scalar(")
    depth = 0
    for i in range(start + len("scalar"), len(expr)):
        depth += {"(": 1, ")": -1}.get(expr[i], 0)
        if depth == 0:
            return expr[start:i + 1]
    raise AssertionError("unbalanced scalar(")


@pytest.mark.parametrize("when", [
    "2024-02-29T12:00:00", "2025-02-01T00:00:00", "2025-02-28T23:59:59", "2025-12-31T23:59:59",
    "2026-01-01T00:00:00", "2026-04-30T06:30:15", "now",
])
def test_the_forecast_extrapolates_to_the_end_of_the_utc_month(stack: Stack, when: str):
    at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) if when == "now" else \
        dt.datetime.fromisoformat(when).replace(tzinfo=dt.timezone.utc)
    days = calendar.monthrange(at.year, at.month)[1]
    month_end = at.replace(day=1, hour=0, minute=0, second=0) + dt.timedelta(days=days)
    _ts, value = stack.prometheus.query(_month_end_expr(), at=at.timestamp())
    assert float(value) == (month_end - at).total_seconds()
