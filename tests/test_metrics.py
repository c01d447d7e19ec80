"""The sidecar's metrics: spend gauges, budgets, unpriced calls, tool durations, health, and who sent them."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from corpus import store_dir
from ocsight import reading
from ocsight.telemetry import metrics, otlp
from otlp_receiver import Receiver
from test_watch import backfill_with_receiver_down, labels, sidecar

CORPUS = "opencode-1.18"
UTC = dt.timezone.utc


def totals(store: Path, tz=UTC, mode: str = "auto") -> metrics.Totals:
    with reading.open_index(reading.ReadOptions(data_dirs=(str(store),))) as idx:
        path = idx.path
    return metrics.Totals(lambda: path, mode, tz)


def report_period(cli, store: Path, command: str) -> dict:
    doc = cli(command, "--json", "-z", "UTC", "--data-dir", str(store)).json()
    (only,) = doc["periods"]  # the corpus was recorded within one day
    return only


def spend_of(rows, period: str) -> dict[str, float]:
    return {project: usd for p, project, usd in rows if p == period}


def test_spend_gauges_hold_the_current_day_week_and_month_as_the_reports_do(store, cli):
    day = dt.date.fromisoformat(report_period(cli, store, "daily")["period"])
    rows = totals(store).spend(dt.datetime.combine(day, dt.time(23, 59), UTC))
    for period, command in (("daily", "daily"), ("weekly", "weekly"), ("monthly", "monthly")):
        assert spend_of(rows, period)["*"] == pytest.approx(report_period(cli, store, command)["cost"]["usd"], abs=1e-9)


def test_spend_gauges_split_by_project_add_up_to_the_total(store, cli):
    day = dt.date.fromisoformat(report_period(cli, store, "daily")["period"])
    rows = totals(store).spend(dt.datetime.combine(day, dt.time(23, 59), UTC))
    for period in ("daily", "weekly", "monthly"):
        by_project = spend_of(rows, period)
        assert len(by_project) > 2 and sum(v for k, v in by_project.items() if k != "*") == pytest.approx(by_project["*"], abs=1e-12)


def test_the_next_day_starts_a_new_daily_spend(store, cli):
    day = dt.date.fromisoformat(report_period(cli, store, "daily")["period"])
    rows = totals(store).spend(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 0), UTC))
    assert spend_of(rows, "daily") == {"*": 0.0}


def test_period_starts_follow_the_time_zone_across_a_dst_change():
    paris = ZoneInfo("Europe/Paris")
    starts = metrics.period_starts(dt.datetime(2026, 3, 31, 12, 0, tzinfo=paris))  # DST began on the 29th
    assert starts["monthly"].isoformat() == "2026-03-01T00:00:00+01:00"
    assert starts["weekly"].isoformat() == "2026-03-30T00:00:00+02:00"
    assert starts["daily"].isoformat() == "2026-03-31T00:00:00+02:00"


def test_unpriced_calls_are_counted_per_model(store, cli):
    doc = cli("stats", "--json", "--data-dir", str(store)).json()
    got = {(p, m): n for p, m, n in totals(store).unpriced() if n}
    assert got == {(u["provider"], u["model"]): u["messages"] for u in doc["unpriced_models"]}


def test_every_point_carries_the_sidecars_user_and_host(store, receiver, monkeypatch):
    receiver.start_grpc()
    s = sidecar(store, receiver, monkeypatch, backfill=True, budgets=(("daily", None, 1.0),))
    s.baseline_ms = 0
    s.cycle()
    s.close()
    names = set()
    for req in receiver.metrics:
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in getattr(m, m.WhichOneof("data")).data_points:
                        names.add(m.name)
                        a = labels(p)
                        assert a["user.name"] == s.identity["user.name"] and a["host.name"], m.name
    assert {"ocsight.spend.usd", "ocsight.budget.usd", "ocsight.unpriced.calls", "ocsight.export.lag"} <= names


def test_live_tool_calls_go_into_the_duration_histogram_as_execute_tool(store, receiver, monkeypatch):
    receiver.start_grpc()
    s = sidecar(store, receiver, monkeypatch, backfill=True)
    s.baseline_ms = 0
    s.cycle()
    s.close()
    (_kind, points), *_ = receiver.metric_points("gen_ai.client.operation.duration")[-1:]
    tools = [labels(p) for p in points if labels(p)["gen_ai.operation.name"] == "execute_tool"]
    assert {a["gen_ai.tool.name"] for a in tools} >= {"bash", "read"}
    assert all(a["ocsight.tool.server"] == "opencode" and a["gen_ai.request.model"] for a in tools)
    assert any(a.get("error.type") == "tool_error" for a in tools)  # the corpus' failing read


def test_export_lag_grows_while_the_receiver_is_down_and_clears_once_it_acknowledges(store, receiver, monkeypatch):
    s, port = backfill_with_receiver_down(store, receiver, monkeypatch)
    first = s.lag_s()
    time.sleep(0.2)
    assert first > 0 and s.lag_s() > first
    receiver.start_grpc(port)
    s.cycle()
    s.close()
    assert s.lag_s() == 0.0


@pytest.mark.parametrize("corpus", ["opencode-1.18", "opencode-1.1", "upgrade-1.1-1.15"])
def test_each_session_is_counted_once_so_the_series_add_up_to_the_reports_sessions(corpus, tmp_path, cli):
    target = tmp_path / "data"
    shutil.copytree(store_dir(corpus), target)
    doc = cli("stats", "--json", "--data-dir", str(target)).json()
    assert sum(row[-1] for row in totals(target).sessions()) == doc["totals"]["sessions"]


def test_failed_and_successful_calls_of_one_label_set_add_up_in_every_counter(tmp_path, receiver, monkeypatch, cli):
    """An observable instrument keeps one observation per label set: failed calls must not replace the rest."""
    import storegen

    b = storegen.Builder()
    session = b.session(b.project())
    t = storegen.BASE_MS
    b.assistant(session, t + 1000, storegen.tokens(input=100, output=10), cost=0.5)
    b.assistant(session, t + 2000, storegen.tokens(input=7, output=3), cost=0.25, error="APIError")
    store = tmp_path / "data"
    storegen.write_sqlite(b.plan, store / "opencode.db")
    receiver.start_grpc()
    s = sidecar(store, receiver, monkeypatch, backfill=True)
    s.cycle()
    s.close()

    def total(name: str, **match: str) -> float:
        (_kind, points), *_ = receiver.metric_points(name)[-1:]
        return sum(p.as_int or p.as_double for p in points if match.items() <= labels(p).items())

    assert total("ocsight.tokens", **{"gen_ai.token.type": "input"}) == 107
    assert total("ocsight.cost.usd") == pytest.approx(0.75)
    assert total("ocsight.model.calls") == 2
    assert total("ocsight.errors", **{"error.type": "APIError"}) == 1


def last_collection(receiver: Receiver, name: str) -> list:
    """Every point of `name` from the last export: a long history's points come in several requests."""
    points = [p for _kind, pts in receiver.metric_points(name) for p in pts]
    last = max((p.time_unix_nano for p in points), default=None)
    return [p for p in points if p.time_unix_nano == last]


