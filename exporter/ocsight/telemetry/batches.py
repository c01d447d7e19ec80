"""Metric data handed to an exporter in parts of at most so many points.

The SDK's HTTP metric exporter takes `max_export_batch_size`, but splits the request only once it
has encoded all of it: a long history's thousands of points are then all in protobuf form at once,
several times the memory of the points themselves. Its gRPC exporter splits before encoding.
`Batched` gives the HTTP exporter what the gRPC one does: parts encoded one at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)


def split(data: MetricsData, max_points: int) -> Iterator[MetricsData]:
    """`data` in parts of at most `max_points` points, in order; a metric with more points is
    split across parts (a backend joins its series again by their labels), and each part keeps
    the resources and scopes of the points it holds."""
    resources: list[ResourceMetrics] = []
    size = 0
    for rm in data.resource_metrics:
        scopes: list[ScopeMetrics] = []
        for sm in rm.scope_metrics:
            metrics: list[Metric] = []
            for metric in sm.metrics:
                kind: Any = metric.data  # a Sum, Gauge or histogram: each holds its points the same way
                points = list(kind.data_points)
                start = 0
                while start < len(points):
                    take = points[start : start + max_points - size]
                    start += len(take)
                    size += len(take)
                    metrics.append(dataclasses.replace(metric, data=dataclasses.replace(kind, data_points=take)))
                    if size == max_points:
                        yield MetricsData(resource_metrics=[*resources, dataclasses.replace(
                            rm, scope_metrics=[*scopes, dataclasses.replace(sm, metrics=metrics)])])
                        resources, scopes, metrics, size = [], [], [], 0
            if metrics:
                scopes.append(dataclasses.replace(sm, metrics=metrics))
        if scopes:
            resources.append(dataclasses.replace(rm, scope_metrics=scopes))
    if resources:
        yield MetricsData(resource_metrics=resources)


class Batched(MetricExporter):
    """Hands `exporter` the data in parts of at most `max_points` points. A refused part ends the
    export: the reader's next export sends every cumulative total again."""

    def __init__(self, exporter: MetricExporter, max_points: int,
                 temporality: dict[type, AggregationTemporality]) -> None:
        super().__init__(preferred_temporality=temporality)  # what `exporter` was made with
        self.exporter, self.max_points = exporter, max_points

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        for part in split(metrics_data, self.max_points):
            if self.exporter.export(part, timeout_millis=timeout_millis, **kwargs) is not MetricExportResult.SUCCESS:
                return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.exporter.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.exporter.shutdown(timeout_millis=timeout_millis, **kwargs)
