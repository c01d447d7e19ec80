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
from typing import Any
from pathlib import Path

Stamp = tuple[tuple[str, int, int], ...]  # (path, size, mtime in ns); -1, -1 when absent


def databases(dirs: Sequence[Path]) -> list[Path]:
    """OpenCode's database files in the data directories (a directory, or a database named directly)."""
    out: list[Path] = []
    for d in dirs:
        if d.suffix == ".db" and not d.is_dir():
            out.append(d)
        elif d.is_dir():
            out += sorted(p for p in d.glob("opencode*.db") if p.is_file())
    return out


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def stamp(dirs: Sequence[Path]) -> Stamp:
    """The databases' and their WALs' sizes and modification times: equal until OpenCode writes."""
    return tuple((str(p), *_stat(p)) for db in databases(dirs) for p in (db, Path(f"{db}-wal")))


def legacy_roots(dirs: Sequence[Path]) -> list[Path]:
    """Where legacy trees are, or would appear: each directory's `storage/`, or a tree named directly."""
    return [d if d.name == "storage" else d / "storage" for d in dirs if d.suffix != ".db"]


def legacy_written(events: Iterable[tuple[Any, str]], roots: Sequence[Path]) -> bool:
    """Whether a watcher's events (change, path) touched a legacy tree (not OpenCode's logs, snapshots
    or databases, which have their stamp)."""
    prefixes = tuple(f"{r}{os.sep}" for r in roots)
    return any(path.startswith(prefixes) or path in map(str, roots) for _change, path in events)
