"""Every PromQL expression of every dashboard, run against a real Prometheus scraping a real sidecar
fed with the recorded corpora: each must return data.

The sidecar reads the corpora with every other legacy session held back; Prometheus scrapes it; then
the held-back sessions arrive, as OpenCode would write them: the same series grow, so rates, ratios
and quantiles (the histograms take live calls only) all have something to show.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from corpus import store_dir
from dashboards import PromQL, load_dashboards, promql_expressions, substitute
from harness import free_port
from ocsight import reading
from ocsight.telemetry.watch import Sidecar, WatchOptions
from otlp_receiver import Receiver
from promstack import Prometheus, prometheus, prometheus_config, wait_until


def hold_back(storage: Path, aside: Path) -> list[tuple[Path, Path]]:
    """Moves every other session of a legacy tree (its file, messages and parts) aside; returns the moves to undo."""
    moves = []
    for i, session in enumerate(sorted(storage.glob("session/*/*.json"))):
        if i % 2:
            messages = storage / "message" / session.stem
            parts = [storage / "part" / m.stem for m in messages.glob("*.json")]
            for path in [session, messages, *parts]:
                if path.exists():
                    target = aside / path.relative_to(storage)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    path.rename(target)
                    moves.append((target, path))
    return moves


EXPRESSIONS = [q for dashboard in load_dashboards().values() for q in promql_expressions(dashboard)]


@pytest.fixture(scope="module")
def fed_prometheus(tmp_path_factory) -> Iterator[Prometheus]:
    root = tmp_path_factory.mktemp("fed")
    saved = dict(os.environ)
    os.environ.update({"XDG_CACHE_HOME": str(root / "cache"), "XDG_STATE_HOME": str(root / "state"),
                       "OTEL_EXPORTER_OTLP_TIMEOUT": "5"})
    legacy, upgrade, recent = root / "legacy", root / "upgrade", root / "recent"
    shutil.copytree(store_dir("opencode-1.1"), legacy)
    shutil.copytree(store_dir("upgrade-1.1-1.15"), upgrade)
    shutil.copytree(store_dir("opencode-1.18"), recent)
    later = hold_back(legacy / "storage", root / "later")
    receiver = Receiver()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{receiver.start_grpc()}"
    port = free_port()
    sidecar = Sidecar(WatchOptions(
        read=reading.ReadOptions(data_dirs=(str(legacy), str(upgrade), str(recent))), protocol="grpc", backfill=True,
        metric_interval=3600, prometheus_port=port, timezone="UTC",
        budgets=(("daily", None, 0.01), ("monthly", None, 0.05), ("monthly", "/nowhere", 1.0))))
    sidecar.baseline_ms = 0  # every call counts as live, so the histograms fill
    try:
        with prometheus(prometheus_config([f"127.0.0.1:{port}"])) as prom:
            sidecar.cycle()
            wait_until(lambda: prom.query("count_over_time(ocsight_tokens_total[1m]) >= 3"), 60,
                       what="three scrapes of the first sessions")
            for source, target in reversed(later):
                target.parent.mkdir(parents=True, exist_ok=True)
                source.rename(target)
            sidecar.cycle()
            for grown in ('increase(gen_ai_client_operation_duration_seconds_count{gen_ai_operation_name="execute_tool"}'
                          '[1m]) > 0', "increase(ocsight_model_calls_total[1m]) > 0"):
                wait_until(lambda: prom.query(grown), 60, what=f"the series growing: {grown}")
            yield prom
    finally:
        sidecar.close()
        receiver.stop()
        os.environ.clear()
        os.environ.update(saved)


def test_the_dashboards_hold_many_expressions():
    assert len(EXPRESSIONS) > 50


@pytest.mark.parametrize("query", EXPRESSIONS, ids=lambda q: q.where)
def test_every_dashboard_expression_returns_data(fed_prometheus: Prometheus, query: PromQL):
    result = fed_prometheus.query(substitute(query.expr))
    assert result, f"no data: {substitute(query.expr)}"
    if query.label:
        assert any(query.label in r["metric"] for r in result), f"no series with label {query.label}"
    values = [float(r["value"][1]) for r in result] if isinstance(result[0], dict) else [float(result[1])]
    assert any(not math.isnan(v) for v in values), f"only NaN: {substitute(query.expr)}"
