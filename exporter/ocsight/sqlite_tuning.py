"""Process-wide SQLite settings that Python's `sqlite3` module does not expose.

SQLite keeps memory statistics by default, and takes one global mutex on every allocation to do so:
two connections working at once on two threads (as a first read does, `store.half_ahead`) then
contend on every malloc and run little faster than one. ocsight never reads the statistics, so it
turns them off through the C API (`sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0)`), on the very
library the `sqlite3` module is linked to. That is only allowed while SQLite is shut down, so only
a process's entry point may do it, before it opens any connection.
"""

from __future__ import annotations

SQLITE_CONFIG_MEMSTATUS = 9
SQLITE_OK = 0


def _loaded_library() -> str | None:
    """The path of the shared libsqlite3 this process has mapped (None when `_sqlite3` embeds it)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").split(None, 5)[-1]
                if "/libsqlite3" in path and ".so" in path:
                    return path
    except OSError:
        pass
    return None


def disable_memory_statistics() -> bool:
    """Turns SQLite's memory statistics off; True when done. Must run before any connection is opened."""
    import sqlite3  # noqa: F401 - maps the library the module uses

    path = _loaded_library()
    if path is None:
        return False
    import ctypes

    try:
        lib = ctypes.CDLL(path)
        if lib.sqlite3_shutdown() != SQLITE_OK:
            return False
        done = lib.sqlite3_config(SQLITE_CONFIG_MEMSTATUS, ctypes.c_int(0)) == SQLITE_OK
        return lib.sqlite3_initialize() == SQLITE_OK and done
    except (OSError, AttributeError):
        return False
