"""What tells the sidecar that OpenCode wrote something.

A file watcher's events only say when to look. Reading OpenCode's database opens, and may write,
its `-shm` file (and a killed OpenCode leaves its `-wal` and `-shm` behind), so a sidecar that
cycled on every event would wake itself for good. What changed is decided from OpenCode's own
writes: each database's and its WAL's size and modification time (a read changes neither), and, for
a legacy JSON tree, events under `storage/`, which ocsight never opens for writing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ocsight.sources.database import file_stamp

Stamp = tuple[tuple[str, tuple[int, ...]], ...]  # each database with its and its WAL's size and mtime


def stamp(databases: Sequence[Path]) -> Stamp:
    """The databases' and their WALs' sizes and modification times: equal until OpenCode writes."""
    return tuple((str(db), tuple(file_stamp(db))) for db in databases)


def legacy_written(events: Iterable[tuple[Any, str]], roots: Sequence[Path]) -> bool:
    """Whether a watcher's events (change, path) touched a legacy tree (not OpenCode's logs, snapshots
    or databases, which have their stamp). `roots` and the events' paths are absolute."""
    prefixes = tuple(f"{r}{os.sep}" for r in roots)
    return any(path.startswith(prefixes) or path in map(str, roots) for _change, path in events)
