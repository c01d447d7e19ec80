"""A model's prices: rates by prompt size, as OpenCode applies them, from either catalogue's shape.

Tiers follow OpenCode (>= 1.15): the prompt size is input + cache read + cache write; the largest
`tiers[]` entry whose size it exceeds applies, else `context_over_200k` above 200,000 tokens, else the
base price. Reasoning tokens are billed at the output price. The index applies them per model call
(`sources.staging`), in picodollars per token (`price_rows`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PICO_PER_TOKEN = 1e6  # USD per 1M tokens -> picodollars per token
Pair = tuple[str, str]  # (provider, model)
# (provider, model, kind, size, input, output, cache_read, cache_write), in picodollars per token
PriceRow = tuple[str, str, int, int, float, float, float, float]

# kind orders candidates exactly as OpenCode does: any matching tier beats over-200k, which beats the base.
BASE, OVER_200K, TIER = -1, 0, 1


@dataclass(frozen=True)
class Rate:
    """USD per 1M tokens, applying above `size` prompt tokens (the base rate has size -1)."""

    kind: int
    size: int
    input: float
    output: float
    cache_read: float
    cache_write: float


@dataclass(frozen=True)
class Price:
    """A model's rates; the index applies them (`sources.staging`), choosing per model call the rate
    with the highest (kind, size) among those whose size the prompt exceeds."""

    source: str  # overrides | opencode-config | models.json | genai-prices
    rates: tuple[Rate, ...]


def _num(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{where}: expected a non-negative number, got {value!r}")
    return float(value)


def price_from_models_dev(cost: object, source: str) -> Price:
    """A models.dev `cost` object (OpenCode's shape); missing cache prices are 0, as in OpenCode."""
    if not isinstance(cost, dict):
        raise ValueError("cost must be an object")

    def rate(obj: dict[str, Any], kind: int, size: int, where: str) -> Rate:
        found = obj.get("cache")
        cache: dict[str, Any] = found if isinstance(found, dict) else {}
        return Rate(
            kind,
            size,
            _num(obj.get("input", 0), f"{where}.input"),
            _num(obj.get("output", 0), f"{where}.output"),
            _num(obj.get("cache_read", cache.get("read", 0)), f"{where}.cache_read"),
            _num(obj.get("cache_write", cache.get("write", 0)), f"{where}.cache_write"),
        )

    rates = [rate(cost, BASE, -1, "cost")]
    over = cost.get("context_over_200k")
    if isinstance(over, dict):
        rates.append(rate(over, OVER_200K, 200_000, "context_over_200k"))
    for i, tier in enumerate(cost.get("tiers") or []):
        if not isinstance(tier, dict):
            continue
        spec = tier.get("tier") or {}
        if spec.get("type", "context") != "context" or not isinstance(spec.get("size"), int):
            continue
        rates.append(rate(tier, TIER, spec["size"], f"tiers[{i}]"))
    return Price(source, tuple(rates))


def price_rows(prices: Mapping[Pair, Price | None]) -> list[PriceRow]:
    """The rates of priced models as rows, in picodollars per token."""
    return [
        (p, m, r.kind, r.size, r.input * PICO_PER_TOKEN, r.output * PICO_PER_TOKEN,
         r.cache_read * PICO_PER_TOKEN, r.cache_write * PICO_PER_TOKEN)
        for (p, m), price in prices.items() if price for r in price.rates
    ]
