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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ocsight import paths, reading
from ocsight.errors import NoData, OcsightError
from ocsight.index import Index, IndexReader, index_path
from ocsight.reports.format import counted
from ocsight.sources import locate
from ocsight.telemetry import changes
from ocsight.telemetry.abandoned import abandoned, root_of
from ocsight.telemetry import checkpoint as cp
from ocsight.telemetry import lock, otlp
from ocsight.telemetry import spans as mapping

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader
    from opentelemetry.sdk.trace.export import SpanExporter


log = logging.getLogger("ocsight.watch")
MAX_BACKOFF = 60.0
STOP_WITHIN = 2.0  # seconds from SIGTERM or SIGINT to the process's end, in every state
STOP_POLL = 0.2  # seconds between looks for a stop: a part of STOP_WITHIN
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
    # seconds between metric exports: OTEL_METRIC_EXPORT_INTERVAL (ms) or the SDK's default, 60 s.
    # Each export sends every label set of the history: often, that is most of an idle sidecar's CPU.
    metric_interval: float = field(default_factory=lambda: _metric_interval())
    budgets: tuple[tuple[str, str | None, float], ...] = ()
    prometheus_port: int | None = None  # also serve /metrics for Prometheus to scrape
    prometheus_host: str = "127.0.0.1"
    timezone: str | None = None  # where the spend gauges' days, weeks and months begin
    abandon_after_s: float = 600.0  # an unfinished answer unchanged this long was interrupted
    identity: otlp.GivenIdentity = otlp.GivenIdentity()  # user, host, instance ID from the settings


