"""The second half of a database's first read, done on a second connection, on another core.

A first read of a database cuts its sessions into ranges of about equal messages (`SessionRanges`).
The index's connection stages ranges from the lowest, a thread from the highest, each claiming the
next as it finishes one, until they meet: the two halves are whatever each had time for (a range's
cost depends on its sessions' era and on what else the machine runs, so a fixed cut left one core
idle for up to a tenth of the read). The thread stages (normalising as it stages) and then sums its
half on a connection of its own (SQLite releases the GIL while a statement runs), into a private
in-memory database (shared-cache, named for this process) that the index connection attaches at the
end to take its cube rows. The two halves meet three times:

1. staged: the index connection learns the second half's message IDs (a later source skips them
   as it skips its own), its model pairs (to be priced) and its rows with malformed JSON;
2. priced: the index connection hands over the prices, for the thread to sum usage once it has
   summed its tool calls (and again for the models priced last, by genai-prices,
   in a second batch);
3. summed: once the index connection has summed its own half, each half's parts whose message
   the half does not hold are checked against the other half's messages; at the end, the
   thread's rows are merged.

Used only when both connections are sure to read the same snapshot (the database's stamp unchanged
after the read) and every part lives in its message's half (OpenCode writes a part with its
message's session; a part in another session is only found in a corrupt database). Anything else
(a write meanwhile, such a part, any error) raises `SplitFailed`, and the read is done again on one
connection.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import threading
from collections.abc import Callable, Iterator

from ocsight import normalise
from ocsight.sqlite_library import sqlite3
from ocsight.store import extract

_names = itertools.count()
SPLIT_SAMPLE = 1000  # messages sampled to cut the ranges: each then holds its share give or take a fifth
# About 15 ms of a connection's work each on the benchmark's store: the finer, the closer the two ends.
RANGES = 40
# Ranges the thread leaves to the index connection, which sums less of its own
# while its staging is slower (it also reads the legacy trees and prices): each connection then
# ends its whole share at about the same time.
LEFT_TO_THE_INDEX = 1
# Usage cube keys: a session of the second half may also hold a legacy tree's messages, summed on
# the index connection; its rows are then merged by key.
USAGE_KEYS = "session_id, bucket, role, provider, model, agent, error"
TOOL_KEYS = "session_id, bucket, provider, model, agent, tool"


class SplitFailed(Exception):
    """The second half could not be used: the read is done again on one connection."""


def range_bounds(con: sqlite3.Connection, alias: str, ranges: int = RANGES) -> list[str]:
    """Session IDs that cut the database's sessions into `ranges` ranges of about equal messages,
    from an even sample of messages by rowid (walking the whole session index took as long as the
    rest of the set-up); [] when there is nothing to cut. A session is never cut."""
    top = con.execute(f"SELECT max(rowid) FROM {alias}.message").fetchone()[0]
    if not isinstance(top, int) or top < 1:
        return []
    rowids = json.dumps(list(range(1, top + 1, max(1, top // SPLIT_SAMPLE))))
    sessions = sorted(
        r[0] for r in con.execute(
            f"SELECT session_id FROM {alias}.message WHERE rowid IN (SELECT value FROM json_each(?))", (rowids,)
        ) if isinstance(r[0], str)
    )
    cuts = {sessions[len(sessions) * i // ranges] for i in range(1, ranges)} - {sessions[0]} if sessions else set()
    return sorted(cuts)


class SessionRanges:
    """Ranges of sessions (`range_bounds`) claimed by two connections: the index connection from
    the lowest, the thread from the highest. Each owns its end range from the start, so the lowest
    sessions are always the index connection's and the highest the thread's."""

    def __init__(self, bounds: list[str]) -> None:
        if not bounds:
            raise ValueError("no bounds: nothing to share")
        self.bounds = bounds
        self._lock = threading.Lock()
        self._low, self._high = 1, len(bounds)  # the ranges not claimed yet: low .. high - 1
        self._low_done = False

    def scope(self, i: int) -> tuple[str, dict[str, str]]:
        """Range `i`'s condition on the source row `r`, with its parameters (the same statement text
        for every range: prepared once)."""
        if i == 0:
            return "r.session_id < :range_hi", {"range_hi": self.bounds[0]}
        if i == len(self.bounds):
            return "r.session_id >= :range_lo", {"range_lo": self.bounds[-1]}
        return ("r.session_id >= :range_lo AND r.session_id < :range_hi",
                {"range_lo": self.bounds[i - 1], "range_hi": self.bounds[i]})

    def low_claims(self) -> Iterator[int]:
        """The index connection's ranges, each claimed when the last is done, until it meets the thread's."""
        yield 0
        while True:
            with self._lock:
                if self._high <= self._low:
                    self._low_done = True
                    return
                i, self._low = self._low, self._low + 1
            yield i

    def high_claims(self) -> Iterator[int]:
        """The thread's ranges, each claimed when the last is done, until it meets the index connection's."""
        yield len(self.bounds)
        while True:
            with self._lock:
                if self._high - LEFT_TO_THE_INDEX <= self._low:
                    return
                self._high -= 1
                i = self._high
            yield i

    @property
    def split(self) -> str:
        """The lowest session of the thread's half (once the index connection has stopped claiming)."""
        assert self._low_done, "the index connection is still claiming ranges"
        return self.bounds[self._low - 1]


