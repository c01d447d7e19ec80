"""OTLP trace requests built straight from `SpanData`.

A backfill spends most of its time encoding: going through the SDK's `ReadableSpan` and its
generic encoder costs about twice what building the protobuf messages directly does. Attribute
values repeat across a batch (operation, provider, model, agent, project, tool), so each distinct
key/value pair is built once per request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from ocsight.telemetry.spans import KIND_CLIENT, SpanData

# What the SDK's encoder sets on every local span: the parent's is-remote bit is known (and false).
FLAGS = 0x100


def any_value(v: object) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[any_value(x) for x in v]))
    return AnyValue(string_value=str(v))


def key_values(attributes: Mapping[str, object]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()]


def trace_request(spans: Sequence[SpanData], resource: Mapping[str, object], scope: tuple[str, str]
                  ) -> ExportTraceServiceRequest:
    built: dict[tuple[str, str], KeyValue] = {}

    def attrs(items: Iterable[tuple[str, object]]) -> list[KeyValue]:
        out = []
        for k, v in items:
            if v.__class__ is str:  # names repeat; counts, costs and IDs hardly ever do
                kv = built.get((k, v))
                if kv is None:
                    kv = built[(k, v)] = KeyValue(key=k, value=AnyValue(string_value=v))
            else:
                kv = KeyValue(key=k, value=any_value(v))
            out.append(kv)
        return out

    pb_spans = [
        Span(trace_id=s.trace_id.to_bytes(16, "big"), span_id=s.span_id.to_bytes(8, "big"),
             parent_span_id=s.parent_id.to_bytes(8, "big") if s.parent_id else b"", name=s.name,
             kind=Span.SPAN_KIND_CLIENT if s.kind == KIND_CLIENT else Span.SPAN_KIND_INTERNAL,
             start_time_unix_nano=s.start_ns, end_time_unix_nano=max(s.end_ns, s.start_ns),
             attributes=attrs(s.attributes.items()), flags=FLAGS,
             status=Status(code=Status.STATUS_CODE_ERROR, message=s.error) if s.error else Status())
        for s in spans
    ]
    name, version = scope
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=key_values(resource)),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name=name, version=version), spans=pb_spans)])])
