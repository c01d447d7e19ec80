"""`ocsight watch`: follows OpenCode's data and ships what it finishes as spans and metrics over OTLP.

Each cycle refreshes the index (reading only what changed), reads the records of the sessions
that changed or still had unfinished records, maps finished ones to spans, sends those not yet
acknowledged, and marks them in the checkpoint once the receiver acknowledged them. A failed send
marks nothing: the next cycle (after a back-off) sends it again.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ocsight import paths, reading
from ocsight.errors import NoData, OcsightError
from ocsight.index import Index, IndexReader, index_path
from ocsight.sources import locate
from ocsight.telemetry import checkpoint as cp
from ocsight.telemetry import lock, otlp
from ocsight.telemetry import spans as mapping

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader
    from opentelemetry.sdk.trace.export import SpanExporter

    from ocsight.model import Message, Records

log = logging.getLogger("ocsight.watch")
MAX_BACKOFF = 60.0
BATCH = 512
CHUNK_SESSIONS = 250
# SQLite's memory in the whole process beyond which it recycles cache pages rather than allocate more:
# building the index of a long history otherwise holds on to its page caches, sorters and temporary
# tables for the sidecar's life.
SQLITE_SOFT_HEAP = 8 << 20


@dataclass
class WatchOptions:
    read: reading.ReadOptions
    protocol: str = "http/protobuf"
    backfill: bool = False
    since_ms: int | None = None  # with backfill: only records from then on
    include_content: bool = False
    interval: float = 2.0  # longest wait between cycles while nothing changes
    metric_interval: float = 10.0
    budgets: tuple[tuple[str, str | None, float], ...] = ()
    prometheus_port: int | None = None  # also serve /metrics for Prometheus to scrape
    prometheus_host: str = "127.0.0.1"
    timezone: str | None = None  # where the spend gauges' days, weeks and months begin
    identity: otlp.GivenIdentity = otlp.GivenIdentity()  # user, host, instance ID from the settings


class Sidecar:
    def __init__(self, opts: WatchOptions, span_exporter: SpanExporter | None = None,
                 metric_exporter: MetricExporter | None = None) -> None:
        opts.read = dataclasses.replace(opts.read, index_name="watch", lean_memory=True)
        self.opts = opts
        # OpenCode may not have written anything yet: follow the directories until it does.
        self.dirs = [paths.DEMO_DIR] if opts.read.demo else locate.requested_data_dirs(opts.read.data_dirs)[0]
        key = "\n".join(str(d.resolve()) for d in self.dirs)
        self.lock = lock.acquire(lock.default_path(self.dirs), ", ".join(str(d) for d in self.dirs))
        self.resource = otlp.resource(self.dirs, opts.identity)
        self.span_exporter = span_exporter or otlp.span_exporter(opts.protocol)
        self.checkpoint = cp.Checkpoint(cp.default_path(key, _destination(opts.protocol)))
        self.baseline_ms = self.checkpoint.baseline_ms(int(time.time() * 1000))
        self.last_cycle_ms: int | None = None
        self.failures = 0
        self.exported = 0
        self.skipped = 0
        self.pending_since: float | None = None  # end of the oldest finished record not yet acknowledged
        self._index_file: Path | None = None
        self._stop = threading.Event()
        from ocsight.filters import resolve_timezone
        from ocsight.telemetry import collected, meters, metrics, observed

        self.totals = metrics.Totals(self._index_path, opts.read.cost_mode, resolve_timezone(opts.timezone))
        self.snapshot = observed.Snapshot(observed.sources(self.totals, lambda: list(opts.budgets)))
        self.identity = otlp.identity(self.resource)
        # OTLP: the index's metrics built at each export, never kept in the SDK (`telemetry.collected`)
        exporter = collected.WithIndexMetrics(metric_exporter or otlp.metric_exporter(opts.protocol),
                                              otlp.TEMPORALITY, self.resource, self.snapshot.rows, self.identity,
                                              start_ns=time.time_ns())
        self.metric_reader = meters.otlp_reader(exporter, opts.metric_interval)
        readers: list[MetricReader] = [self.metric_reader]
        self.prometheus_server: WSGIServer | None = None
        self.index_provider: MeterProvider | None = None
        if opts.prometheus_port is not None:
            prometheus, self.prometheus_server = meters.prometheus_reader(opts.prometheus_host, opts.prometheus_port)
            readers.append(prometheus)
            # Prometheus, on request: the index's metrics as the SDK's observable instruments, on a
            # provider of their own that only this endpoint reads (the SDK keeps each series' state)
            self.index_provider = meters.provider(self.resource, [meters.prometheus_index_reader()])
            observed.register(self.index_provider.get_meter("ocsight"), self.snapshot.rows, self.identity)
        self.meter_provider = meters.provider(self.resource, readers)
        self.record_call, self.record_tool = metrics.install(self.meter_provider, self.identity)
        self._health()
        self._soft_heap_before = _soft_heap_limit(SQLITE_SOFT_HEAP)  # given back by close()

    def _index_path(self) -> Path | None:
        """Found once OpenCode has written something; then fixed for the sidecar's life."""
        if self._index_file is None:
            try:
                sources = locate.locate(self.opts.read.data_dirs, demo=self.opts.read.demo)
            except OcsightError:
                return None
            self._index_file = index_path(sources, "watch")
        return self._index_file

    def _health(self) -> None:
        from opentelemetry.metrics import Observation

        meter = self.meter_provider.get_meter("ocsight.sidecar")
        me = self.identity
        meter.create_observable_gauge("ocsight.export.lag", [lambda _o: [Observation(self.lag_s(), me)]], unit="s",
                                      description="Age of the oldest finished record not yet acknowledged")
        meter.create_observable_counter("ocsight.export.failures", [lambda _o: [Observation(self.failures, me)]],
                                        unit="{failure}", description="Failed sends to the receiver")
        meter.create_observable_gauge("ocsight.skipped.records", [lambda _o: [Observation(self.skipped, me)]],
                                      unit="{record}", description="Records the reader skipped")

    def lag_s(self) -> float:
        """Grows while the receiver is down, so an alert can tell a stuck sidecar from an idle one."""
        return 0.0 if self.pending_since is None else max(0.0, time.time() - self.pending_since)

    # -- one cycle ----------------------------------------------------------------------------------

    def cycle(self) -> int:
        """Sends what finished since the last cycle; returns the number of spans acknowledged.

        Raises `ExportFailed` when the receiver did not acknowledge (nothing is marked then)."""
        started = int(time.time() * 1000)
        try:
            idx = reading.open_index(self.opts.read)
        except NoData:
            return 0  # not yet: OpenCode has not written anything
        with idx:
            if idx.touched is None or idx.touched:
                self.snapshot.invalidate()  # the refresh may have changed every total
            self.skipped = idx.reader.skipped_count()
            if self.last_cycle_ms is None or idx.touched is None:
                # first cycle, or the index was rebuilt: every session active since the floor
                changed = set(idx.reader.sessions_active_since(self._floor() or 0)) | (idx.touched or set())
            else:
                changed = set(idx.touched)  # what the refresh found new or rewritten
            wanted = changed | self.checkpoint.open_sessions()
            # a subagent's spans hang under its parent's task call: read the whole family
            family, parents = _families(idx.reader, wanted)
            if not family:
                self.last_cycle_ms = started
                return 0
            sent, open_sessions = 0, set[str]()
            for chunk in _chunks(family, parents, CHUNK_SESSIONS):  # memory stays bounded on a backfill
                n, still_open = self._send(idx, chunk)
                sent += n
                open_sessions |= still_open
        self.pending_since = None
        self.checkpoint.set_open_sessions(open_sessions)
        self.last_cycle_ms = started
        return sent

    def _send(self, idx: Index, sessions: list[str]) -> tuple[int, set[str]]:
        """Sends the unsent finished records of some whole session families; returns (spans sent,
        sessions with unfinished records)."""
        recs = reading.read_records(idx, sessions, every_step=False)  # spans are made of messages
        all_spans = mapping.spans(recs, self.opts.read.cost_mode, self.opts.include_content)
        floor = self._floor()
        fresh = [s for s in all_spans if floor is None or s.start_ns >= floor * 1_000_000]
        done = self.checkpoint.exported([s.record for s in fresh])
        todo = [s for s in fresh if s.record not in done]
        open_sessions: set[str] = {m.session_id for m in recs.messages if not mapping.is_final(m)}
        open_sessions |= {t.session_id for t in recs.tool_calls if not mapping.tool_is_final(t) and t.session_id}
        open_sessions |= _turns_in_progress(recs)
        if todo:
            oldest = min(s.end_ns for s in todo) / 1e9
            self.pending_since = min(oldest, self.pending_since or oldest)
            session_of = {m.id: m.session_id for m in recs.messages}
            session_of.update({t.id: t.session_id or "" for t in recs.tool_calls})
            for i in range(0, len(todo), BATCH):  # each acknowledged batch is marked at once
                batch = todo[i : i + BATCH]
                if not otlp.export_spans(self.span_exporter, batch, self.resource):
                    self.failures += 1
                    raise ExportFailed(f"the receiver did not acknowledge {len(todo) - i} spans")
                self.checkpoint.mark([(s.record, session_of.get(s.record, "")) for s in batch])
            by_id = {m.id: m for m in recs.messages}
            tools = {t.id: t for t in recs.tool_calls}
            live_ns = self.baseline_ms * 1_000_000
            for s in todo:
                if s.start_ns < live_ns:
                    continue  # the histograms describe calls as they happen; history is in the counters
                m, t = by_id.get(s.record), tools.get(s.record)
                if m is not None and m.role == "assistant":
                    self.record_call(m)
                elif t is not None:
                    self.record_tool(t, by_id.get(t.message_id))
            self.exported += len(todo)
        return len(todo), open_sessions

    def _floor(self) -> int | None:
        if self.opts.backfill:
            return self.opts.since_ms
        return self.baseline_ms

    # -- following ----------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def follow(self) -> None:
        """Cycles on every change in the data directories (and every `interval` regardless), with
        back-off while the receiver is down, until `stop()` or SIGTERM/SIGINT."""
        from watchfiles import watch

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        backoff = 0.0
        paths = [str(p) for p in self.dirs if p.exists()]
        changes = watch(*paths, stop_event=self._stop, rust_timeout=int(self.opts.interval * 1000),
                        yield_on_timeout=True, debounce=50, step=20, raise_interrupt=False) if paths else None
        try:
            while not self._stop.is_set():
                try:
                    n = self.cycle()
                    backoff = 0.0
                    if n:
                        log.info("sent %d spans (%d in all)", n, self.exported)
                except (ExportFailed, OcsightError) as e:
                    # the receiver is down, or the data cannot be read right now (locked, mid-rewrite)
                    backoff = min(MAX_BACKOFF, max(1.0, backoff * 2))
                    log.warning("%s; trying again in %.0f s", e, backoff)
                    if self._stop.wait(backoff):
                        break
                    continue
                if changes is None:
                    self._stop.wait(self.opts.interval)
                else:
                    next(changes, None)
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.meter_provider.shutdown()  # flushes the last metrics
        except Exception as e:  # noqa: BLE001 - a receiver down at exit must not hide the shutdown
            log.warning("flushing metrics failed: %s", e)
        if self.index_provider is not None:
            self.index_provider.shutdown()
        self.span_exporter.shutdown()
        if self.prometheus_server is not None:
            self.prometheus_server.shutdown()
        self.checkpoint.close()
        _soft_heap_limit(self._soft_heap_before)
        self.lock.release()


