"""genai-prices, a maintained offline catalogue: the last price source asked, with its answers cached.

Importing genai-prices builds its whole catalogue (about a seventh of a second of CPU), so its
answers are kept in `$XDG_CACHE_HOME/ocsight/genai-prices-<stamp>.json`, keyed by the installed
catalogue's stamp: once a model has been asked about, no later run imports genai-prices for it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable
from dataclasses import astuple
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

from ocsight import paths
from ocsight.pricing.rates import BASE, TIER, Pair, Price, Rate

if TYPE_CHECKING:
    from decimal import Decimal

    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import ModelPrice, TieredPrices

SOURCE = "genai-prices"


@cache
def stamp() -> str:
    """A stamp of the installed genai-prices data, found without importing it: "none" when absent."""
    try:
        spec = find_spec("genai_prices")
    except (ImportError, ValueError):
        return "none"
    if spec is None or not spec.origin:
        return "none"
    try:
        st = Path(spec.origin).with_name("data.py").stat()
    except OSError:
        return "unknown"
    return f"{st.st_size}-{st.st_mtime_ns}"


def cache_file() -> Path:
    return paths.ocsight_cache() / f"genai-prices-{stamp()}.json"


@cache
def _snapshot() -> DataSnapshot | None:
    """genai-prices' catalogue, or None when the package is not installed (Python 3.10)."""
    try:
        from genai_prices import data_snapshot
    except ImportError:
        return None
    return data_snapshot.get_snapshot()


def load() -> None:
    """Loads the catalogue now (a prefetch: on another thread while the store is read)."""
    _snapshot()


def _per_million(value: Decimal | TieredPrices | None) -> tuple[float | None, dict[int, float]]:
    """A price field: its base and its tiers (by total prompt tokens), USD per 1M tokens."""
    from genai_prices.types import TieredPrices  # loaded by now: a price came from it

    if value is None:
        return None, {}
    if isinstance(value, TieredPrices):
        return float(value.base), {int(t.start): float(t.price) for t in value.tiers}
    return float(value), {}


def price_of(model_price: ModelPrice) -> Price:
    """A genai-prices ModelPrice as rates: per-field tiers by total prompt tokens; a cache without
    its own price bills as input."""
    # genai-prices sets only the fields a model has (ModelPrice takes them as keyword arguments)
    fields = {name: _per_million(getattr(model_price, f"{name}_mtok", None))
              for name in ("input", "output", "cache_read", "cache_write")}

    def at(name: str, size: int | None) -> float:
        base, tiers = fields[name]
        if base is None:
            return at("input", size) if name.startswith("cache") else 0.0
        if size is None:
            return base
        applicable = [s for s in tiers if s <= size]
        return tiers[max(applicable)] if applicable else base

    rates = [Rate(BASE, -1, fields["input"][0] or 0.0, at("output", None), at("cache_read", None),
                  at("cache_write", None))]
    for size in sorted({s for _, tiers in fields.values() for s in tiers}):
        rates.append(Rate(TIER, size, at("input", size), at("output", size), at("cache_read", size),
                          at("cache_write", size)))
    return Price(SOURCE, tuple(rates))


def lookup(provider: str, model: str) -> Price | None:
    """The provider's own entry for the model when genai-prices knows one, else any provider's."""
    snap = _snapshot()
    if snap is None:
        return None
    for pid in (provider, None):
        try:
            _prov, info = snap.find_provider_model(model, None, pid, None)
        except (LookupError, ValueError):
            continue
        try:
            return price_of(info.get_prices(dt.datetime.now(dt.timezone.utc)))
        except (AttributeError, TypeError, ValueError):
            return None
    return None


def _encode(price: Price | None) -> list[object] | None:
    return None if price is None else [price.source, [list(astuple(r)) for r in price.rates]]


def _decode(obj: object) -> Price | None:
    if not isinstance(obj, list) or len(obj) != 2:
        return None
    return Price(str(obj[0]), tuple(Rate(*r) for r in obj[1]))


def _key(pair: Pair) -> str:
    return f"{pair[0]}\n{pair[1]}"


class Lookups:
    """genai-prices' answers for pairs, from the cache file where it has them, else asked (and kept,
    unless not `persist`: a run told to leave no cache behind)."""

    def __init__(self, persist: bool = True) -> None:
        self.persist = persist
        self._cached: dict[str, object] | None = None

    def cached(self) -> dict[str, object]:
        if self._cached is None and not self.persist:
            self._cached = {}
        if self._cached is None:
            try:
                data = json.loads(cache_file().read_text(encoding="utf-8"))
                self._cached = data if isinstance(data, dict) else {}
            except (OSError, ValueError):
                self._cached = {}
        return self._cached

    def knows_all(self, pairs: Iterable[Pair]) -> bool:
        cached = self.cached()
        return all(_key(p) in cached for p in pairs)

    def resolve(self, pairs: Iterable[Pair]) -> dict[Pair, Price | None]:
        cached = self.cached()
        out: dict[Pair, Price | None] = {}
        new: dict[str, object] = {}
        for pair in pairs:
            key = _key(pair)
            if key in cached:
                out[pair] = _decode(cached[key])
            else:
                out[pair] = lookup(*pair)
                new[key] = _encode(out[pair])
        if new and self.persist and stamp() != "none":
            cached.update(new)
            _write_private(cache_file(), json.dumps(cached))
        return out


def _write_private(path: Path, text: str) -> None:
    """Writes a cache file readable by its owner alone, whole or not at all (a failure is no error:
    the answers are asked again next time)."""
    import tempfile

    try:
        paths.private_dir(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        pass
