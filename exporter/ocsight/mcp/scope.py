"""The query layer (`ocsight.query`) over a subset of sessions, unchanged.

`query` reads the cubes by their plain names. A temporary view of the same name shadows the
index's table for this connection only, so a session's totals, or those of one batch of session
trees, are the very totals `query` defines. Temporary objects live in SQLite's temp database: the
index file is not written. Callers hold the service's lock, so no refresh runs meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from ocsight.sqlite_library import sqlite3

CUBES = ("usage_cube", "tool_cube")
# Sessions per batch when every session must be looked at: bounds the memory of `query.sessions`
# (about 4 MB per 1,000 sessions) on large stores.
BATCH_SESSIONS = 1000


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


def tree_batches(con: sqlite3.Connection, size: int = BATCH_SESSIONS) -> Iterator[list[str]]:
    """Every session with usage, in batches of whole session trees.

    `query.sessions` nests a session under its parent only when both are in its input, so a batch
    that holds whole trees (by the session records, whatever the window) gives each session the
    same place, children and roll-up as one run over everything. Sessions whose parent chain never
    reaches a root (a cycle) share one batch; sessions without a record are trees of their own.
    """
    rows = con.execute(
        """WITH RECURSIVE up(id, root) AS (
            SELECT id, id FROM main.session WHERE parent_id IS NULL
                OR parent_id NOT IN (SELECT id FROM main.session)
            UNION SELECT s.id, up.root FROM main.session s JOIN up ON s.parent_id = up.id)
        SELECT u.session_id, CASE WHEN up.root IS NOT NULL THEN up.root
                                  WHEN s.id IS NULL THEN u.session_id ELSE '' END
        FROM (SELECT DISTINCT session_id FROM main.usage_cube) u
        LEFT JOIN up ON up.id = u.session_id LEFT JOIN main.session s ON s.id = u.session_id
        ORDER BY 2, 1"""
    ).fetchall()
    batch: list[str] = []
    last_root: str | None = None
    for sid, root in rows:
        if root != last_root and len(batch) >= size:
            yield batch
            batch = []
        batch.append(sid)
        last_root = root
    if batch:
        yield batch
