"""The SQLite ocsight needs: the standard library's `sqlite3`, on SQLite 3.35 or later.

Every statement ocsight runs is written for 3.35 (JSON through `json_extract`, materialised CTEs,
`UPDATE ... FROM`, upserts): Ubuntu 22.04 ships 3.37, RHEL 9 3.34, macOS and Python.org builds newer.
"""

from __future__ import annotations

import sqlite3

from ocsight.errors import OcsightError

MINIMUM = (3, 35, 0)


def require_sqlite(version: tuple[int, int, int] = sqlite3.sqlite_version_info) -> None:
    """A one-line error naming the version needed, rather than a syntax error deep in a read."""
    if version < MINIMUM:
        found = ".".join(str(n) for n in version)
        raise OcsightError(f"ocsight needs SQLite {'.'.join(str(n) for n in MINIMUM)} or later; this Python's "
                           f"sqlite3 module uses SQLite {found}")