@pytest.mark.parametrize("proto", ["grpc", "http/protobuf"])
def test_a_store_with_thousands_of_label_sets_loses_none_to_the_sdks_overflow_series(tmp_path, receiver, monkeypatch,
                                                                                     cli, proto: str):
    import storegen

    plan = storegen.plan_store(seed=4, sessions=900, projects=300, turns=(2, 3))
    store = tmp_path / "data"
    storegen.write_sqlite(plan, store / "opencode.db")
    receiver.start_grpc() if proto == "grpc" else receiver.start_http()
    s = sidecar(store, receiver, monkeypatch, proto, backfill=True)
    s.cycle()
    s.close()
    points = last_collection(receiver, "ocsight.tool.calls")
    assert len(points) > 2000  # past the SDK's default limit
    assert not any("otel.metric.overflow" in labels(p) for p in points)
    assert len({tuple((kv.key, str(kv.value)) for kv in p.attributes) for p in points}) == len(points)
    doc = cli("stats", "--json", "--data-dir", str(store)).json()
    assert sum(p.as_int for p in last_collection(receiver, "ocsight.tokens")) == doc["totals"]["tokens"]["total"]
    # in requests a gRPC receiver takes (4 MiB by default), however long the history
    assert len(receiver.metrics) > 1
    assert all(sum(len(getattr(m, m.WhichOneof("data")).data_points) for rm in req.resource_metrics
                   for sm in rm.scope_metrics for m in sm.metrics) <= otlp.MAX_POINTS for req in receiver.metrics)


