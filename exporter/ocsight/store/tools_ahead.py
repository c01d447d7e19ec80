"""A whole database's tool calls staged on a second connection, while the first stages its messages.

SQLite releases the GIL while a statement runs, so the two scans of a first read (messages, parts)
overlap on two cores. The rows land in a private in-memory database (shared-cache, named for this
process) that the index connection attaches and copies from. Used only when both connections are
sure to read the same snapshot: the database's stamp is checked unchanged after the scan; anything
else (a write meanwhile, malformed JSON, any error) leaves the tool calls to the ordinary staging.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
from collections.abc import Callable

from ocsight.store import extract

_names = itertools.count()


class ToolCallsAhead(threading.Thread):
    """`then` runs once the scan is over: more work for the core the scan leaves free."""

    def __init__(self, uri: str, rank: int, busy_ms: int, then: Callable[[], None] | None = None) -> None:
        super().__init__(daemon=True)
        self.uri, self.rank, self.busy_ms, self.then = uri, rank, busy_ms, then
        n = next(_names)
        self.alias = f"oc_tools_{n}"  # `oc_`: detached with the databases (`sqlite.detach_all`)
        self.memory = f"file:ocsight-tools-{os.getpid()}-{n}?mode=memory&cache=shared"
        # holds the in-memory database open from its first statement to its copy
        self._keep: sqlite3.Connection | None = sqlite3.connect(self.memory, uri=True, check_same_thread=False)
        self.ok = False
        self.start()

    def run(self) -> None:
        try:
            con = sqlite3.connect(self.memory, uri=True, isolation_level=None)
        except sqlite3.Error:
            return
        try:
            con.execute(f"PRAGMA busy_timeout = {self.busy_ms}")
            con.execute("ATTACH DATABASE ? AS oc", (self.uri,))
            con.execute("CREATE TEMP VIEW src_part AS SELECT id, message_id, session_id, data FROM oc.part")
            con.execute(extract.staging_table_sql("main.stage_tool", extract.TOOL_FIELDS))  # as for the cubes
            con.execute(extract.first_tool_calls_statement("main.stage_tool"), {"rank": self.rank})
            self.ok = True
        except sqlite3.Error:
            pass  # left to the ordinary staging, which reports what it finds
        finally:
            con.close()
            if self.then is not None:
                self.then()

    def copy_into(self, con: sqlite3.Connection) -> bool:
        """Waits for the scan and appends its rows to `temp.stage_tool`; False when there are none to take."""
        self.join()
        try:
            if not self.ok:
                return False
            con.execute("ATTACH DATABASE ? AS " + self.alias, (self.memory,))
            con.execute(f"INSERT INTO temp.stage_tool SELECT * FROM {self.alias}.stage_tool")
            return True
        finally:
            self.close()

    def close(self) -> None:
        if self._keep is not None:
            self._keep.close()
            self._keep = None
