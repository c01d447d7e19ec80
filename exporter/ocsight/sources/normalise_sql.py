"""The token rule of `ocsight.normalise` as SQL expressions, applied while records are staged.

Each function mirrors one of `normalise`'s, over SQL expressions of the stored JSON values (as
`json_extract` reads them); tests hold the two equal on random inputs. SQLite orders every number
before every text, so `x < ''` holds for numbers alone (NULL aside) without a function call a row.
"""

from __future__ import annotations

from ocsight.normalise import (
    CACHE_EXCLUSIVE_PROVIDERS,
    CACHED_IN_INPUT,
    DISJOINT,
    ID_TIME_MODULUS_MS,
    REASONING_IN_OUTPUT,
    TOKEN_KEYS,
)


def is_number(expr: str) -> str:
    return f"{expr} < ''"


def count(expr: str) -> str:
    """`normalise.count`: NULL (missing) is 0; NULL when the value is not a count."""
    return (
        f"(CASE WHEN {expr} IS NULL THEN 0 "
        f"WHEN {is_number(expr)} AND {expr} >= 0 AND {expr} = CAST({expr} AS INTEGER) THEN CAST({expr} AS INTEGER) "
        f"END)"
    )


def era(stored: dict[str, str], total: str, session_era: str) -> str:
    """`normalise.era_of`, over the stored counts (expressions by token key) and total.

    `session_era` is evaluated only for rows whose total does not decide it."""
    i, o, r, cr, cw = (f"coalesce({stored[k]}, 0)" for k in TOKEN_KEYS)
    return (
        f"(CASE WHEN {is_number(total)} THEN "
        f"CASE WHEN {total} = {i} + {o} + {r} + {cr} + {cw} THEN '{DISJOINT}' "
        f"WHEN {total} = {i} + {o} + {cr} + {cw} THEN '{REASONING_IN_OUTPUT}' "
        f"ELSE {session_era} END "
        f"ELSE {session_era} END)"
    )


def normalised(counts: dict[str, str], era: str, provider: str) -> dict[str, str]:
    """`normalise.normalise`, over clean counts (`count` expressions, by token key), an era and a
    provider: expressions for each token key and for `valid` (every count is one)."""
    i, o, r, cr, cw = (counts[k] for k in TOKEN_KEYS)
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
        "valid": " AND ".join(f"{c} IS NOT NULL" for c in (i, o, r, cr, cw)),
    }


def cost_pico(expr: str) -> str:
    """`normalise.cost_pico`: a stored USD cost as integer picodollars; NULL when it is not a cost."""
    return (
        f"(CASE WHEN {expr} IS NULL THEN 0 "
        f"WHEN {is_number(expr)} AND {expr} >= 0 THEN CAST(round({expr} * 1e12) AS INTEGER) END)"
    )


def id_lag(id_expr: str, time_expr: str) -> str:
    """`normalise.id_lag` over a message ID and its creation time."""
    hex_digits = " + ".join(f"((instr('0123456789abcdef', substr({id_expr}, {5 + n}, 1)) - 1) << {4 * (11 - n)})"
                            for n in range(12))
    mod = ID_TIME_MODULUS_MS
    raw = f"((((({hex_digits}) >> 12) - {time_expr}) % {mod} + {mod}) % {mod})"
    shaped = f"{id_expr} GLOB 'msg_{'[0-9a-f]' * 12}*' AND typeof({time_expr}) = 'integer'"
    return f"(CASE WHEN {shaped} THEN (CASE WHEN {raw} >= {mod // 2} THEN {raw} - {mod} ELSE {raw} END) END)"
