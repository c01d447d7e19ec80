"""The one exception type the CLI turns into a one-line message and an exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_DATA = 1  # missing, unreadable, corrupt or locked data
EXIT_USAGE = 2  # bad flags or values (click uses 2 as well)
EXIT_INTERNAL = 70  # a bug: please report it


class OcsightError(Exception):
    """A failure the user can act on; its message is printed as one line, without a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_DATA) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NoData(OcsightError):
    """A data directory that holds nothing of OpenCode's (yet): the sidecar waits for it."""
