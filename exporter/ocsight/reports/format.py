"""How figures read in a terminal: money (and unknown money), token counts, counted words, project paths."""

from __future__ import annotations

import os
from typing import Any

MIN_TAIL = 12  # the characters of a path's tail kept at least (behind `…`)
UNKNOWN = "—"  # a cost no price source knows
PARTIAL = "≥"  # a cost that leaves out unpriced messages: the true cost is at least this


def money(cost: dict[str, Any], brief: bool = False) -> str:
    """A cost block of a document: `—` when its messages are unpriced and nothing priced cost
    anything, `≥$1.23` when some of them are unpriced (the priced part), else `$1.23`; then, unless
    `brief`, the part ocsight estimated."""
    if cost["unpriced_messages"] and not cost["usd"]:
        return UNKNOWN
    text = f"{PARTIAL if cost['unpriced_messages'] else ''}${cost['usd']:,.2f}"
    if cost["estimated_usd"] and not brief:
        text += f" (est. ${cost['estimated_usd']:,.2f})"
    return text


def unpriced_note(models: list[dict[str, Any]], mode: str) -> str:
    """The line that says what `—` and `≥` mean, naming the models (`unpriced_models` of a document)."""
    names = ", ".join(f"{u['provider']}/{u['model']} ({counted(u['messages'], 'message')})" for u in models)
    if mode == "stored":
        return (f"{UNKNOWN} no stored cost and no price known, {PARTIAL} partly so (stored mode counts only "
                f"what OpenCode stored): {names}")
    return f"{UNKNOWN} cost unknown, {PARTIAL} partly priced: no price source knows {names}"


def tokens(n: int) -> str:
    return f"{n:,}"


def compact_number(n: int, exact_below: int = 100_000) -> str:
    """A count in at most six characters: 999, 12,345, 99,999, 123k, 1.23M, 12.3M, 1.23B; below
    `exact_below` written out (with `exact_below=1000`: 12.3k, 99.9k)."""
    if n < exact_below:
        return f"{n:,}"
    for size, unit in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if n >= size:
            value = n / size
            for digits in (2, 1, 0):
                text = f"{value:.{digits}f}"
                if len(text) <= 4:
                    return text + unit
            return f"{value:,.0f}{unit}"
    return f"{n:,}"


def counted(n: int, word: str, plural: str | None = None) -> str:
    """`1 error`, `2 errors`, `1,248 sessions`."""
    return f"{n:,} {word if n == 1 else plural or word + 's'}"


def fork_copies(n: int, counted_again: bool) -> str:
    """The messages a fork copied from its source session, and whether they are counted here:
    `8 messages, set aside`."""
    return f"{counted(n, 'message')}, {'counted again' if counted_again else 'set aside'}"


def home_path(path: str) -> str:
    """A path with the user's home as `~`."""
    home = os.path.expanduser("~")
    if home != "/" and (path == home or path.startswith(home + "/")):
        return "~" + path[len(home):]
    return path


def short_path(path: str, width: int = 28) -> str:
    """A project path as a reader tells projects apart: home as `~`, and its end kept when long."""
    return tail(home_path(path), width)


def tail(text: str, width: int) -> str:
    """The end of `text` in `width` characters behind `…`, starting at a `/` when that keeps at least
    `MIN_TAIL` of them."""
    if len(text) <= width:
        return text
    end = text[-(width - 1):]
    cut = end.find("/", 1)
    if cut != -1 and len(end) - cut >= MIN_TAIL:
        end = end[cut:]
    return "…" + end


def distinct_tails(paths: list[str], width: int, known: tuple[str, ...] = ()) -> list[str]:
    """Each path's tail in `width` characters, or longer where it would also be the end of another
    path of `paths` or `known` (`…/services/api` for both `/a/services/api` and `/b/services/api`):
    no tail is ambiguous."""
    unique = set(paths) | set(known)
    out: dict[str, str] = {}
    for p in set(paths):
        others = [q for q in unique if q != p]
        shown = p
        for w in range(min(width, len(p)), len(p) + 1):
            shown = tail(p, w)
            if not shown.startswith("…") or not any(q.endswith(shown[1:]) for q in others):
                break
        out[p] = shown
    return [out[p] for p in paths]
