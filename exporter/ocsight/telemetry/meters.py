"""The sidecar's meter providers and their readers: OTLP every interval, and Prometheus on request.

The SDK names and renders every instrument for each reader; the index's metrics reach OTLP through
`telemetry.collected` (no state kept between exports) and Prometheus as observable instruments of a
provider of their own (`prometheus_index_reader`), from the same mappings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from wsgiref.simple_server import WSGIServer

from opentelemetry.context import Context
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, Exemplar, ExemplarReservoir, MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource

from ocsight.errors import OcsightError

# The SDK folds every label set past 2,000 into one overflow series: a long history has more, and
# none may be lost.
CARDINALITY_LIMIT = 1_000_000


class NoExemplars(ExemplarReservoir):
    """A reservoir that keeps nothing. The SDK gives every series a reservoir of its own, which
    weighs as much as the series' value; the sidecar records no measurement inside a span, so
    there is never an exemplar to keep, and one reservoir serves every series."""

    def offer(self, value: float, time_unix_nano: int, attributes: Any, context: Context) -> None:
        pass

    def collect(self, point_attributes: Any) -> list[Exemplar]:
        return []


NO_EXEMPLARS = NoExemplars()


def no_exemplars(_aggregation: type) -> Callable[..., ExemplarReservoir]:
    return lambda **_parameters: NO_EXEMPLARS


def provider(resource: Resource, readers: Sequence[MetricReader]) -> MeterProvider:
    every_series = View(instrument_name="*", aggregation_cardinality_limit=CARDINALITY_LIMIT,
                        exemplar_reservoir_factory=no_exemplars)
    return MeterProvider(resource=resource, metric_readers=readers, views=[every_series],
                         exemplar_filter=AlwaysOffExemplarFilter())


def otlp_reader(exporter: MetricExporter, interval_s: float) -> PeriodicExportingMetricReader:
    """Exports every `interval_s`, and once more when the provider shuts down."""
    return PeriodicExportingMetricReader(exporter, export_interval_millis=interval_s * 1000)


def prometheus_index_reader() -> MetricReader:
    """A second Prometheus reader on the same registry, for the index's metrics: without the
    `target_info` the first reader serves already."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    return PrometheusMetricReader(disable_target_info=True)


def prometheus_reader(host: str, port: int) -> tuple[MetricReader, WSGIServer]:
    """The SDK's Prometheus reader and the HTTP server of its registry's /metrics; the server's
    `shutdown()` stops it, the provider's shutdown takes the reader off the registry."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import REGISTRY, start_http_server

    reader = PrometheusMetricReader()  # on the default registry, which the server serves
    try:
        server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as e:
        reader.shutdown()
        raise OcsightError(f"cannot serve Prometheus metrics on {host}:{port}: {e.strerror}") from None
    return reader, server
