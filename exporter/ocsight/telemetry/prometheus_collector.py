"""The index-derived metrics (`metrics.index_points`) for `--prometheus-port`: a `prometheus_client`
collector on the registry the SDK's Prometheus reader uses, building the points at every scrape.

Names and labels are those the SDK's exporter gave the instruments when they were the SDK's (the
dashboards and alert rules depend on them, `tests/metric_names.py` pins them): dots in names and
keys become underscores, unit annotations (`{token}`) are dropped, counters get `_total`,
non-string values are JSON (`true`, `false`), keys are sorted, and the scope's `otel_scope_name`,
`otel_scope_version` and `otel_scope_schema_url` labels are added.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator

from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ocsight.telemetry.indexed import SCOPE, Series
from ocsight.telemetry.metrics import INSTRUMENTS, Instrument, Point

_NAME = re.compile(r"[^a-zA-Z0-9:]+")
_KEY = re.compile(r"[^a-zA-Z0-9]+")
_ANNOTATION = re.compile(r"{.*}")


def prometheus_name(name: str) -> str:
    return _NAME.sub("_", "_" + name[1:] if name[:1].isdigit() else name)


def prometheus_key(key: str) -> str:
    return _KEY.sub("_", "_" + key[1:] if key[:1].isdigit() else key)


def prometheus_unit(unit: str) -> str:
    """Annotations (`{token}`) are dropped; the index-derived instruments have no other units."""
    return _NAME.sub("_", _ANNOTATION.sub("", unit)).strip("_")


def prometheus_value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def scope_labels(scope: InstrumentationScope) -> dict[str, str]:
    labels = {f"otel_scope_{k}": prometheus_value(v) for k, v in (scope.attributes or {}).items()}
    return {**labels, "otel_scope_name": scope.name or "", "otel_scope_version": scope.version or "",
            "otel_scope_schema_url": scope.schema_url or ""}


def prometheus_family(instrument: Instrument, points: Iterable[Point], scope: InstrumentationScope = SCOPE) -> Metric:
    """One instrument's points as a counter or gauge family."""
    base = {prometheus_key(k): v for k, v in scope_labels(scope).items()}
    rows, keys = [], set(base)
    for attributes, value in points:
        labels = {**base, **{prometheus_key(k): prometheus_value(v) for k, v in attributes.items()}}
        keys.update(labels)
        rows.append((labels, value))
    ordered = sorted(keys)
    family = (CounterMetricFamily if instrument.counter else GaugeMetricFamily)(
        prometheus_name(instrument.name), instrument.description, labels=ordered, unit=prometheus_unit(instrument.unit))
    for labels, value in rows:
        family.add_metric([labels.get(k, "") for k in ordered], value)
    return family


class PrometheusCollector(Collector):
    """A `prometheus_client` collector of the index's metrics, built at every scrape."""

    def __init__(self, series: Series) -> None:
        self.series = series

    def describe(self) -> Iterator[Metric]:
        """The names it serves, without reading the index: the registry refuses a second owner."""
        for instrument in INSTRUMENTS:
            yield prometheus_family(instrument, ())

    def collect(self) -> Iterator[Metric]:
        for instrument, points in self.series():
            family = prometheus_family(instrument, points)
            if family.samples:  # as the SDK's exporter, no family for an instrument without points
                yield family
