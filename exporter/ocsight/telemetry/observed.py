"""The index-derived metrics (`metrics.INDEX_METRICS`) as the SDK's observable instruments.

Their callbacks map the index's totals to observations when a reader collects: every interval for
OTLP, every scrape for Prometheus. The SDK then renders them for each reader, names, temporality and
labels included, so OTLP and Prometheus cannot tell two stories.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Mapping

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from ocsight.telemetry.metrics import INDEX_METRICS, PointMapping, Rows, Totals

Source = Callable[[], Rows]


def sources(totals: Totals, budgets: Callable[[], Rows]) -> dict[str, Source]:
    """What each `INDEX_METRICS` source reads: the index's totals, and the configured budgets."""
    return {"usage": totals.usage, "errors": totals.errors, "sessions": totals.sessions, "tools": totals.tools,
            "unpriced": totals.unpriced, "spend": totals.spend, "budgets": budgets}


class Snapshot:
    """The rows of each source, read once and kept until the index changes (`invalidate`): the
    instruments sharing a source (tokens, cost and calls) see the same read, and a collection while
    nothing changed reads nothing. Spend is read at every collection, its day, week and month
    moving with the clock; budgets are the settings'. Empty rows are not kept: they may stand for an
    index not built yet."""

    UNCACHED = frozenset({"spend", "budgets"})

    def __init__(self, read: Mapping[str, Source]) -> None:
        self.read = read
        self.kept: dict[str, Rows] = {}
        self.lock = threading.Lock()  # OTLP exports and Prometheus scrapes collect on their own threads

    def rows(self, source: str) -> Rows:
        if source in self.UNCACHED:
            return self.read[source]()
        with self.lock:
            rows = self.kept.get(source)
            if rows is None:
                rows = interned(self.read[source]())
                if rows:
                    self.kept[source] = rows
            return rows

    def invalidate(self) -> None:
        with self.lock:
            self.kept = {}


def interned(rows: Rows) -> Rows:
    """The rows with their strings interned: the SDK keeps every series' labels for good, and a
    provider, model or project name then takes its memory once, not once per series and read."""
    return [tuple(sys.intern(v) if type(v) is str else v for v in row) for row in rows]


def observations(mapping: PointMapping, rows: Rows, identity: Mapping[str, str]) -> Iterator[Observation]:
    """One observation per point, made as the SDK asks for them."""
    for attributes, value in mapping(rows, identity):
        yield Observation(value, attributes)


def register(meter: Meter, rows_of: Callable[[str], Rows], identity: Mapping[str, str]) -> None:
    """Creates every index-derived instrument on `meter`: counters as observable counters (the SDK
    sends them as cumulative monotonic sums), the rest as observable gauges. `identity` (user and
    host) goes on every point."""
    me = dict(identity)
    for instrument, source, mapping in INDEX_METRICS:
        def observe(_options: CallbackOptions, source: str = source, mapping: PointMapping = mapping
                    ) -> Iterator[Observation]:
            return observations(mapping, rows_of(source), me)

        create = meter.create_observable_counter if instrument.counter else meter.create_observable_gauge
        create(instrument.name, [observe], unit=instrument.unit, description=instrument.description)
