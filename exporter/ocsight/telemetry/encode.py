"""OTLP trace requests built straight from `SpanData`.

A backfill spends most of its time encoding. Going through the SDK's `ReadableSpan` and its
generic encoder costs about twice what building the protobuf messages directly does, and building
each span and attribute as a message of its own and then copying it into the request costs more
than twice what filling the request in place does (the protobuf runtime copies a message deeply
whenever it is put into another).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

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
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(key_values(resource))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name, scope_spans.scope.version = scope
    add_span = scope_spans.spans.add
    for s in spans:
        span = add_span()
        span.trace_id = s.trace_id.to_bytes(16, "big")
        span.span_id = s.span_id.to_bytes(8, "big")
        if s.parent_id:
            span.parent_span_id = s.parent_id.to_bytes(8, "big")
        span.name = s.name
        span.kind = Span.SPAN_KIND_CLIENT if s.kind == KIND_CLIENT else Span.SPAN_KIND_INTERNAL
        span.start_time_unix_nano = s.start_ns
        span.end_time_unix_nano = max(s.end_ns, s.start_ns)
        span.flags = FLAGS
        add_attribute = span.attributes.add
        for k, v in s.attributes.items():
            value = add_attribute(key=k).value
            kind = v.__class__
            if kind is str:
                value.string_value = v
            elif kind is int:
                value.int_value = v
            elif kind is float:
                value.double_value = v
            elif kind is bool:
                value.bool_value = v
            else:
                value.CopyFrom(any_value(v))
        if s.error:
            span.status.code = Status.STATUS_CODE_ERROR
            span.status.message = s.error
        else:
            span.status.SetInParent()  # an empty status, as the SDK's encoder sends
    return request
