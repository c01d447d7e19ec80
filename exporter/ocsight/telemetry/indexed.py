"""The index-derived metrics (`metrics.index_points`), built when a collection asks for them and
dropped once sent: never in the SDK's aggregation storage, which keeps every series it ever saw.

* OTLP: `WithIndexMetrics` wraps the metric exporter the SDK's periodic reader feeds. At every
  export (every metric interval, and the last one at shutdown) it builds the index's points as the
  SDK's own data classes and sends them with what the SDK collected (the histograms and the
  sidecar's health), in requests of at most `MAX_POINTS` points.
* Prometheus: `telemetry.prometheus_collector`, on the registry the SDK's Prometheus reader uses,
  builds the same points as metric families at every scrape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator

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

from ocsight.telemetry.metrics import Instrument, Point

log = logging.getLogger("ocsight.watch")

# The scope the instruments had as the SDK's (`meter_provider.get_meter("ocsight")`), the histograms' scope.
SCOPE = InstrumentationScope("ocsight")

# Points per request: a point with its labels takes 300 to 600 bytes, so a request stays far below
# the 4 MiB a gRPC receiver takes by default, and the memory an export needs stays small.
MAX_POINTS = 2000

Series = Callable[[], Iterable[tuple[Instrument, Iterable[Point]]]]


# -- OTLP ---------------------------------------------------------------------------------------------


def _metric(instrument: Instrument, data_points: list[NumberDataPoint]) -> Metric:
    data = (Sum(data_points=data_points, aggregation_temporality=AggregationTemporality.CUMULATIVE, is_monotonic=True)
            if instrument.counter else Gauge(data_points=data_points))
    return Metric(name=instrument.name, description=instrument.description, unit=instrument.unit, data=data)


def otlp_batches(series: Iterable[tuple[Instrument, Iterable[Point]]], start_ns: int, now_ns: int,
                 max_points: int = MAX_POINTS) -> Iterator[list[Metric]]:
    """The points as the SDK's data classes, in lists of at most `max_points` points (an instrument
    with more is split; a backend joins its series again by their labels). Counters are cumulative
    monotonic sums starting at `start_ns` (the same for every collection, so a backend sees one
    stream per series); gauges are gauges. An instrument without points is left out, as the SDK
    leaves it out. Built as they are asked for, so one list at a time is in memory."""
    batch: list[Metric] = []
    size = 0
    for instrument, points in series:
        start = start_ns if instrument.counter else 0
        data_points: list[NumberDataPoint] = []
        for attributes, value in points:
            data_points.append(NumberDataPoint(attributes=attributes, start_time_unix_nano=start,
                                               time_unix_nano=now_ns, value=value))
            if size + len(data_points) >= max_points:
                batch.append(_metric(instrument, data_points))
                yield batch
                batch, size, data_points = [], 0, []
        if data_points:
            batch.append(_metric(instrument, data_points))
            size += len(data_points)
    if batch:
        yield batch


def merge(data: MetricsData | None, resource: Resource, scope: InstrumentationScope,
          extra: list[Metric]) -> MetricsData:
    """`data` with `extra` added under `resource` and `scope`. The OTLP encoder keys resources and
    scopes by value (a second entry for one would replace the first), so they join the entries
    already there."""
    if not extra:
        return data or MetricsData(resource_metrics=[])
    resources = list(data.resource_metrics) if data else []
    for i, rm in enumerate(resources):
        if rm.resource == resource:
            scopes = list(rm.scope_metrics)
            for j, sm in enumerate(scopes):
                if sm.scope == scope:
                    scopes[j] = ScopeMetrics(scope=sm.scope, metrics=[*sm.metrics, *extra], schema_url=sm.schema_url)
                    break
            else:
                scopes.append(ScopeMetrics(scope=scope, metrics=extra, schema_url=scope.schema_url or ""))
            resources[i] = ResourceMetrics(resource=rm.resource, scope_metrics=scopes, schema_url=rm.schema_url)
            break
    else:
        resources.append(ResourceMetrics(resource=resource, schema_url=resource.schema_url or "", scope_metrics=[
            ScopeMetrics(scope=scope, metrics=extra, schema_url=scope.schema_url or "")]))
    return MetricsData(resource_metrics=resources)


class WithIndexMetrics(MetricExporter):
    """A metric exporter that sends what the SDK collected together with the index's metrics, built
    now; everything else (temporality, flushing, shutdown) is the wrapped exporter's.

    The SDK's reader exports at every interval and once more at shutdown, and always has something
    to export (the health gauges are observed at every collection), so the index's metrics go
    along every time: the first batch of them with the SDK's data, the rest in requests of their
    own (a long history's points fill more than the 4 MiB a gRPC receiver takes by default). A
    failed request ends the export: the next interval sends everything again."""

    def __init__(self, exporter: MetricExporter, resource: Resource, series: Series, start_ns: int,
                 max_points: int = MAX_POINTS) -> None:
        super().__init__(preferred_temporality=getattr(exporter, "_preferred_temporality", None),
                         preferred_aggregation=getattr(exporter, "_preferred_aggregation", None))
        self.exporter, self.resource, self.series, self.start_ns = exporter, resource, series, start_ns
        self.max_points = max_points

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        data: MetricsData | None = metrics_data  # goes with the first batch
        batches = None
        while True:
            try:
                batches = batches or otlp_batches(self.series(), self.start_ns, time.time_ns(), self.max_points)
                batch = next(batches, None)
            except Exception as e:  # noqa: BLE001 - the index unreadable now: send the rest, try again next time
                log.warning("reading the index for the metrics failed: %s", e)
                batch = None
            if batch is None:
                break
            result = self._send(merge(data, self.resource, SCOPE, batch), timeout_millis, **kwargs)
            if result is not MetricExportResult.SUCCESS:
                return result
            data = None
        return MetricExportResult.SUCCESS if data is None else self._send(data, timeout_millis, **kwargs)

    def _send(self, data: MetricsData, timeout_millis: float, **kwargs) -> MetricExportResult:
        return self.exporter.export(data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.exporter.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self.exporter.shutdown(timeout_millis=timeout_millis, **kwargs)
