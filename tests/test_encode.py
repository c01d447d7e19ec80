"""ocsight's own OTLP encoding of spans says exactly what the SDK's encoder would."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from conftest import records
from corpus import store_dir
from ocsight.telemetry import otlp
from ocsight.telemetry import spans as mapping
from ocsight.telemetry.encode import trace_request


def sdk_span(s: mapping.SpanData, res: Resource) -> ReadableSpan:
    flags = TraceFlags(TraceFlags.SAMPLED)
    parent = SpanContext(s.trace_id, s.parent_id, is_remote=False, trace_flags=flags) if s.parent_id else None
    return ReadableSpan(
        name=s.name, context=SpanContext(s.trace_id, s.span_id, is_remote=False, trace_flags=flags), parent=parent,
        resource=res, attributes=s.attributes, instrumentation_scope=otlp.SCOPE,
        kind=SpanKind.CLIENT if s.kind == mapping.KIND_CLIENT else SpanKind.INTERNAL,
        status=Status(StatusCode.ERROR, s.error) if s.error else Status(StatusCode.UNSET),
        start_time=s.start_ns, end_time=max(s.end_ns, s.start_ns))


def corpus_spans(name: str) -> list[mapping.SpanData]:
    recs = records(store_dir(name))
    return mapping.spans(recs, "auto", include_content=True)


def test_the_request_equals_the_sdk_encoders_for_every_corpus_span():
    res = otlp.resource()
    for name in ("opencode-1.18", "opencode-1.1", "upgrade-1.1-1.15"):
        spans = corpus_spans(name)
        ours = trace_request(spans, res.attributes, (otlp.SCOPE.name, otlp.SCOPE.version))
        sdk = encode_spans([sdk_span(s, res) for s in spans])
        assert ours.SerializeToString(deterministic=True) == sdk.SerializeToString(deterministic=True), name


def test_the_corpora_hold_every_kind_of_span_the_encoding_must_get_right():
    spans = [s for name in ("opencode-1.18", "opencode-1.1") for s in corpus_spans(name)]
    assert {s.kind for s in spans} == {mapping.KIND_CLIENT, mapping.KIND_INTERNAL}
    assert any(s.error for s in spans) and any(s.parent_id is None for s in spans)
    values = [v for s in spans for v in s.attributes.values()]
    assert {type(v) for v in values} >= {str, int, float, bool, tuple}