class Sidecar:
    def __init__(self, opts: WatchOptions, span_exporter: SpanExporter | None = None,
                 metric_exporter: MetricExporter | None = None) -> None:
        opts.read = dataclasses.replace(opts.read, index_name="watch", lean_memory=True)
        self.opts = opts
        # OpenCode may not have written anything yet: follow the directories until it does.
        dirs = [paths.DEMO_DIR] if opts.read.demo else locate.requested_data_dirs(opts.read.data_dirs)[0]
        self.dirs = [d.resolve() for d in dirs]
        key = "\n".join(str(d.resolve()) for d in self.dirs)
        self.lock = lock.acquire(lock.default_path(self.dirs), ", ".join(str(d) for d in self.dirs))
        for own in (paths.ocsight_cache(), paths.ocsight_state()):
            paths.keep_private(own)  # they hold session titles and IDs
        self.resource = otlp.resource(self.dirs, opts.identity)
        self.span_exporter = span_exporter or otlp.span_exporter(opts.protocol)
        self.endpoint = endpoint(opts.protocol)
        self.checkpoint = cp.Checkpoint(cp.default_path(key, _destination(opts.protocol)))
        self.baseline_ms = self.checkpoint.baseline_ms(int(time.time() * 1000))
        self.last_cycle_ms: int | None = None
        self.failures = 0
        self.exported = 0
        self.cycles = 0
        self._spans_closed = False
        self.skip_kinds_seen: set[str] = set()
        self.wake_at_ms: float | None = None  # when an unfinished record comes to be abandoned
        self.skipped = 0
        self.pending_since: float | None = None  # end of the oldest finished record not yet acknowledged
        self._index_file: Path | None = None
        self._stop = threading.Event()
        from ocsight.filters import resolve_timezone
        from ocsight.telemetry import collected, meters, metrics, observed

        self.totals = metrics.Totals(self._index_path, opts.read.cost_mode, resolve_timezone(opts.timezone),
                                     opts.read.fork_copies)
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

    def _sources(self) -> locate.Sources | None:
        """OpenCode's databases and legacy trees as they are now; None until OpenCode wrote something."""
        try:
            return locate.locate(self.opts.read.data_dirs, demo=self.opts.read.demo)
        except OcsightError:
            return None

    def _written(self) -> tuple[changes.Stamp, list[Path]]:
        """The stamp of OpenCode's databases, and its legacy trees (absolute, as the watcher's events)."""
        sources = self._sources()
        if sources is None:
            return (), []
        return changes.stamp(sources.databases), [d.resolve() for d in sources.legacy_dirs]

    def _index_path(self) -> Path | None:
        """Found once OpenCode has written something; then fixed for the sidecar's life."""
        if self._index_file is None:
            sources = self._sources()
            if sources is None:
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
        self.wake_at_ms = None  # set again by this cycle's unfinished records
        if not any(d.exists() for d in self.dirs):
            return 0  # not yet: OpenCode has not created its directory
        try:
            idx = reading.open_index(self.opts.read)
        except NoData:
            return 0  # not yet: OpenCode has not written anything
        with idx:
            if idx.touched is None or idx.touched:
                self.snapshot.invalidate()  # the refresh may have changed every total
            kinds = idx.reader.skip_kinds()
            self.skipped = sum(n for _reason, n, _example in kinds)
            for reason, n, example in kinds:
                if reason not in self.skip_kinds_seen:  # said once a kind; the metric keeps the count
                    self.skip_kinds_seen.add(reason)
                    log.warning("skipped %s: %s (for example %s)", counted(n, "record"), reason, example)
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
                if self._stop.is_set():
                    raise Stopping
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
        # spans are made of messages; a fork's copy was no model call, so it is never a span (the
        # metrics, from the index, count copies again when asked to, as OpenCode does)
        recs = reading.read_records(idx, sessions, every_step=False, fork_copies=False)
        gone = abandoned(recs, int(time.time() * 1000), int(self.opts.abandon_after_s * 1000))
        all_spans = mapping.spans(recs, self.opts.read.cost_mode, self.opts.include_content, gone)
        floor = self._floor()
        # a turn is sent whole or not at all: one begun before the floor is left out, later spans too
        fresh = [s for s in all_spans if floor is None or s.turn_start_ns >= floor * 1_000_000]
        done = self.checkpoint.exported([s.record for s in fresh])
        todo = [s for s in fresh if s.record not in done]
        open_sessions = set(gone.waiting)
        if gone.wake_at_ms is not None:
            self.wake_at_ms = min(gone.wake_at_ms, self.wake_at_ms or gone.wake_at_ms)
        if todo:
            oldest = min(s.end_ns for s in todo) / 1e9
            self.pending_since = min(oldest, self.pending_since or oldest)
            session_of = {m.id: m.session_id for m in recs.messages}
            session_of.update({t.id: t.session_id or "" for t in recs.tool_calls})
            for i in range(0, len(todo), BATCH):  # each acknowledged batch is marked at once
                batch = todo[i : i + BATCH]
                if self._stop.is_set():
                    raise Stopping
                try:
                    acknowledged = otlp.export_spans(self.span_exporter, batch, self.resource)
                except Exception:
                    if self._stop.is_set():  # the stop closed the exporter's connection under it
                        raise Stopping from None
                    raise
                if not acknowledged:
                    self.failures += 1
                    raise ExportFailed(f"{self.endpoint} did not acknowledge {counted(len(todo) - i, 'span')}")
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
        """Cycles whenever OpenCode wrote something, with back-off while the receiver is down, until
        `stop()`, SIGTERM or SIGINT; then ends within `STOP_WITHIN` seconds whatever it was doing.

        The cycles run on a thread of their own, so that a stop never waits for a backfill or a
        receiver that does not answer: the exporters' public `shutdown()` cuts an export in flight
        or in back-off short, and a cycle stops between batches. What the receiver acknowledged is
        marked batch by batch, so whatever a stop cut short is sent on the next start."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        log.info("following %s; sending to %s (%s)%s", ", ".join(map(str, self.dirs)), self.endpoint,
                 self.opts.protocol, ", history first" if self.opts.backfill else "")
        failed: list[BaseException] = []
        worker = threading.Thread(target=self._follow, args=(failed,), name="ocsight-follow", daemon=True)
        stopping_at = 0.0
        worker.start()
        try:
            # set by a signal, `stop()`, or the cycles' end. Waited for in short steps: the kernel may
            # deliver a signal to another thread, and Python runs its handler only once this thread
            # is back in the interpreter, which a wait without a timeout would never be
            while not self._stop.wait(STOP_POLL):
                pass
            stopping_at = time.monotonic()
            self._stop.set()
            self._close_spans()
            worker.join(max(0.0, 0.4 * STOP_WITHIN - (time.monotonic() - stopping_at)))
        finally:
            # a cycle still inside SQLite keeps its connections: they are left to the process's end.
            # The rest of the time flushes the last metrics; what remains goes to the interpreter's exit.
            self.close(metrics_within=max(0.1, 0.7 * STOP_WITHIN - (time.monotonic() - stopping_at)),
                       busy=worker.is_alive())
        if failed:
            raise failed[0]

    def _follow(self, failed: list[BaseException]) -> None:
        """The cycles: one at the start, then one whenever OpenCode's data changed (`telemetry.changes`),
        an unfinished record came to be abandoned, or a failed send is due again."""
        from watchfiles import Change, watch

        events: Iterator[set[tuple[Change, str]]] | None = None
        backoff = 0.0
        due = True
        seen: changes.Stamp = ()
        try:
            while not self._stop.is_set():
                if events is None:
                    # OpenCode may not have created its directory yet: watched from when it has
                    existing = [str(p) for p in self.dirs if p.exists()]
                    if existing:
                        events = watch(*existing, stop_event=self._stop, rust_timeout=int(self.opts.interval * 1000),
                                       yield_on_timeout=True, debounce=50, step=50, raise_interrupt=False)
                        due = True
                if due:
                    seen, _trees = self._written()  # taken first: a write during the cycle is seen next time
                    try:
                        self.cycles += 1
                        n = self.cycle()
                        log.debug("cycle %d done", self.cycles)
                        backoff = 0.0
                        due = False
                        if n:
                            log.info("sent %s (%s in all)", counted(n, "span"), f"{self.exported:,}")
                    except Stopping:
                        break
                    except (ExportFailed, OcsightError) as e:
                        if self._stop.is_set():
                            break
                        # the receiver is down, or the data cannot be read right now (locked, mid-rewrite)
                        backoff = min(MAX_BACKOFF, max(1.0, backoff * 2))
                        log.warning("%s; trying again in %.0f s", e, backoff)
                        self._stop.wait(backoff)
                        continue
                if events is None:
                    due = self._stop.wait(self.opts.interval) or any(p.exists() for p in self.dirs)
                    continue
                batch = next(events, None)  # the events since the last; empty after `interval` without any
                if batch is None:
                    break
                now, trees = self._written()
                due = (now != seen or changes.legacy_written(batch, trees)
                       or (self.wake_at_ms is not None and time.time() * 1000 >= self.wake_at_ms))
        except BaseException as e:  # raised again on the main thread
            failed.append(e)
        finally:
            self._stop.set()

    def close(self, metrics_within: float = 10.0, busy: bool = False) -> None:
        """Flushes the last metrics (for at most `metrics_within` seconds) and closes the exporters;
        `busy`: a cycle is still running, whose checkpoint stays open."""
        try:
            self.meter_provider.shutdown(timeout_millis=metrics_within * 1000)  # flushes the last metrics
        except Exception as e:  # noqa: BLE001 - a receiver down at exit must not hide the shutdown
            log.warning("flushing metrics failed: %s", e)
        if self.index_provider is not None:
            self.index_provider.shutdown()
        self._close_spans()
        if self.prometheus_server is not None:
            self.prometheus_server.shutdown()
        if not busy:
            self.checkpoint.close()
            _soft_heap_limit(self._soft_heap_before)
        self.lock.release()

    def _close_spans(self) -> None:
        if not self._spans_closed:
            self._spans_closed = True
            self.span_exporter.shutdown()


class Stopping(Exception):
    """A stop was asked for: the cycle ends between two batches."""


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


def endpoint(proto: str) -> str:
    """Where the spans go, as the SDK's exporter resolves it from the standard variables."""
    import os

    given = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if given:
        return given
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if proto == "grpc":
        return base or "http://localhost:4317"
    return f"{(base or 'http://localhost:4318').rstrip('/')}/v1/traces"


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
        groups.setdefault(root_of(sid, parent), []).append(sid)
    chunk: list[str] = []
    for members in groups.values():
        chunk += members
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk



def _metric_interval() -> float:
    import os

    try:
        return max(1.0, float(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "60000")) / 1000)
    except ValueError:
        return 60.0
