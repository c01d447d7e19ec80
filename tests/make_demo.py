"""Writes the bundled demo store (`exporter/ocsight/demo/`): `python tests/make_demo.py`.

A small store in OpenCode 1.18's schema whose oldest sessions also sit in a legacy JSON tree,
as on a machine upgraded from OpenCode 1.1: the reader must count them once.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import storegen  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "exporter" / "ocsight" / "demo"


def main() -> None:
    plan = storegen.plan_store(seed=2026, sessions=24, turns=(1, 4), eras=("1.1", "1.15", "1.18", "1.18", "1.18"),
                               projects=3, days=45, text_scale=0)
    shutil.rmtree(DEMO, ignore_errors=True)
    storegen.write_sqlite(plan, DEMO / "opencode.db")
    legacy = {s["id"] for s in plan.sessions if s["version"] == storegen.ERAS["1.1"]}
    storegen.write_legacy(plan, DEMO / "storage", legacy)
    # Rollback journal, not WAL: a read-only open of a WAL database needs to create its -shm file,
    # and an installed package directory may not be writable.
    con = sqlite3.connect(DEMO / "opencode.db")
    con.execute("PRAGMA journal_mode = DELETE")
    con.execute("VACUUM")
    con.close()
    print(f"demo store written to {DEMO}")


if __name__ == "__main__":
    main()
