"""Token semantics per OpenCode version, normalised into one disjoint form: the specification.

The normalised form: `input` excludes cached tokens, `output` excludes reasoning, and `reasoning`,
`cache_read`, `cache_write` stand alone, so their sum is everything the model processed.

How OpenCode stored tokens depends on the version that *wrote the message* (read off its
shipped code, checked against exact mock-model numbers):

| era                   | versions          | stored `input`                        | stored `output`   |
|-----------------------|-------------------|---------------------------------------|-------------------|
| `cached-in-input`     | 0.x - 1.0.61      | provider's prompt count (OpenAI-style | incl. reasoning   |
|                       |                   | providers include cached tokens)      |                   |
| `reasoning-in-output` | 1.0.62 - 1.13.x   | prompt minus cache                    | incl. reasoning   |
| `disjoint`            | >= 1.14           | prompt minus cache read and write     | minus reasoning   |

`tokens.total`, written since about 1.1.59, tells the last two apart per message (a session created
by 1.1 and continued by 1.15 holds both); without it the session's version decides.

This module is the rule in plain Python. The index applies it in SQL while staging
(`ocsight.sources.normalise_sql`); tests hold that form equal to this one on random inputs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

from ocsight.model import Tokens

CACHED_IN_INPUT = "cached-in-input"
REASONING_IN_OUTPUT = "reasoning-in-output"
DISJOINT = "disjoint"
ERAS = (CACHED_IN_INPUT, REASONING_IN_OUTPUT, DISJOINT)

# The normalised, disjoint token types, in the order every table and report lists them.
TOKEN_KEYS = ("input", "output", "reasoning", "cache_read", "cache_write")

# Providers whose SDK reports prompt tokens without the cache (so 1.0.x stored them disjoint already).
CACHE_EXCLUSIVE_PROVIDERS = ("anthropic", "amazon-bedrock", "google-vertex-anthropic")

# The largest count SQLite holds as an integer; JSON numbers beyond it are read as reals.
MAX_COUNT = 2**63 - 1

_VERSION = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?")


@lru_cache(maxsize=256)  # a store holds a handful of versions
def era_for_version(version: object) -> str:
    """The era a message falls back to when its `tokens.total` does not decide it."""
    m = _VERSION.match(version if isinstance(version, str) else "")
    if not m:
        return DISJOINT  # unknown or missing: assume the current format
    major, minor, patch = int(m[1]), int(m[2]), int(m[3] or 0)
    if major == 0 or (major, minor, patch) <= (1, 0, 61):
        return CACHED_IN_INPUT
    if (major, minor) < (1, 14):
        return REASONING_IN_OUTPUT
    return DISJOINT


def may_have_many_steps(version: str | None) -> bool:
    """Whether a session's messages can hold several model calls: only before 1.0 (or when unknown).

    OpenCode >= 1.0 asks the model for exactly one step per assistant message, so a message's
    tokens are its step's; 0.x kept only the last call's tokens in the message."""
    m = _VERSION.match(version or "")
    return m is None or int(m[1]) == 0


@dataclass(frozen=True)
class Stored:
    """A message's (or step's) `tokens` as OpenCode stored them: JSON values, any of them missing (None)."""

    input: object = None
    output: object = None
    reasoning: object = None
    cache_read: object = None
    cache_write: object = None
    total: object = None

    def counts(self) -> tuple[object, ...]:
        return (self.input, self.output, self.reasoning, self.cache_read, self.cache_write)


def count(value: object) -> int | None:
    """A stored count as a non-negative integer: missing is 0; None when it is not one (the record
    is then invalid). JSON's true and false read as 1 and 0, as SQLite's JSON functions read them."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if 0 <= value <= MAX_COUNT else None
    if isinstance(value, float):
        return int(value) if value >= 0 and value.is_integer() and value <= MAX_COUNT else None
    return None


def _number(value: object) -> int | float | None:
    """A JSON number as SQLite's JSON functions read it (true and false as 1 and 0), else None."""
    if isinstance(value, bool):
        return int(value)
    return value if isinstance(value, (int, float)) else None


