"""`SpanData` as the SDK's `ReadableSpan`, the span its exporters take.

Built finished rather than through a tracer: a tracer would draw its own span IDs and read the
clock, while a span's IDs must be the hashes `telemetry.spans` chose (so a re-sent record gives
the same span) and its times those of the record.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from ocsight.telemetry.spans import KIND_CLIENT, KIND_INTERNAL, SpanData

SAMPLED = TraceFlags(TraceFlags.SAMPLED)  # every span the sidecar makes is sent
UNSET = Status(StatusCode.UNSET)
KINDS = {KIND_CLIENT: SpanKind.CLIENT, KIND_INTERNAL: SpanKind.INTERNAL}


def readable_span(span: SpanData, resource: Resource, scope: InstrumentationScope) -> ReadableSpan:
    """One finished span. A record whose end is before its start (a clock step) ends when it starts."""
    context = SpanContext(span.trace_id, span.span_id, is_remote=False, trace_flags=SAMPLED)
    parent = (SpanContext(span.trace_id, span.parent_id, is_remote=False, trace_flags=SAMPLED)
              if span.parent_id else None)
    return ReadableSpan(
        name=span.name, context=context, parent=parent, resource=resource, attributes=span.attributes,
        kind=KINDS[span.kind], instrumentation_scope=scope,
        status=Status(StatusCode.ERROR, span.error) if span.error else UNSET,
        start_time=span.start_ns, end_time=max(span.end_ns, span.start_ns))


def readable_spans(spans: Iterable[SpanData], resource: Resource, scope: InstrumentationScope
                   ) -> list[ReadableSpan]:
    return [readable_span(s, resource, scope) for s in spans]
