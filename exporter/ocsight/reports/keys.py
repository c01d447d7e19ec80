"""Single key presses from a terminal, for `ocsight live`'s session picker.

The terminal is put in cbreak mode (keys arrive one by one, unechoed; Ctrl-C still interrupts) for
as long as the `Keys` context is open, and restored on leaving it however it is left. POSIX only
(termios); the live view runs without keys where there is none.
"""

from __future__ import annotations

import os
import select
from types import TracebackType
from typing import Any

# Escape sequences of the keys the picker knows (xterm and its application-cursor mode).
SEQUENCES = {"\x1b[A": "up", "\x1bOA": "up", "\x1b[B": "down", "\x1bOB": "down"}
# A lone Esc and the start of a sequence are told apart by what follows within this many seconds.
ESC_WAIT = 0.05


def available(stdin: Any, stdout: Any) -> bool:
    """Whether both ends are a terminal this platform can read keys from."""
    try:
        import termios  # noqa: F401
    except ImportError:
        return False
    return bool(stdin.isatty() and stdout.isatty())


def parse(text: str) -> list[str]:
    """Key names in `text`: "up", "down", "enter", "esc", or the character typed."""
    keys: list[str] = []
    i = 0
    while i < len(text):
        seq = next((s for s in SEQUENCES if text.startswith(s, i)), None)
        if seq:
            keys.append(SEQUENCES[seq])
            i += len(seq)
            continue
        c = text[i]
        if c == "\x1b" and text.startswith("[", i + 1):
            # another CSI sequence (a function key): skip it whole
            j = i + 2
            while j < len(text) and not ("@" <= text[j] <= "~"):
                j += 1
            i = j + 1
            continue
        keys.append({"\r": "enter", "\n": "enter", "\x1b": "esc"}.get(c, c))
        i += 1
    return keys


class Keys:
    """Key presses from a terminal file descriptor, in cbreak mode while open."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._saved: list[Any] | None = None

    def __enter__(self) -> Keys:
        import termios
        import tty

        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        import termios

        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def _ready(self, timeout: float | None) -> bool:
        return bool(select.select([self.fd], [], [], timeout)[0])

    def read(self, timeout: float | None) -> list[str]:
        """The keys pressed, waiting up to `timeout` seconds (None: until one is); [] when none was."""
        if not self._ready(timeout):
            return []
        raw = os.read(self.fd, 256)
        if not raw:
            raise EOFError("the terminal closed")
        if raw == b"\x1b" and self._ready(ESC_WAIT):
            raw += os.read(self.fd, 256)
        return parse(raw.decode("utf-8", "replace"))