# -- one rendering: the SDK's, for OTLP and Prometheus alike -------------------------------------------

PROMETHEUS_NAMES = {"ocsight.tokens": "ocsight_tokens_total", "ocsight.cost.usd": "ocsight_cost_usd_total",
                    "ocsight.model.calls": "ocsight_model_calls_total", "ocsight.errors": "ocsight_errors_total",
                    "ocsight.sessions": "ocsight_sessions_total", "ocsight.tool.calls": "ocsight_tool_calls_total",
                    "ocsight.unpriced.calls": "ocsight_unpriced_calls", "ocsight.budget.usd": "ocsight_budget_usd",
                    "ocsight.spend.usd": "ocsight_spend_usd"}
SCOPE_LABELS = {"otel_scope_name": "ocsight", "otel_scope_version": "", "otel_scope_schema_url": ""}
BUDGETS = (("daily", None, 5.0), ("monthly", None, 300.0), ("monthly", "/somewhere/shop", 100.0))


def scraped(text: str) -> dict[tuple[str, frozenset], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name in PROMETHEUS_NAMES.values()}


def test_the_prometheus_endpoint_serves_the_same_series_and_values_as_otlp(store, receiver, monkeypatch):
    import urllib.request

    from harness import free_port
    from metric_names import METRIC_LABELS

    receiver.start_grpc()
    port = free_port()
    s = sidecar(store, receiver, monkeypatch, backfill=True, prometheus_port=port, budgets=BUDGETS)
    try:
        s.cycle()
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        s.close()  # flushes the metrics over OTLP
    want = {}
    for name, prom in PROMETHEUS_NAMES.items():
        points = last_collection(receiver, name)
        assert points, name
        for p in points:
            attrs = {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in p.attributes}
            got = {k.replace(".", "_"): ({True: "true", False: "false"}[v] if isinstance(v, bool) else v)
                   for k, v in attrs.items()}
            assert set(got) == METRIC_LABELS[prom], prom
            want[(prom, frozenset({**got, **SCOPE_LABELS}.items()))] = p.as_int if p.HasField("as_int") else p.as_double
    assert scraped(text) == want
    assert sum(v for (name, _labels), v in want.items() if name == "ocsight_budget_usd") == 405.0


def test_counters_keep_their_start_time_from_one_export_to_the_next_and_gauges_have_none(store, receiver,
                                                                                         monkeypatch):
    receiver.start_grpc()
    s = sidecar(store, receiver, monkeypatch, backfill=True)
    s.cycle()
    s.metric_reader.collect()
    s.cycle()
    s.close()
    first, second = [points for _kind, points in receiver.metric_points("ocsight.tokens")]

    def starts(points) -> dict[tuple, int]:
        return {tuple((kv.key, str(kv.value)) for kv in p.attributes): p.start_time_unix_nano for p in points}

    assert starts(first) == starts(second)  # one cumulative stream per series
    assert all(0 < p.start_time_unix_nano < p.time_unix_nano for p in first)
    assert first[0].time_unix_nano < second[0].time_unix_nano
    assert [p.as_int for p in first] == [p.as_int for p in second]
    (_kind, gauges), *_ = receiver.metric_points("ocsight.spend.usd")
    assert all(p.start_time_unix_nano == 0 for p in gauges)