def era_of(stored: Stored, session_era: str) -> str:
    """The era that wrote a message, from its own `total` where that decides, else its session's.

    A message without any token count (every user message) normalises to zeros in any era: it
    takes its session's era."""
    total = _number(stored.total)
    if total is not None:
        i, o, r, cr, cw = (_number(v) or 0 for v in stored.counts())
        if total == i + o + r + cr + cw:
            return DISJOINT
        if total == i + o + cr + cw:
            return REASONING_IN_OUTPUT
    return session_era


def normalise(stored: Stored, era: str, provider: str) -> Tokens | None:
    """The disjoint counts of one message or step; None when a stored count is not a count."""
    i, o, r, cr, cw = (count(v) for v in stored.counts())
    if i is None or o is None or r is None or cr is None or cw is None:
        return None
    if era == CACHED_IN_INPUT and provider not in CACHE_EXCLUSIVE_PROVIDERS:
        i = max(0, i - cr - cw)
    if era != DISJOINT:
        o = max(0, o - r)
    return Tokens(i, o, r, cr, cw)


# Above 2**52 every double is a whole number: SQLite's round() returns it unchanged.
_WHOLE = 4503599627370496.0


def cost_pico(value: object) -> int | None:
    """A stored USD cost in integer picodollars (missing is 0); None when it is not a cost.

    Rounded half away from zero and capped at SQLite's largest integer, as SQLite rounds and casts."""
    if value is None:
        return 0
    number = _number(value)
    if number is None or number < 0:
        return None
    pico = float(number) * 1e12
    whole = pico if pico >= _WHOLE else math.floor(pico + 0.5)
    return min(int(whole), MAX_COUNT)


# -- fork copies --------------------------------------------------------------------------------------
#
# OpenCode's fork (`opencode run --fork`, the TUI's fork, `POST /session/{id}/fork`) copies the source
# session's messages into a new session under new IDs, keeping everything else: `time.created`,
# tokens, cost. The provider billed that usage once. A message ID is `msg_` and 12 hex digits of
# (milliseconds * 0x1000 + counter) modulo 2**48, made when the message is: an original's ID time is
# within a few milliseconds of its `time.created`, a copy's is when the fork was made. The rule: among
# messages alike in everything a copy keeps (`FORK_PRINT`), the one whose ID was made soonest after its
# creation counts (the original, or the earliest copy when the original is gone); the others are fork
# copies, set aside. A message whose ID is that close to its creation time is never a copy, nor is
# one created after its own session was (a copy keeps its original's time, from before the fork).

ID_TIME_MODULUS_MS = 1 << 36  # the milliseconds an ID's 48 bits hold beside the 12-bit counter
COPY_LAG_MS = 100  # an ID made later than this after the message's creation: perhaps a copy
_ASCENDING_ID = re.compile(r"msg_[0-9a-f]{12}")
# What a copy keeps of its original's message (its ID, session and, for answers, parentID change).
FORK_PRINT = ("$.role", "$.time.created", "$.time.completed", "$.providerID", "$.modelID", "$.model.providerID",
              "$.model.modelID", "$.agent", "$.mode", "$.cost", "$.tokens.input", "$.tokens.output",
              "$.tokens.reasoning", "$.tokens.cache.read", "$.tokens.cache.write", "$.tokens.total",
              "$.error.name", "$.finish", "$.summary")


def id_lag(message_id: str, time_created: object) -> int | None:
    """Milliseconds from a message's creation to the making of its ID (negative: made just before);
    None for an ID not of OpenCode's ascending shape or a creation time that is not an integer."""
    if not _ASCENDING_ID.match(message_id) or type(time_created) is not int:
        return None
    lag = ((int(message_id[4:16], 16) >> 12) - time_created) % ID_TIME_MODULUS_MS
    return lag - ID_TIME_MODULUS_MS if lag >= ID_TIME_MODULUS_MS // 2 else lag


def counted_among(alike: list[tuple[int | None, str]]) -> tuple[int | None, str]:
    """Of messages alike in `FORK_PRINT`, as (ID lag, session ID), the one that counts: the least lag
    (an ID of another shape as lag 0), then the least session ID."""
    return min(alike, key=lambda m: (0 if m[0] is None else m[0], m[1]))
