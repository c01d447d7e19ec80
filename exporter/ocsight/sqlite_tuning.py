"""Process-wide SQLite settings that Python's `sqlite3` module does not expose.

SQLite keeps memory statistics by default, and takes one global mutex on every allocation to do so:
two connections working at once on two threads (as a first read does, `store.half_ahead`) then
contend on every malloc and run little faster than one. ocsight never reads the statistics, so it
turns them off (`SQLITE_CONFIG_MEMSTATUS`).

Each connection serves its small allocations from a lookaside pool of 40 slots by default; a
statement holding more values at once (a staging row's twenty JSON fields, a sorter's records)
allocates the rest with malloc and frees them again, row after row. 500 slots a connection (600 KB)
take a sixteenth off a first read's instructions (`SQLITE_CONFIG_LOOKASIDE`).

Both go through the C API of the very library ocsight uses (`ocsight.sqlite_library`). That is
only allowed while SQLite is shut down, so only a process's entry point may do it, before it opens
any connection.
"""

from __future__ import annotations

SQLITE_CONFIG_MEMSTATUS = 9
SQLITE_CONFIG_LOOKASIDE = 13
SQLITE_OK = 0
LOOKASIDE = (1200, 500)  # bytes a slot, slots a connection


def tune_process() -> bool:
    """Applies the settings above; True when done. Must run before any connection is opened."""
    from ocsight.sqlite_library import library_path

    path = library_path()
    if path is None:
        return False
    import ctypes

    try:
        lib = ctypes.CDLL(path)
        if lib.sqlite3_shutdown() != SQLITE_OK:
            return False
        done = lib.sqlite3_config(SQLITE_CONFIG_MEMSTATUS, ctypes.c_int(0)) == SQLITE_OK
        slot, slots = LOOKASIDE
        lookaside = lib.sqlite3_config(SQLITE_CONFIG_LOOKASIDE, ctypes.c_int(slot), ctypes.c_int(slots))
        done = lookaside == SQLITE_OK and done
        return lib.sqlite3_initialize() == SQLITE_OK and done
    except (OSError, AttributeError):
        return False
