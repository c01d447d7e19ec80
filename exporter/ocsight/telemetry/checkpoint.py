"""What the sidecar has delivered: a durable record of every record a receiver acknowledged.

A record is marked only after its export succeeded, in one transaction, so a crash at any point
re-sends at most what was not yet acknowledged (and span IDs make a re-send harmless).
"""

from __future__ import annotations

import builtins
import hashlib
import sqlite3
import time
from pathlib import Path

from ocsight import paths
from ocsight.errors import OcsightError

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS exported (record TEXT PRIMARY KEY, session_id TEXT, exported_ms INTEGER) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS open_session (session_id TEXT PRIMARY KEY) WITHOUT ROWID",
]


def default_path(sources_key: str, destination: str) -> Path:
    digest = hashlib.sha256(f"{sources_key}\n{destination}".encode()).hexdigest()[:16]
    return paths.ocsight_state() / f"watch-{digest}.sqlite"


class Checkpoint:
    def __init__(self, path: Path) -> None:
        try:
            paths.private_dir(path.parent)
            paths.private_file(path)
            self.con = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self.con.execute("PRAGMA journal_mode = WAL")
            self.con.execute("PRAGMA synchronous = FULL")  # an acknowledged record stays marked
            for ddl in SCHEMA:
                self.con.execute(ddl)
        except (OSError, sqlite3.DatabaseError) as e:
            raise OcsightError(f"cannot open the sidecar's checkpoint {path}: {e}") from None
        self.path = path

    def get(self, key: str) -> str | None:
        row = self.con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set(self, key: str, value: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def baseline_ms(self, now_ms: int) -> int:
        """Records older than the sidecar's first start are history: sent only on request (backfill)."""
        value = self.get("baseline_ms")
        if value is None:
            self.set("baseline_ms", str(now_ms))
            return now_ms
        return int(value)

    def exported(self, records: list[str]) -> builtins.set[str]:  # `set` is a method here
        out: builtins.set[str] = builtins.set()
        for i in range(0, len(records), 500):
            chunk = records[i : i + 500]
            out.update(r[0] for r in self.con.execute(
                f"SELECT record FROM exported WHERE record IN ({', '.join('?' * len(chunk))})", chunk))
        return out

    def mark(self, records: list[tuple[str, str]]) -> None:
        now = int(time.time() * 1000)
        self.con.execute("BEGIN IMMEDIATE")
        try:
            self.con.executemany("INSERT OR IGNORE INTO exported VALUES (?, ?, ?)", [(r, s, now) for r, s in records])
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    def open_sessions(self) -> builtins.set[str]:
        return {r[0] for r in self.con.execute("SELECT session_id FROM open_session")}

    def set_open_sessions(self, sessions: builtins.set[str]) -> None:
        self.con.execute("BEGIN IMMEDIATE")
        self.con.execute("DELETE FROM open_session")
        self.con.executemany("INSERT INTO open_session VALUES (?)", [(s,) for s in sorted(sessions)])
        self.con.execute("COMMIT")

    def count(self) -> int:
        return self.con.execute("SELECT count(*) FROM exported").fetchone()[0]

    def close(self) -> None:
        self.con.close()