class HalfAhead(threading.Thread):
    """`prepare` makes a connection ready for `store.extract` (SQL functions, the index's tables).

    Started as soon as the database is attached, before the index connection checks any source:
    the thread cuts the ranges and reads the sessions' eras (normalising needs them) itself, from
    the database, while the index connection checks the sources; it waits for the ranges only
    when it starts staging (`wait_ranges`)."""

    def __init__(self, uri: str, rank: int, busy_ms: int, prepare: Callable[[sqlite3.Connection], None],
                 held_there: Callable[[list[str]], set[str]] | None = None) -> None:
        super().__init__(daemon=True)
        self.uri, self.rank, self.busy_ms = uri, rank, busy_ms
        # cut by the thread: None until `cut` is set, and when there was nothing to cut
        self.ranges: SessionRanges | None = None
        self.cut = threading.Event()
        # Beside the only database, which a legacy tree asks instead (`Database.absent`), the thread
        # reports no IDs of the messages it staged (`ids`): `held_there` then tells which of the
        # index connection's parts' messages it may hold (`check_parts`).
        self.held_there = held_there
        self.prepare = prepare
        n = next(_names)
        self.alias = f"oc_half_{n}"  # `oc_`: detached with the databases (`sqlite.detach_all`)
        self.memory = f"file:ocsight-half-{os.getpid()}-{n}?mode=memory&cache=shared"
        # holds the in-memory database open from its first statement to its merge
        self._keep: sqlite3.Connection | None = sqlite3.connect(self.memory, uri=True, check_same_thread=False)
        # set once its set-up is done: Python-heavy work elsewhere waits for it (both hold the GIL)
        self.reading = threading.Event()
        self.staged, self.tools_summed = threading.Event(), threading.Event()
        # price rows from the index connection, the pairs to sum again (None: sum all) and whether
        # they are the last; None: cancelled
        self._prices: queue.SimpleQueue[tuple[list[tuple], list[tuple[str, str]] | None, bool] | None] = (
            queue.SimpleQueue())
        self.failed = False
        # what the index connection learns at each meeting
        self.ids: list[str] = []
        self._noted = False
        self.pairs: list[tuple[str, str]] = []
        self.bad: list[tuple[str, str]] = []
        # message IDs of parts whose message this half does not hold
        self.orphan_steps: list[str] = []
        self.orphan_tools: list[str] = []
        self.start()

    @property
    def report_ids(self) -> bool:
        """Whether the thread reports the IDs of the messages it staged, for a later source to skip."""
        return self.held_there is None

    # -- the thread -------------------------------------------------------------------------------

    def run(self) -> None:
        con = None
        try:
            con = sqlite3.connect(self.memory, uri=True, isolation_level=None, check_same_thread=False)
            if not self._stage(con):
                return  # nothing to cut: the index connection reads it all
            self.staged.set()
            extract.finish_staged_messages(con)
            self.orphan_steps, self.orphan_tools = orphans(con)
            extract.sum_tool_calls(con, orphans=bool(self.orphan_tools))
            self.tools_summed.set()
            while (batch := self._prices.get()) is not None:
                rows, again, last = batch
                con.executemany("INSERT OR REPLACE INTO price VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                if again is None or again:  # None: the first sum, of every message
                    extract.sum_usage(con, again)
                if last:
                    break
        except (sqlite3.Error, MemoryError):
            self.failed = True
        finally:
            self.cut.set()
            self.reading.set()
            self.staged.set()
            self.tools_summed.set()
            if con is not None:
                con.close()

    def _stage(self, con: sqlite3.Connection) -> bool:
        """Stages the ranges the thread claims; False when the database has nothing to cut."""
        con.execute("PRAGMA temp_store = MEMORY")
        con.execute("PRAGMA cache_size = -8000")
        con.execute(f"PRAGMA busy_timeout = {self.busy_ms}")
        con.execute("BEGIN")  # one transaction, not one a statement
        self.prepare(con)
        con.execute("COMMIT")
        con.execute("ATTACH DATABASE ? AS oc", (self.uri,))
        bounds = range_bounds(con, "oc")
        self.ranges = SessionRanges(bounds) if bounds else None
        self.cut.set()
        if self.ranges is None:
            return False
        # the eras of the database's own sessions, as the index connection merges them
        version = "version" if any(r[1] == "version" for r in con.execute("PRAGMA oc.table_info(session)")) else "NULL"
        era, params = normalise.era_by_version_sql(
            "v", [v for (v,) in con.execute(f"SELECT DISTINCT {version} FROM oc.session")])
        con.execute(f"INSERT INTO session (id, rank, version, era) SELECT id, 0, v, {era} "
                    f"FROM (SELECT id, {version} AS v FROM oc.session)", params)
        con.execute("CREATE TEMP VIEW src_message AS SELECT id, session_id, time_created, data FROM oc.message")
        con.execute("CREATE TEMP VIEW src_part AS SELECT id, message_id, session_id, data FROM oc.part")
        extract.create_staging(con)
        self.reading.set()
        for i in self.ranges.high_claims():
            scope, params = self.ranges.scope(i)
            self.bad += extract.stage(con, self.rank, scope, params=params, completion=False)
        if self.report_ids:
            self.ids = extract.staged_message_ids(con)
        self.pairs = con.execute(
            "SELECT DISTINCT coalesce(provider, ''), coalesce(model, '') FROM temp.stage_message "
            "WHERE role = 'assistant'"
        ).fetchall()
        return True

    # -- the index connection's side ----------------------------------------------------------------

    def wait_ranges(self) -> SessionRanges | None:
        """Waits for the thread to cut the database's sessions into ranges; None: nothing to cut
        (the thread has ended)."""
        self.cut.wait()
        if self.failed:
            raise SplitFailed
        return self.ranges

    def take_staged(self) -> list[tuple[str, str]]:
        """Waits for the second half's staging; returns its rows with malformed JSON, as `extract.stage` does."""
        self.staged.wait()
        if self.failed:
            raise SplitFailed
        return self.bad

    def note_staged(self, con: sqlite3.Connection) -> None:
        """Notes the second half's messages in `temp.staged_elsewhere`, for a later database's
        staging to skip them (a legacy tree skips them by file name, unread, from `ids`)."""
        if not self._noted:
            con.executemany("INSERT OR IGNORE INTO temp.staged_elsewhere VALUES (?, ?)",
                            ((i, self.rank) for i in self.ids))
            self._noted = True

    def check_parts(self, con: sqlite3.Connection, ours: tuple[list[str], list[str]]) -> None:
        """Waits for the second half's tool calls to be summed; raises `SplitFailed` when a part of
        either half has its message in the other. `ours`: this connection's parts without their
        message (`orphans`)."""
        self.tools_summed.wait()
        if self.failed:
            raise SplitFailed
        mine = set(ours[0] + ours[1])
        if mine and not mine.isdisjoint(self.ids if self.held_there is None else self.held_there(sorted(mine))):
            raise SplitFailed
        held = "SELECT 1 FROM temp.stage_message WHERE id = ?"
        if any(con.execute(held + " AND rank = ?", (m, self.rank)).fetchone() for m in self.orphan_steps) or any(
                con.execute(held, (m,)).fetchone() for m in self.orphan_tools):
            raise SplitFailed

    def give_prices(self, con: sqlite3.Connection, again: list[tuple[str, str]] | None = None,
                    last: bool = True) -> None:
        """Hands over the index's prices, for the thread to sum usage: every message's (`again`
        None), else those of the pairs in `again` once more (`extract.sum_usage`); `last`: no
        more prices follow."""
        self._prices.put((con.execute("SELECT * FROM price").fetchall(), again, last))

    def merge_into(self, con: sqlite3.Connection) -> None:
        """Waits for the second half and adds its cube rows and skipped records to the index's."""
        self.join()
        if self.failed:
            raise SplitFailed
        assert self.ranges is not None
        a, split = self.alias, (self.ranges.split,)
        con.execute(f"ATTACH DATABASE ? AS {a}", (self.memory,))
        for cube, keys in (("usage_cube", USAGE_KEYS), ("tool_cube", TOOL_KEYS)):
            if con.execute(f"SELECT 1 FROM {cube} WHERE session_id >= ? LIMIT 1", split).fetchone() is None:
                con.execute(f"INSERT INTO {cube} SELECT * FROM {a}.{cube}")
                continue
            key_cols = {k.strip() for k in keys.split(",")}
            cols = ", ".join(c if c in key_cols else f"sum({c})"
                             for _cid, c, *_rest in con.execute(f"PRAGMA main.table_info({cube})").fetchall())
            con.execute(
                f"CREATE TEMP TABLE half_merged AS SELECT {cols} FROM (SELECT * FROM {cube} "
                f"WHERE session_id >= ? UNION ALL SELECT * FROM {a}.{cube}) GROUP BY {keys}", split
            )
            con.execute(f"DELETE FROM {cube} WHERE session_id >= ?", split)
            con.execute(f"INSERT INTO {cube} SELECT * FROM temp.half_merged")
            con.execute("DROP TABLE temp.half_merged")
        con.execute(f"INSERT OR REPLACE INTO skipped SELECT * FROM {a}.skipped")

    def close(self) -> None:
        """Ends the thread's wait, if it still waits, and frees its in-memory database."""
        self._prices.put(None)  # a thread still waiting for prices ends
        if self._keep is not None:
            self._keep.close()
            self._keep = None



def orphans(con: sqlite3.Connection) -> tuple[list[str], list[str]]:
    """Message IDs of the staged steps and tool calls whose message was not staged here (steps are
    matched by rank too, as `extract.create_normalised_steps` matches them)."""
    steps = con.execute(
        "SELECT DISTINCT s.message_id FROM temp.stage_step s WHERE NOT EXISTS "
        "(SELECT 1 FROM temp.stage_message m WHERE m.id = s.message_id AND m.rank = s.rank)"
    ).fetchall()
    tools = con.execute(
        "SELECT DISTINCT t.message_id FROM temp.stage_tool t WHERE NOT EXISTS "
        "(SELECT 1 FROM temp.stage_message m WHERE m.id = t.message_id)"
    ).fetchall()
    return [r[0] for r in steps], [r[0] for r in tools]
