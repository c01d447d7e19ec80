"""One sidecar per set of data directories.

Two `ocsight watch` processes on the same directories would report the same identity, so each one's
metrics would overwrite the other's series, and both would send every span. A lock file in ocsight's
state directory, held with `flock` for the process's life, keeps the second one out; the kernel
drops the lock when the process ends, however it ends (SIGKILL included), so no stale lock is left.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from ocsight import paths
from ocsight.errors import OcsightError


def default_path(data_dirs: Sequence[Path]) -> Path:
    """The lock of these directories, in any order and by any path to them."""
    key = "\n".join(sorted(str(Path(d).resolve()) for d in data_dirs))
    return paths.ocsight_state() / f"watch-{hashlib.sha256(key.encode()).hexdigest()[:16]}.lock"


class Held:
    """A lock this process holds until `release()`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    def release(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:  # a sidecar that failed to start after it took the lock
        self.release()


def acquire(path: Path, what: str) -> Held:
    """Takes the lock at `path` (created private to the user), or raises a one-line `OcsightError`
    naming the process that holds it; `what` says what the lock guards."""
    try:
        paths.private_dir(path.parent)
        paths.private_file(path)
        fd = os.open(path, os.O_RDWR)
    except OSError as e:
        raise OcsightError(f"cannot create the sidecar's lock {path}: {e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _holder(fd)
        os.close(fd)
        if isinstance(e, BlockingIOError):
            raise OcsightError(f"another ocsight watch{holder} already follows {what} (lock: {path})") from None
        raise OcsightError(f"cannot lock {path}: {e}") from None
    # the holder's process ID, for the message a second sidecar prints
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return Held(path, fd)


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (process {pid})" if pid.isdigit() else ""
