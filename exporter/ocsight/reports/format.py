"""How figures read in a terminal: money, token counts, project paths, and which token columns fit."""

from __future__ import annotations

import os
from typing import Any

from ocsight.normalise import TOKEN_KEYS

FULL = TOKEN_KEYS
COMPACT = ("input", "output")  # below WIDE columns, as ccusage does: cache and reasoning columns go
WIDE = 120
COMPACT_NOTE = "compact view: widen the terminal to {width} columns for reasoning and cache tokens"


def token_kinds(width: int) -> tuple[str, ...]:
    return FULL if width >= WIDE else COMPACT


def money(cost: dict[str, Any]) -> str:
    text = f"${cost['usd']:,.2f}"
    if cost["estimated_usd"]:
        text += f" (est. ${cost['estimated_usd']:,.2f})"
    return text


def tokens(n: int) -> str:
    return f"{n:,}"


def short_path(path: str, width: int = 28) -> str:
    """A project path as a reader tells projects apart: home as `~`, and its end kept when long."""
    home = os.path.expanduser("~")
    if home != "/" and (path == home or path.startswith(home + "/")):
        path = "~" + path[len(home):]
    return path if len(path) <= width else "…" + path[-(width - 1):]
