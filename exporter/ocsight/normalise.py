"""Token semantics per OpenCode version, normalised into one disjoint form.

The normalised form: `input` excludes cached tokens, `output` excludes reasoning, and `reasoning`,
`cache_read`, `cache_write` stand alone, so their sum is everything the model processed.

How OpenCode stored tokens depends on the version that *wrote the message* (read off its
shipped code, checked against exact mock-model numbers):

| era                   | versions          | stored `input`                        | stored `output`   |
|-----------------------|-------------------|---------------------------------------|-------------------|
| `cached-in-input`     | 1.0.0 - 1.0.61    | provider's prompt count (OpenAI-style | incl. reasoning   |
|                       |                   | providers include cached tokens)      |                   |
| `reasoning-in-output` | 1.0.62 - 1.13.x   | prompt minus cache                    | incl. reasoning   |
| `disjoint`            | >= 1.14           | prompt minus cache read and write     | minus reasoning   |

`tokens.total`, written since about 1.1.59, tells the last two apart per message (a session created
by 1.1 and continued by 1.15 holds both); without it the session's version decides.
"""

from __future__ import annotations

import re
from functools import lru_cache

CACHED_IN_INPUT = "cached-in-input"
REASONING_IN_OUTPUT = "reasoning-in-output"
DISJOINT = "disjoint"

# The normalised, disjoint token types, in the order every table and report lists them.
TOKEN_KEYS = ("input", "output", "reasoning", "cache_read", "cache_write")

# Providers whose SDK reports prompt tokens without the cache (so 1.0.x stored them disjoint already).
CACHE_EXCLUSIVE_PROVIDERS = ("anthropic", "amazon-bedrock", "google-vertex-anthropic")

_VERSION = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?")


@lru_cache(maxsize=256)  # a store holds a handful of versions; SQL asks once a session
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


def era_by_version_sql(column: str, versions: list) -> tuple[str, list]:
    """An SQL expression for the era of the session version in `column`, and its parameters, from
    the distinct `versions` a table holds: a Python call a version, not one a row (each would take
    the GIL from whatever else runs)."""
    whens = " ".join("WHEN ? THEN ?" for v in versions if v is not None)
    params = [x for v in versions if v is not None for x in (v, era_for_version(v))]
    default = era_for_version(None)
    return (f"CASE {column} {whens} ELSE ? END" if whens else "?"), [*params, default]


def may_have_many_steps(version: str | None) -> bool:
    """Whether a session's messages can hold several LLM steps: only before 1.0 (or when unknown)."""
    m = _VERSION.match(version or "")
    return m is None or int(m[1]) == 0


# SQLite orders every number before every text: `x < ''` holds for numbers alone (NULL aside), with no
# function call a row (`typeof`, which these tests replaced, was a sixth of staging's instructions).
IS_NUMBER = "{0} < ''"


def count_sql(col: str) -> str:
    """A stored token count as a non-negative integer; NULL when it is not one (the record is then invalid)."""
    return (
        f"(CASE WHEN {col} IS NULL THEN 0 "
        f"WHEN {IS_NUMBER.format(col)} AND {col} >= 0 AND {col} = CAST({col} AS INTEGER) THEN CAST({col} AS INTEGER) "
        f"END)"
    )


def era_sql(counts: dict[str, str], total: str, session_era: str) -> str:
    """The era of a row from its token counts (SQL expressions, by token key) and stored total.

    `session_era` is evaluated only for rows whose total does not decide it.
    """
    i, o, r, cr, cw = (counts[k] for k in TOKEN_KEYS)
    return (
        f"(CASE WHEN {IS_NUMBER.format(total)} THEN "
        f"CASE WHEN {total} = {i} + {o} + {r} + {cr} + {cw} THEN '{DISJOINT}' "
        f"WHEN {total} = {i} + {o} + {cr} + {cw} THEN '{REASONING_IN_OUTPUT}' "
        f"ELSE {session_era} END "
        f"ELSE {session_era} END)"
    )


def normalised_sql(alias: str, provider: str) -> dict[str, str]:
    """SQL expressions for the normalised counts of a row holding clean counts `c_*` and its `era`.

    Returns expressions for input, output, reasoning, cache_read, cache_write and valid.
    """
    i, o, r, cr, cw = (f"{alias}.c_{k}" for k in TOKEN_KEYS)
    era = f"{alias}.era"
    exclusive = ", ".join(f"'{p}'" for p in CACHE_EXCLUSIVE_PROVIDERS)
    return {
        "input": (
            f"(CASE WHEN {era} = '{CACHED_IN_INPUT}' AND coalesce({provider}, '') NOT IN ({exclusive}) "
            f"THEN max(0, {i} - {cr} - {cw}) ELSE {i} END)"
        ),
        "output": f"(CASE WHEN {era} = '{DISJOINT}' THEN {o} ELSE max(0, {o} - {r}) END)",
        "reasoning": r,
        "cache_read": cr,
        "cache_write": cw,
        "valid": f"({i} IS NOT NULL AND {o} IS NOT NULL AND {r} IS NOT NULL AND {cr} IS NOT NULL AND {cw} IS NOT NULL)",
    }


def cost_pico_sql(col: str) -> str:
    """A stored USD cost as integer picodollars (sums are then exact and independent of order)."""
    return (
        f"(CASE WHEN {col} IS NULL THEN 0 "
        f"WHEN {IS_NUMBER.format(col)} AND {col} >= 0 THEN CAST(round({col} * 1e12) AS INTEGER) END)"
    )
