"""The index's tables. The index is a cache: a file of another schema version is rebuilt, not migrated.

It holds sessions, projects and two cubes: valid messages and tool calls summed per session,
15-minute bucket and dimension (role, provider, model, agent, error; tool), and whether they are
copies a fork made (`fork_copy`, 1: set aside unless asked for; `ocsight.normalise`). Every real time zone's
midnight falls on a 15-minute boundary, so day windows in any zone are exact.
"""

from __future__ import annotations

SCHEMA_VERSION = "8"  # bump on any change below

SCHEMA = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID",
    "CREATE TABLE source_state (source TEXT PRIMARY KEY, state TEXT NOT NULL) WITHOUT ROWID",
    # Looked up by ID for every cube row a report joins: stored in their ID's order (one B-tree probe each)
    "CREATE TABLE project (id TEXT PRIMARY KEY, rank INTEGER NOT NULL, worktree TEXT, name TEXT) WITHOUT ROWID",
    """CREATE TABLE session (id TEXT PRIMARY KEY, rank INTEGER NOT NULL, project_id TEXT, parent_id TEXT,
        directory TEXT, title TEXT, version TEXT, time_created INTEGER, time_updated INTEGER) WITHOUT ROWID""",
    """CREATE TABLE usage_cube (session_id TEXT, bucket INTEGER, role TEXT, provider TEXT, model TEXT, agent TEXT,
        error TEXT, messages INTEGER, input INTEGER, output INTEGER, reasoning INTEGER, cache_read INTEGER,
        cache_write INTEGER, stored_pico INTEGER, est_zero_pico INTEGER, est_all_pico INTEGER,
        unpriced_zero INTEGER, unpriced_all INTEGER, fork_copy INTEGER)""",
    """CREATE TABLE tool_cube (session_id TEXT, bucket INTEGER, provider TEXT, model TEXT, agent TEXT, tool TEXT,
        calls INTEGER, errors INTEGER, fork_copy INTEGER)""",
    # Records a source could not give us: counted and shown; those of a session are redone with it.
    """CREATE TABLE skipped (source TEXT NOT NULL, ref TEXT NOT NULL, reason TEXT NOT NULL, session_id TEXT,
        PRIMARY KEY (source, ref)) WITHOUT ROWID""",
    # Rates in picodollars per token (`pricing.rates.price_rows`); kind -1 is the base rate.
    """CREATE TABLE price (provider TEXT NOT NULL, model TEXT NOT NULL, kind INTEGER NOT NULL, size INTEGER NOT NULL,
        input REAL, output REAL, cache_read REAL, cache_write REAL, PRIMARY KEY (provider, model, kind, size))""",
    """CREATE TABLE price_source (provider TEXT NOT NULL, model TEXT NOT NULL, source TEXT,
        PRIMARY KEY (provider, model)) WITHOUT ROWID""",
    "CREATE TABLE legacy_dir (path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE legacy_open (source TEXT, session_id TEXT, PRIMARY KEY (source, session_id)) WITHOUT ROWID",
]
# The cubes' indexes, by name: a whole read drops them and builds them again once its rows are in
# (one sort, rather than an index update a row).
CUBE_INDEXES = {
    "usage_cube_session": "CREATE INDEX usage_cube_session ON usage_cube (session_id)",
    "tool_cube_session": "CREATE INDEX tool_cube_session ON tool_cube (session_id)",
}