class ExportFailed(Exception):
    pass


def _soft_heap_limit(limit: int) -> int:
    """Sets SQLite's soft heap limit (for every connection of the process); returns the one before."""
    import sqlite3

    con = sqlite3.connect(":memory:")
    try:
        before = con.execute("PRAGMA soft_heap_limit").fetchone()[0]
        con.execute(f"PRAGMA soft_heap_limit = {int(limit)}")
        return before
    finally:
        con.close()


def _destination(proto: str) -> str:
    import os

    return "|".join([proto, os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                     or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "default"])


def _families(reader: IndexReader, sessions: set[str]) -> tuple[set[str], dict[str, str | None]]:
    """The sessions with their ancestors and descendants, and every session's parent."""
    parent = reader.parents()
    children: dict[str, list[str]] = {}
    for sid, pid in parent.items():
        if pid:
            children.setdefault(pid, []).append(sid)
    out: set[str] = set()
    stack = list(sessions)
    while stack:
        sid = stack.pop()
        if sid in out:
            continue
        out.add(sid)
        up = parent.get(sid)
        if up:
            stack.append(up)
        stack.extend(children.get(sid, []))
    return out, parent


def _chunks(family: set[str], parent: dict[str, str | None], size: int) -> Iterator[list[str]]:
    """The family in lists of about `size` sessions, a root session always with its descendants."""
    groups: dict[str, list[str]] = {}
    for sid in sorted(family):
        groups.setdefault(mapping.root_session(sid, parent), []).append(sid)
    chunk: list[str] = []
    for members in groups.values():
        chunk += members
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _turns_in_progress(recs: Records) -> set[str]:
    """Sessions whose last turn still waits for an answer after a tool call."""
    last: dict[str, Message] = {}
    for m in recs.messages:
        if m.role == "assistant":
            prev = last.get(m.session_id)
            if prev is None or (m.time_created or 0) >= (prev.time_created or 0):
                last[m.session_id] = m
    return {sid for sid, m in last.items() if mapping.asks_for_tools(m)}
