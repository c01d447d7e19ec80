"""Where things live on disk: the XDG base directories OpenCode and ocsight use, and the demo store.

OpenCode keeps its data, cache and config under the XDG directories on Linux and macOS alike;
ocsight keeps its index and price cache under `$XDG_CACHE_HOME/ocsight` and the sidecar's
checkpoint under `$XDG_STATE_HOME/ocsight`, never inside OpenCode's directories.
"""

from __future__ import annotations

import os
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent / "demo"


def _xdg(name: str, fallback: str) -> Path:
    value = os.environ.get(name)
    # the XDG spec ignores relative values
    return Path(value) if value and os.path.isabs(value) else Path.home() / fallback


def data_home() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share")


def cache_home() -> Path:
    return _xdg("XDG_CACHE_HOME", ".cache")


def config_home() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config")


def state_home() -> Path:
    return _xdg("XDG_STATE_HOME", ".local/state")


def default_data_dir() -> Path:
    """OpenCode's data directory."""
    return data_home() / "opencode"


def private_dir(path: Path) -> None:
    """Creates `path` (with its parents) if it is missing and makes it its owner's alone: ocsight's
    cache and state hold session titles and IDs."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def private_file(path: Path) -> None:
    """Creates `path` empty if it is missing, and makes it its owner's alone. SQLite gives a
    database's journal, WAL and shared-memory files the database file's mode, so one call before
    SQLite first opens a file keeps all of them private."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def keep_private(root: Path) -> None:
    """Makes everything under `root` its owner's alone (0700 directories, 0600 files): files that
    earlier releases wrote with the user's umask included. Symbolic links are left alone."""
    for dirpath, _dirs, files in os.walk(root):
        try:
            os.chmod(dirpath, 0o700)
            for name in files:
                path = os.path.join(dirpath, name)
                if not os.path.islink(path):
                    os.chmod(path, 0o600)
        except FileNotFoundError:
            continue  # removed meanwhile (another run's temporary file)


def ocsight_state() -> Path:
    """ocsight's own state: the sidecar's checkpoints."""
    return state_home() / "ocsight"


def ocsight_cache() -> Path:
    """ocsight's own cache: the index files and the price cache."""
    return cache_home() / "ocsight"
