"""The index behind the MCP server: refreshed before every answer, used by one request at a time.

An unchanged store costs a few `stat()` calls to refresh, so every answer reads what OpenCode
wrote since the last one, without being asked to. All index work runs on one thread: requests
cannot meet in the index's temporary tables, and memory stays flat (glibc gives each thread that
allocates an arena of its own, so answers on a rotating set of worker threads would grow the
server; bench/bench_mcp.py measures it).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TypeVar

from ocsight import reading
from ocsight.errors import NoData, OcsightError
from ocsight.filters import resolve_timezone
from ocsight.index import Index

log = logging.getLogger("ocsight.mcp")
T = TypeVar("T")
CACHE_KIB = -2000  # SQLite's page cache per answer, in KiB (negative): answers read little of the index


@dataclass(frozen=True)
class Config:
    """What the server reads and how it counts: the merged settings and flags of `ocsight mcp`."""

    read: reading.ReadOptions
    cost_mode: str
    timezone: str | None

    @property
    def tz(self) -> dt.tzinfo | None:
        return resolve_timezone(self.timezone)


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        # A server runs for days: its refreshes keep their memory flat, as the sidecar's do.
        self.read = replace(config.read, lean_memory=True)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocsight-index")

    @contextmanager
    def _index(self) -> Iterator[tuple[Index, float]]:
        """The index, refreshed now (and the seconds that took); on the index thread only."""
        started = time.perf_counter()
        idx = reading.open_index(self.read)
        seconds = time.perf_counter() - started
        # Answers scan the cubes once: a smaller page cache than a refresh's costs no time here.
        idx.con.execute(f"PRAGMA cache_size = {CACHE_KIB}")
        with idx:
            yield idx, seconds

    def run(self, work: Callable[[Index, float], T]) -> T:
        """`work` on the refreshed index, on the index thread; blocks the calling thread until done."""

        def job() -> T:
            with self._index() as (idx, seconds):
                return work(idx, seconds)

        return self._worker.submit(job).result()

    def answer(self, work: Callable[[Index], T]) -> T:
        return self.run(lambda idx, _seconds: work(idx))

    def warm(self) -> Future:
        """Builds or refreshes the index now, so that the first question waits less."""

        def job() -> None:
            try:
                with self._index():
                    pass
            except NoData as e:
                log.warning("%s; answers will come once OpenCode has written some", e)
            except OcsightError as e:
                log.warning("%s", e)
            except Exception as e:  # noqa: BLE001 - the requests report it again, one by one
                log.warning("reading OpenCode's data failed: %s: %s", type(e).__name__, e)

        return self._worker.submit(job)
