"""The SQLite library ocsight reads and indexes with: a current SQLite where a wheel bundles one.

Python's `sqlite3` runs on the system's SQLite, 3.40 on Debian 12. `pysqlite3-binary` bundles a
current SQLite (3.51) behind the same DB-API, whose sorts, aggregates and JSON lookups take a
tenth less CPU on a first read of a large store; it has wheels for x86-64 Linux only, so
elsewhere the standard library's module is used. `OCSIGHT_SQLITE=stdlib` chooses it everywhere;
the long-running commands set it (`cli.entry`): the wheel's SQLite keeps temporary tables in
memory whatever `temp_store` says.

Every module opens its connections and catches its errors through `sqlite3` from here, never a
mix: two SQLite libraries in one process neither see each other's file locks nor share their
exception classes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3
else:
    sqlite3 = None
    if os.environ.get("OCSIGHT_SQLITE", "").strip().lower() != "stdlib":
        try:
            from pysqlite3 import dbapi2 as sqlite3
        except ImportError:
            pass
    if sqlite3 is None:
        import sqlite3

__all__ = ["library_path", "read_beside", "sqlite3"]


def library_path() -> str | None:
    """The shared object holding the SQLite in use, whose C API `ocsight.sqlite_tuning` calls:
    the bundling extension itself, or the system's libsqlite3 the standard module links to."""
    if sqlite3.__name__.startswith("pysqlite3"):
        import sys

        return getattr(sys.modules.get("pysqlite3._sqlite3"), "__file__", None)
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").split(None, 5)[-1]
                if "/libsqlite3" in path and ".so" in path:
                    return path
    except OSError:
        pass
    return None


def read_beside(uri: str, queries: Sequence[tuple[str, Sequence]], timeout: float,
                row_factory: Callable | None = None) -> Callable[[], list[list] | None]:
    """Runs read-only `queries` on a connection of their own to `uri`, on a thread, while the
    caller's connection goes on (SQLite releases the GIL while a statement runs). Returns the
    function that waits for their rows: None when that connection failed, for the caller to read
    them itself."""
    rows: list[list] = []

    def run() -> None:
        try:
            side = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
            try:
                side.row_factory = row_factory
                rows.extend(side.execute(sql, args).fetchall() for sql, args in queries)
            finally:
                side.close()
        except sqlite3.Error:
            rows.clear()

    thread = threading.Thread(target=run, name="ocsight-read-beside", daemon=True)
    thread.start()

    def result() -> list[list] | None:
        thread.join()
        return rows if len(rows) == len(queries) else None

    return result
