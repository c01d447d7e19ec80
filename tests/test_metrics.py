"""The sidecar's metrics: spend gauges, budgets, unpriced calls, tool durations, health, and who sent them."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from corpus import store_dir
from otlp_receiver import Receiver
from test_watch import labels, sidecar

from ocsight import reader
from ocsight.telemetry import metrics
from ocsight.telemetry.watch import ExportFailed

CORPUS = "opencode-1.18"
UTC = dt.timezone.utc


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    target = tmp_path / "opencode-data"
    shutil.copytree(store_dir(CORPUS), target)
    return target


def totals(store: Path, tz=UTC, mode: str = "auto") -> metrics.Totals:
    with reader.open_index(reader.ReadOptions(data_dirs=(str(store),))) as idx:
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
    port = receiver.start_grpc()
    receiver.stop_grpc()
    s = sidecar(store, receiver, monkeypatch, backfill=True)
    with pytest.raises(ExportFailed):
        s.cycle()
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


def test_a_store_with_thousands_of_label_sets_loses_none_to_the_sdks_overflow_series(tmp_path, receiver, monkeypatch,
                                                                                     cli):
    import storegen

    plan = storegen.plan_store(seed=4, sessions=900, projects=300, turns=(2, 3))
    store = tmp_path / "data"
    storegen.write_sqlite(plan, store / "opencode.db")
    receiver.start_grpc()
    s = sidecar(store, receiver, monkeypatch, backfill=True)
    s.cycle()
    s.close()
    (_kind, points), *_ = receiver.metric_points("ocsight.tool.calls")[-1:]
    assert len(points) > 2000  # past the SDK's default limit
    assert not any("otel.metric.overflow" in labels(p) for p in points)
    (_kind, points), *_ = receiver.metric_points("ocsight.tokens")[-1:]
    doc = cli("stats", "--json", "--data-dir", str(store)).json()
    assert sum(p.as_int for p in points) == doc["totals"]["tokens"]["total"]