class Capture:
    """A metric exporter keeping what it is given."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

        self.requests: list = []
        self.result = MetricExportResult
        MetricExporter.__init__(self)

    def export(self, data, timeout_millis: float = 10_000, **kwargs):
        self.requests.append(data)
        return self.result.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        pass


def names(data) -> dict[str, int]:
    """Metric name -> points, in one request."""
    return {m.name: len(m.data.data_points) for rm in data.resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics}


def captured_sidecar(store: Path, receiver: Receiver, monkeypatch, capture: Capture):
    from ocsight.telemetry.watch import Sidecar, WatchOptions

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.start_grpc()}")
    s = Sidecar(WatchOptions(read=reading.ReadOptions(data_dirs=(str(store),)), protocol="grpc", backfill=True,
                             metric_interval=3600, budgets=BUDGETS), metric_exporter=capture)
    s.baseline_ms = 0  # every call live: the histograms have points too
    s.cycle()
    return s


def test_every_metric_goes_under_one_resource_the_index_ones_and_histograms_under_one_ocsight_scope(
        store, receiver, monkeypatch):
    capture = Capture()
    s = captured_sidecar(store, receiver, monkeypatch, capture)
    try:
        s.metric_reader.collect()
        (only,) = capture.requests
        assert len(only.resource_metrics) == 1
        scopes = {sm.scope.name: {m.name for m in sm.metrics} for sm in only.resource_metrics[0].scope_metrics}
        assert set(scopes) == {"ocsight", "ocsight.sidecar"}
        assert {i.name for i in metrics.INSTRUMENTS} | {"gen_ai.client.token.usage",
                                                        "gen_ai.client.operation.duration"} == scopes["ocsight"]
    finally:
        s.close()


def test_the_index_is_read_once_per_change_and_the_instruments_sharing_a_read_agree(store, receiver, monkeypatch):
    capture = Capture()
    s = captured_sidecar(store, receiver, monkeypatch, capture)
    reads: list[str] = []
    for source, read in list(s.snapshot.read.items()):
        def counted(source=source, read=read):
            reads.append(source)
            return read()
        s.snapshot.read[source] = counted
    try:
        s.metric_reader.collect()
        s.metric_reader.collect()
        # tokens, cost and calls share one read of the usage totals; nothing changed between collections
        assert sorted(reads) == sorted(["usage", "errors", "sessions", "tools", "unpriced", "budgets", "spend",
                                        "budgets", "spend"])
        reads.clear()
        s.snapshot.invalidate()  # as a cycle does when the refresh changed the index
        s.metric_reader.collect()
        assert sorted(reads) == sorted(["usage", "errors", "sessions", "tools", "unpriced", "budgets", "spend"])
        first, second, third = [names(r) for r in capture.requests]
        assert first == second == third
    finally:
        s.close()


def test_an_unreadable_index_still_sends_the_sidecars_health_and_the_next_collection_has_it_all(
        store, receiver, monkeypatch, caplog):
    capture = Capture()
    s = captured_sidecar(store, receiver, monkeypatch, capture)
    try:
        def unreadable():
            raise sqlite3.OperationalError("database is locked")

        readable = dict(s.snapshot.read)
        s.snapshot.read.update({source: unreadable for source in ("usage", "tools")})
        s.snapshot.invalidate()
        s.metric_reader.collect()  # logged by the SDK, never raised
        got = names(capture.requests[-1])
        assert "ocsight.export.lag" in got and "ocsight.errors" in got
        assert not {"ocsight.tokens", "ocsight.cost.usd", "ocsight.model.calls", "ocsight.tool.calls"} & set(got)
        assert "database is locked" in caplog.text

        s.snapshot.read.update(readable)
        s.metric_reader.collect()
        assert {"ocsight.tokens", "ocsight.tool.calls"} <= set(names(capture.requests[-1]))
    finally:
        s.close()
