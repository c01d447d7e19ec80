"""OTLP wiring: the resource, span and metric exporters (gRPC or HTTP/protobuf), and sending a batch
of spans with the IDs and times `telemetry.spans` chose.

Endpoints, headers, TLS, timeouts, `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` are the SDK's
standard `OTEL_*` variables; ocsight picks the protocol and adds user, host and a stable instance ID.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.sdk.metrics import Counter, Histogram, ObservableCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExporter
from opentelemetry.sdk.resources import (
    HOST_NAME,
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_VERSION,
    TELEMETRY_SDK_LANGUAGE,
    TELEMETRY_SDK_NAME,
    TELEMETRY_SDK_VERSION,
    OTELResourceDetector,
    Resource,
)
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.sdk.version import __version__ as sdk_version
from opentelemetry.util.types import AnyValue

from ocsight import __version__
from ocsight.errors import EXIT_USAGE, OcsightError
from ocsight.telemetry.readable import readable_spans
from ocsight.telemetry.spans import SpanData

PROTOCOLS = ("grpc", "http/protobuf")
SCOPE = InstrumentationScope("ocsight", __version__)
# Metric points per request: a long history has thousands of label sets, and a point with its labels
# takes 300 to 600 bytes, so a request stays far below the 4 MiB a gRPC receiver takes by default.
MAX_POINTS = 2000
USER_NAME = "user.name"


def protocol(explicit: str | None = None) -> str:
    value = explicit or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if value not in PROTOCOLS:
        raise OcsightError(f"unknown OTLP protocol {value!r} (choose grpc or http/protobuf)", EXIT_USAGE)
    return value


class FixedResource(Resource):
    """A resource hashed once, when made. The SDK's span encoder groups every span by its resource,
    hashing the resource anew for each span, and that hash serialises all of its attributes; a
    resource never changes, so neither does its hash."""

    def __init__(self, attributes: Mapping[str, AnyValue], schema_url: str | None = None) -> None:
        super().__init__(attributes, schema_url)
        self.fixed_hash = super().__hash__()

    def __hash__(self) -> int:
        return self.fixed_hash


@dataclass(frozen=True)
class GivenIdentity:
    """What the settings say the sidecar is (None: not said)."""

    user_name: str | None = None
    host_name: str | None = None
    instance_id: str | None = None


def resource(data_dirs: Sequence[Path], given: GivenIdentity = GivenIdentity()) -> Resource:
    """ocsight's service, user, host and instance, each from OTEL_RESOURCE_ATTRIBUTES when it names
    one, else from the settings, else detected: the OS user, the host name, and for the instance a
    hash of user, host and the resolved data directories. A collector's Prometheus exporter makes
    its series' `instance` of `service.instance.id`, so the ID must not change when the sidecar
    restarts, and must differ between two sidecars of one user on one host.

    `Resource.create` is not used: it adds a random `service.instance.id` for every process."""
    env = dict(OTELResourceDetector().detect().attributes)  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
    user = str(env.get(USER_NAME) or given.user_name or os_user())
    host = str(env.get(HOST_NAME) or given.host_name or socket.gethostname())
    instance = str(env.get(SERVICE_INSTANCE_ID) or given.instance_id or instance_id(user, host, data_dirs))
    base: dict[str, AnyValue] = {
        TELEMETRY_SDK_LANGUAGE: "python", TELEMETRY_SDK_NAME: "opentelemetry", TELEMETRY_SDK_VERSION: sdk_version,
        SERVICE_NAME: "ocsight", SERVICE_VERSION: __version__}
    return FixedResource({**base, **env, USER_NAME: user, HOST_NAME: host, SERVICE_INSTANCE_ID: instance})


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def instance_id(user: str, host: str, data_dirs: Sequence[Path]) -> str:
    """The same for the same user, host and directories (in any order, by any path to them)."""
    dirs = sorted(str(Path(d).resolve()) for d in data_dirs)
    return hashlib.sha256("\n".join([user, host, *dirs]).encode()).hexdigest()[:16]


def identity(res: Resource) -> dict[str, str]:
    """The user and host every metric point carries: the collector's Prometheus exporter keeps
    resource attributes out of the labels, and one collector serves many sidecars."""
    return {k: str(res.attributes[k]) for k in ("user.name", "host.name") if k in res.attributes}


# Cumulative sums and histograms: a restarted sidecar goes on from the index's totals.
TEMPORALITY: dict[type, AggregationTemporality] = {
    Counter: AggregationTemporality.CUMULATIVE, ObservableCounter: AggregationTemporality.CUMULATIVE,
    Histogram: AggregationTemporality.CUMULATIVE}


def span_exporter(proto: str, timeout: float | None = None) -> SpanExporter:
    """The SDK's OTLP span exporter for the protocol, configured by the standard variables."""
    if proto == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return Grpc(timeout=timeout)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    return Http(timeout=timeout)


def metric_exporter(proto: str, timeout: float | None = None) -> MetricExporter:
    """The SDK's OTLP metric exporter for the protocol: cumulative sums and histograms (a restarted
    sidecar goes on from the index's totals), in requests of at most `MAX_POINTS` points, encoded
    one request at a time (`telemetry.batches`)."""
    temporality = TEMPORALITY
    if proto == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        return Grpc(timeout=timeout, preferred_temporality=temporality, max_export_batch_size=MAX_POINTS)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    from ocsight.telemetry.batches import Batched

    http = Http(timeout=timeout, preferred_temporality=temporality, max_export_batch_size=MAX_POINTS)
    return Batched(http, MAX_POINTS, temporality)


def export_spans(exporter: SpanExporter, spans: Sequence[SpanData], res: Resource) -> bool:
    """Sends one batch; True when the receiver acknowledged it."""
    if not spans:
        return True
    return exporter.export(readable_spans(spans, res, SCOPE)) == SpanExportResult.SUCCESS
