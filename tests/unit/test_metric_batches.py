"""Metric data split into parts of at most so many points, and `Batched` handing them on one by one."""

from __future__ import annotations

from opentelemetry.sdk.metrics import Counter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from ocsight.telemetry.batches import Batched, split

CUMULATIVE = AggregationTemporality.CUMULATIVE


def point(i: int) -> NumberDataPoint:
    return NumberDataPoint(attributes={"i": i}, start_time_unix_nano=1, time_unix_nano=2, value=i)


def data() -> MetricsData:
    """Two resources; the first with two scopes: a sum of 5 points and a gauge of 2, then a sum of 3."""
    def metric(name: str, n: int, counter: bool = True) -> Metric:
        pts = [point(i) for i in range(n)]
        kind = Sum(data_points=pts, aggregation_temporality=CUMULATIVE, is_monotonic=True) if counter else Gauge(pts)
        return Metric(name=name, description="", unit="", data=kind)

    a, b = InstrumentationScope("a"), InstrumentationScope("b")
    return MetricsData(resource_metrics=[
        ResourceMetrics(resource=Resource({"r": 1}), schema_url="", scope_metrics=[
            ScopeMetrics(scope=a, schema_url="", metrics=[metric("a.sum", 5), metric("a.gauge", 2, counter=False)]),
            ScopeMetrics(scope=b, schema_url="", metrics=[metric("b.sum", 3)])]),
        ResourceMetrics(resource=Resource({"r": 2}), schema_url="", scope_metrics=[
            ScopeMetrics(scope=a, schema_url="", metrics=[metric("c.sum", 1)])]),
    ])


def flat(d: MetricsData) -> list[tuple]:
    """(resource, scope, metric, point) for every point, in order."""
    return [(rm.resource.attributes["r"], sm.scope.name, m.name, p.value) for rm in d.resource_metrics
            for sm in rm.scope_metrics for m in sm.metrics for p in m.data.data_points]


def test_parts_hold_every_point_once_in_order_none_over_the_limit():
    whole = flat(data())
    for size in (1, 2, 3, 4, 11, 100):
        parts = list(split(data(), size))
        assert [x for p in parts for x in flat(p)] == whole, size
        assert all(0 < len(flat(p)) <= size for p in parts)
        assert len(parts) == -(-len(whole) // size)


def test_a_split_metric_keeps_its_kind_and_temporality_in_every_part():
    parts = list(split(data(), 3))
    sums = [m for p in parts for rm in p.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
            if m.name == "a.sum"]
    assert [len(m.data.data_points) for m in sums] == [3, 2]
    assert all(isinstance(m.data, Sum) and m.data.is_monotonic and m.data.aggregation_temporality is CUMULATIVE
               for m in sums)


class Capture(MetricExporter):
    def __init__(self, refuse_after: int | None = None) -> None:
        super().__init__()
        self.parts: list[MetricsData] = []
        self.refuse_after = refuse_after

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        self.parts.append(metrics_data)
        if self.refuse_after is not None and len(self.parts) > self.refuse_after:
            return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        pass


def test_batched_hands_on_each_part_and_stops_at_a_refused_one():
    inner = Capture()
    assert Batched(inner, 4, {Counter: CUMULATIVE}).export(data()) is MetricExportResult.SUCCESS
    assert [len(flat(p)) for p in inner.parts] == [4, 4, 3]
    refusing = Capture(refuse_after=1)
    assert Batched(refusing, 4, {Counter: CUMULATIVE}).export(data()) is MetricExportResult.FAILURE
    assert len(refusing.parts) == 2
