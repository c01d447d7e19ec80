"""The SDK's OTLP span exporters, fed ready-made requests (`telemetry.encode`).

The SDK keeps what it is good at: endpoint, headers, TLS, compression, timeouts and retries from the
standard `OTEL_EXPORTER_OTLP_*` variables. The hooks taken over are internal to the exporter
packages, so those are pinned in pyproject.toml and both protocols are tested against real receivers.
"""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SpanExportResult


def _count(request: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


class GrpcRequestExporter(GrpcSpanExporter):
    def _translate_data(self, data: ExportTraceServiceRequest) -> ExportTraceServiceRequest:  # type: ignore[override]
        return data

    def _count_data(self, data: ExportTraceServiceRequest) -> int:  # type: ignore[override]
        return _count(data)


class HttpRequestExporter(HttpSpanExporter):
    def export(self, request: ExportTraceServiceRequest) -> SpanExportResult:  # type: ignore[override]
        if self._shutdown:
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(_count(request)) as result:
            sent = self._client.export(request.SerializePartialToString())
            if not sent.success:
                result.error = sent.error
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
