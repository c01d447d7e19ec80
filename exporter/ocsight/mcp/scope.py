"""The query layer (`ocsight.query`) over a subset of sessions, unchanged.

`query` reads the cubes by their plain names. A temporary view of the same name shadows the
index's table for this connection only, so a session's totals, or those of the session trees
`top_sessions` chose, are the very totals `query` defines. Temporary objects live in SQLite's temp
database: the index file is not written. Callers hold the service's lock, so no refresh runs
meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from ocsight.sqlite_library import sqlite3

CUBES = ("usage_cube", "tool_cube")


@contextmanager
def only(con: sqlite3.Connection, session_ids: Iterable[str]) -> Iterator[None]:
    """Within the block, the cubes hold only these sessions' rows."""
    con.execute("DROP TABLE IF EXISTS temp.ocsight_scope")
    con.execute("CREATE TEMP TABLE ocsight_scope (session_id TEXT PRIMARY KEY) WITHOUT ROWID")
    try:
        con.executemany("INSERT OR IGNORE INTO temp.ocsight_scope VALUES (?)", ((s,) for s in session_ids))
        for cube in CUBES:
            con.execute(f"CREATE TEMP VIEW {cube} AS SELECT * FROM main.{cube} "
                        "WHERE session_id IN (SELECT session_id FROM temp.ocsight_scope)")
        yield
    finally:
        for cube in CUBES:
            con.execute(f"DROP VIEW IF EXISTS temp.{cube}")
        con.execute("DROP TABLE IF EXISTS temp.ocsight_scope")


def subtree(con: sqlite3.Connection, session_id: str) -> list[str]:
    """A session and every session below it (its subagents, theirs, ...), by the session records."""
    rows = con.execute(
        "WITH RECURSIVE tree(id) AS (SELECT ? UNION "
        "SELECT s.id FROM main.session s JOIN tree ON s.parent_id = tree.id) SELECT id FROM tree",
        (session_id,),
    ).fetchall()
    return [r[0] for r in rows]
