"""The state of `ocsight live`'s session picker and what a key does to it (drawn by `live`).

Row 0 follows the newest session, whichever it is; rows 1.. are recent sessions, the most recently
active first. Arrows or j/k move, Enter or a row's number chooses, Esc or q goes back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ocsight.index.reader import RecentSession

PICKER_SIZE = 15  # sessions the picker lists at most; digits choose the first nine


@dataclass(frozen=True)
class Picker:
    """The picker's state: row 0 follows the newest session, rows 1.. are `sessions`."""

    sessions: tuple[RecentSession, ...]
    cursor: int = 0

    def moved(self, by: int) -> Picker:
        return replace(self, cursor=max(0, min(len(self.sessions), self.cursor + by)))

    def choice(self, row: int) -> str | None:
        """The session ID a row stands for (None: the newest)."""
        return None if row == 0 else self.sessions[row - 1].id


def open_picker(sessions: Sequence[RecentSession], following: str | None, height: int) -> Picker:
    """A picker of as many sessions as the terminal's height shows, its cursor on the one followed."""
    shown = tuple(sessions[:max(1, min(PICKER_SIZE, height - 7))])
    rows = [s.id for s in shown]
    return Picker(shown, rows.index(following) + 1 if following in rows else 0)


@dataclass(frozen=True)
class Chosen:
    session: str | None  # None: follow the newest


def pick_key(p: Picker, key: str) -> Picker | Chosen | None:
    """What a key does: the picker moved (or unchanged), a choice, or None to go back without one."""
    if key in ("up", "k"):
        return p.moved(-1)
    if key in ("down", "j"):
        return p.moved(1)
    if key == "enter":
        return Chosen(p.choice(p.cursor))
    if key.isdigit() and int(key) <= len(p.sessions):
        return Chosen(p.choice(int(key)))
    if key in ("esc", "q"):
        return None
    return p
