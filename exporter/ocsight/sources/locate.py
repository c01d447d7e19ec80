"""Finding OpenCode's data: data directories, their databases and legacy JSON trees."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ocsight import paths
from ocsight.errors import NoData, OcsightError


LEGACY_RANK_BASE = 1000  # legacy trees rank after every database: a database's copy of a record wins


@dataclass(frozen=True)
class Tree:
    """A legacy `storage/` tree and its rank among the sources."""

    root: str
    rank: int

    @property
    def source(self) -> str:
        return f"json:{self.root}"

    @property
    def message_root(self) -> str:
        return f"{self.root}/message"


@dataclass(frozen=True)
class Sources:
    """Everything one run reads. Databases come first in priority order; legacy trees after them."""

    data_dirs: tuple[Path, ...]
    databases: tuple[Path, ...]
    legacy_dirs: tuple[Path, ...]
    demo: bool = False

    @property
    def key(self) -> str:
        """Identifies this set of sources, so each gets its own index."""
        return "\n".join(str(p) for p in (*self.databases, *self.legacy_dirs))

    def trees(self) -> tuple[Tree, ...]:
        """The legacy trees, ranked after the databases."""
        return tuple(Tree(str(p), rank) for rank, p in enumerate(self.legacy_dirs, LEGACY_RANK_BASE))


def requested_data_dirs(explicit: tuple[str, ...] | list[str] = ()) -> tuple[list[Path], bool]:
    """The data directories asked for, and whether the user named them (flag or environment)."""
    if explicit:
        return [Path(p).expanduser() for p in explicit], True
    env = os.environ.get("OPENCODE_DATA_DIR")
    if env:
        parts = [p for chunk in env.split(os.pathsep) for p in chunk.split(",") if p.strip()]
        return [Path(p.strip()).expanduser() for p in parts], True
    return [paths.default_data_dir()], False


def _databases_in(data_dir: Path) -> list[Path]:
    db_env = os.environ.get("OPENCODE_DB")
    if db_env:
        db = Path(db_env).expanduser()
        db = db if db.is_absolute() else data_dir / db
        if not db.is_file():
            raise OcsightError(f"OPENCODE_DB points at {db}, which does not exist")
        return [db]
    found = sorted(p for p in data_dir.glob("opencode*.db") if p.is_file())
    # opencode.db (the stable channel) first; other channels after it, by name.
    return sorted(found, key=lambda p: (p.name != "opencode.db", p.name))


def _looks_like_storage(path: Path) -> bool:
    return any((path / sub).is_dir() for sub in ("message", "session", "part"))


def locate(explicit: tuple[str, ...] | list[str] = (), demo: bool = False, given_by: str = "--data-dir") -> Sources:
    """Resolves data directories into sources, or raises a one-line error that says where it looked.

    `given_by`: what named the `explicit` directories (`--data-dir`, `OCSIGHT_DATA_DIRS`, the config
    file's `data_dirs`), so that a missing one is blamed on what named it."""
    if demo:
        demo_dir = paths.DEMO_DIR
        return Sources((demo_dir,), tuple(_databases_in_plain(demo_dir)), (demo_dir / "storage",), demo=True)
    dirs, named = requested_data_dirs(explicit)
    origin = (f"given by {given_by}" if explicit else "given by OPENCODE_DATA_DIR" if named
              else "set --data-dir or OPENCODE_DATA_DIR")
    databases: list[Path] = []
    legacy: list[Path] = []
    for d in dirs:
        if d.is_file() and d.suffix == ".db":
            databases.append(d)
            continue
        if not d.exists():
            raise OcsightError(f"OpenCode data directory not found: {d} ({origin})")
        if not d.is_dir():
            raise OcsightError(f"not a directory: {d} ({origin})")
        if _looks_like_storage(d) and not list(d.glob("opencode*.db")):
            legacy.append(d)  # pointed straight at a storage/ tree
            continue
        databases.extend(_databases_in(d))
        if (d / "storage").is_dir():
            legacy.append(d / "storage")
    if not databases and not legacy:
        where = ", ".join(str(d) for d in dirs)
        raise NoData(f"no OpenCode data in {where} (looked for opencode*.db and storage/)")
    return Sources(tuple(dirs), tuple(_dedupe(databases)), tuple(_dedupe(legacy)))


def _databases_in_plain(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.glob("opencode*.db") if p.is_file())


def _dedupe(found: list[Path]) -> list[Path]:
    seen: set[Path] = set()
    out = []
    for p in found:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def has_default_data() -> bool:
    """Whether the machine has OpenCode data where OpenCode keeps it (used to fall back to the demo)."""
    d = paths.default_data_dir()
    return d.is_dir() and (any(d.glob("opencode*.db")) or (d / "storage").is_dir())
