"""The index-derived metrics for OTLP, built when an export asks for them and dropped once sent.

A long history has thousands of label sets. As the SDK's instruments, each would keep state in the
SDK for the sidecar's life (a few KB a series: a 10,000-session history's would be most of the
sidecar's memory); built at each export as the SDK's own data classes (`opentelemetry.sdk.metrics.
export`) from the index's cumulative totals, they cost memory only while sent. `WithIndexMetrics`
wraps the OTLP exporter the SDK's periodic reader feeds: every export (every interval, and the last
at shutdown) carries what the SDK collected (the histograms and the sidecar's health) and the
index's metrics, in requests of at most `MAX_POINTS` points.

The points come from the same pure mappings (`metrics.INDEX_METRICS`) the Prometheus endpoint's
observable instruments use (`telemetry.observed`), so both outputs tell one story.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

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

from ocsight.telemetry.metrics import INDEX_METRICS, Instrument, Rows

log = logging.getLogger("ocsight.watch")

# The scope of the sidecar's instruments (`meter_provider.get_meter("ocsight")`), the histograms'.
SCOPE = InstrumentationScope("ocsight")
# Points per request: a point with its labels takes 300 to 600 bytes, so a request stays far below
# the 4 MiB a gRPC receiver takes by default, and an export's memory stays small.
MAX_POINTS = 2000


def _metric(instrument: Instrument, points: list[NumberDataPoint]) -> Metric:
    data: Sum | Gauge = (
        Sum(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE, is_monotonic=True)
        if instrument.counter else Gauge(data_points=points))
    return Metric(name=instrument.name, description=instrument.description, unit=instrument.unit, data=data)


def index_metrics(rows_of: Callable[[str], Rows], identity: Mapping[str, str], start_ns: int, now_ns: int,
                  max_points: int = MAX_POINTS) -> Iterator[list[Metric]]:
    """The index's metrics in lists of at most `max_points` points (an instrument with more is
    split; a backend joins its series again by their labels). Counters are cumulative monotonic
    sums from `start_ns` (the same at every export, so a backend sees one stream per series);
    gauges are gauges; an instrument without points is left out, as the SDK leaves it out, and so is
    one whose totals cannot be read now (logged: the next export sends it again)."""
    batch: list[Metric] = []
    size = 0
    me = dict(identity)
    for instrument, source, mapping in INDEX_METRICS:
        start = start_ns if instrument.counter else 0
        points: list[NumberDataPoint] = []
        try:
            rows = rows_of(source)
        except Exception as e:  # noqa: BLE001 - an index being rebuilt, locked or gone: the rest still goes
            log.warning("reading the index for %s failed: %s", instrument.name, e)
            continue
        for attributes, value in mapping(rows, me):
            points.append(NumberDataPoint(attributes=attributes, start_time_unix_nano=start, time_unix_nano=now_ns,
                                          value=value))
            if size + len(points) >= max_points:
                batch.append(_metric(instrument, points))
                yield batch
                batch, size, points = [], 0, []
        if points:
            batch.append(_metric(instrument, points))
            size += len(points)
    if batch:
        yield batch


def merge(data: MetricsData | None, resource: Resource, extra: list[Metric]) -> MetricsData:
    """`data` with `extra` added under `resource` and `SCOPE`. The OTLP encoder keys resources and
    scopes by value (a second entry for one would replace the first), so they join the entries
    already there."""
    resources = list(data.resource_metrics) if data else []
    for i, rm in enumerate(resources):
        if rm.resource == resource:
            scopes = list(rm.scope_metrics)
            for j, sm in enumerate(scopes):
                if sm.scope == SCOPE:
                    scopes[j] = ScopeMetrics(scope=sm.scope, metrics=[*sm.metrics, *extra], schema_url=sm.schema_url)
                    break
            else:
                scopes.append(ScopeMetrics(scope=SCOPE, metrics=extra, schema_url=""))
            resources[i] = ResourceMetrics(resource=rm.resource, scope_metrics=scopes, schema_url=rm.schema_url)
            break
    else:
        resources.append(ResourceMetrics(resource=resource, schema_url=resource.schema_url or "",
                                         scope_metrics=[ScopeMetrics(scope=SCOPE, metrics=extra, schema_url="")]))
    return MetricsData(resource_metrics=resources)


class WithIndexMetrics(MetricExporter):
    """Sends what the SDK collected together with the index's metrics, built now; flushing and
    shutdown are the wrapped exporter's. The first request carries the SDK's data, the rest the
    index's points alone. A refused request ends the export: the next one sends every cumulative
    total again."""

    def __init__(self, exporter: MetricExporter, temporality: dict[type, AggregationTemporality],
                 resource: Resource, rows_of: Callable[[str], Rows], identity: Mapping[str, str],
                 start_ns: int, max_points: int = MAX_POINTS) -> None:
        super().__init__(preferred_temporality=temporality)  # what `exporter` was made with
        self.exporter, self.resource, self.rows_of = exporter, resource, rows_of
        self.identity, self.start_ns, self.max_points = dict(identity), start_ns, max_points

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        data: MetricsData | None = metrics_data  # goes with the first part
        for part in index_metrics(self.rows_of, self.identity, self.start_ns, time.time_ns(), self.max_points):
            if self.exporter.export(merge(data, self.resource, part), timeout_millis=timeout_millis,
                                    **kwargs) is not MetricExportResult.SUCCESS:
                return MetricExportResult.FAILURE
            data = None
        if data is None:
            return MetricExportResult.SUCCESS
        return self.exporter.export(data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.exporter.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.exporter.shutdown(timeout_millis=timeout_millis, **kwargs)
