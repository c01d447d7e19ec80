"""Prices for (provider, model) pairs, and the cost policy.

Lookup order, first match wins:

1. the user's overrides file (`--prices`, `OCSIGHT_PRICES`, or `$XDG_CONFIG_HOME/ocsight/prices.toml`):
   an explicit price is the user's intent, so it beats every catalogue;
2. custom providers in OpenCode's own config (`opencode.json`), which OpenCode prices with;
3. OpenCode's models.dev cache (`models.json`): the catalogue and IDs OpenCode itself prices with;
4. `genai-prices`, a maintained offline catalogue with fuzzy model matching and tiers.

A pair none of them knows is *unpriced*: counted and named, never costed at $0.00.

Tiers follow OpenCode (>= 1.15): the prompt size is input + cache read + cache write; the largest
`tiers[]` entry whose size it exceeds applies, else `context_over_200k` above 200,000 tokens, else the
base price. Reasoning tokens are billed at the output price.
"""

from __future__ import annotations

import atexit
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ocsight import launch
from ocsight.errors import EXIT_USAGE, OcsightError
from ocsight.store import locate

if TYPE_CHECKING:
    import subprocess

COST_MODES = ("auto", "stored", "calculate")

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
    """A model's rates; the index applies them (`store.extract`), choosing per model call the rate
    with the highest (kind, size) among those whose size the prompt exceeds."""

    source: str  # overrides | opencode-config | models.json | genai-prices
    rates: tuple[Rate, ...]


def _num(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{where}: expected a non-negative number, got {value!r}")
    return float(value)


def price_from_models_dev(cost: dict, source: str) -> Price:
    """A models.dev `cost` object (OpenCode's shape); missing cache prices are 0, as in OpenCode."""
    if not isinstance(cost, dict):
        raise ValueError("cost must be an object")

    def rate(obj: dict, kind: int, size: int, where: str) -> Rate:
        cache = obj.get("cache") if isinstance(obj.get("cache"), dict) else {}
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


def price_from_genai(model_price: object) -> Price:
    """genai-prices' ModelPrice: per-field tiers by total prompt tokens; an unpriced cache bills as input."""

    def parts(value: object) -> tuple[float | None, dict[int, float]]:
        if value is None:
            return None, {}
        tiers = getattr(value, "tiers", None)
        if tiers is not None:
            return float(value.base), {int(t.start): float(t.price) for t in tiers}
        return float(value), {}

    fields = {
        name: parts(getattr(model_price, f"{name}_mtok", None))
        for name in ("input", "output", "cache_read", "cache_write")
    }
    base_in = fields["input"][0] or 0.0

    def at(name: str, size: int | None) -> float:
        base, tiers = fields[name]
        if base is None:
            return at("input", size) if name.startswith("cache") else 0.0
        if size is None:
            return base
        applicable = [s for s in tiers if s <= size]
        return tiers[max(applicable)] if applicable else base

    rates = [Rate(BASE, -1, base_in, at("output", None), at("cache_read", None), at("cache_write", None))]
    for size in sorted({s for _, tiers in fields.values() for s in tiers}):
        rates.append(Rate(TIER, size, at("input", size), at("output", size), at("cache_read", size), at("cache_write", size)))
    return Price("genai-prices", tuple(rates))


def strip_jsonc(text: str) -> str:
    """JSON with comments and trailing commas (OpenCode's opencode.jsonc) as plain JSON."""
    out, i, n, in_str = [], 0, len(text), False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            out.append(c)
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        else:
            out.append(c)
        i += 1
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


def _read_structured(path: Path) -> dict:
    raw = path.read_bytes()
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        return tomllib.loads(raw.decode())
    return json.loads(strip_jsonc(raw.decode()))


def overrides_path(explicit: str | None = None) -> Path | None:
    """The user's price overrides file, if one is configured or present at the default place."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("OCSIGHT_PRICES")
    if env:
        return Path(env).expanduser()
    for name in ("prices.toml", "prices.json"):
        p = locate.config_home() / "ocsight" / name
        if p.is_file():
            return p
    return None


class Catalogue:
    """Resolves (provider, model) pairs against the sources above, loading each source only when asked."""

    def __init__(self, overrides: Path | None = None, configs: tuple[Path, ...] = ()) -> None:
        """`configs`: OpenCode config files read besides the user's own (the demo store's)."""
        if overrides is not None and not overrides.is_file():
            raise OcsightError(f"price overrides file not found: {overrides}", EXIT_USAGE)
        self.overrides_file = overrides
        self.configs = tuple(p for p in configs if p.is_file())
        self._overrides: dict[tuple[str, str], Price] | None = None
        self._config: dict[tuple[str, str], Price] | None = None
        self._models: dict[tuple[str, str], Price] | None = None
        self._genai_helper = None  # a genai_lookup.Helper, once prefetching
        self.problems: list[str] = []

    def fingerprint(self) -> str:
        """Changes whenever a price source may have changed; cached prices are re-resolved then."""
        files = [self.overrides_file, *self._config_paths(), *locate.models_json_paths()]
        parts = []
        for f in files:
            if f is None:
                continue
            try:
                st = f.stat()
                parts.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")
            except OSError:
                parts.append(f"{f}:-")
        return "|".join(parts) + "|genai-prices:" + _genai_version()

    def overrides(self) -> dict[tuple[str, str], Price]:
        if self._overrides is None:
            self._overrides = {}
            f = self.overrides_file
            if f is not None:
                try:
                    data = _read_structured(f)
                    self._overrides = self._by_provider(data, "overrides", f)
                except OSError as e:
                    raise OcsightError(f"cannot read price overrides file {f}: {e.strerror}", EXIT_USAGE) from None
                except (ValueError, UnicodeDecodeError) as e:
                    raise OcsightError(f"bad price overrides file {f}: {e}", EXIT_USAGE) from None
        return self._overrides

    @staticmethod
    def _by_provider(data: object, source: str, path: Path) -> dict[tuple[str, str], Price]:
        if not isinstance(data, dict):
            raise ValueError("expected a table of providers")
        out = {}
        for provider, models in data.items():
            if not isinstance(models, dict):
                raise ValueError(f"{provider}: expected a table of models")
            for model, cost in models.items():
                try:
                    out[(provider, model)] = price_from_models_dev(cost, source)
                except ValueError as e:
                    raise ValueError(f"{provider}/{model}: {e}") from None
        return out

    def _config_paths(self) -> list[Path]:
        return [*locate.opencode_config_paths(), *self.configs]

    def config(self) -> dict[tuple[str, str], Price]:
        if self._config is None:
            self._config = {}
            for path in self._config_paths():
                try:
                    providers = _read_structured(path).get("provider") or {}
                except (OSError, ValueError, UnicodeDecodeError, AttributeError) as e:
                    self.problems.append(f"unreadable OpenCode config {path}: {e}")
                    continue
                for pid, prov in providers.items() if isinstance(providers, dict) else ():
                    for mid, model in (prov.get("models") or {}).items() if isinstance(prov, dict) else ():
                        if isinstance(model, dict) and isinstance(model.get("cost"), dict):
                            try:
                                self._config[(pid, mid)] = price_from_models_dev(model["cost"], "opencode-config")
                            except ValueError as e:
                                self.problems.append(f"{path}: {pid}/{mid}: {e}")
        return self._config

    def models_json(self) -> dict[tuple[str, str], Price]:
        if self._models is None:
            self._models = {}
            for path in locate.models_json_paths():
                if not path.is_file():
                    continue
                try:
                    catalogue = json.loads(path.read_bytes())
                except (OSError, ValueError) as e:
                    self.problems.append(f"unreadable price catalogue {path}: {e}")
                    continue
                for pid, prov in catalogue.items() if isinstance(catalogue, dict) else ():
                    for mid, model in (prov.get("models") or {}).items() if isinstance(prov, dict) else ():
                        if (pid, mid) in self._models or not isinstance(model, dict):
                            continue
                        if isinstance(model.get("cost"), dict):
                            try:
                                self._models[(pid, mid)] = price_from_models_dev(model["cost"], "models.json")
                            except ValueError:
                                self.problems.append(f"{path}: bad cost for {pid}/{mid}")
        return self._models

    def prefetch_genai(self) -> None:
        """Starts loading genai-prices in a helper process (`ocsight.genai_lookup`): worth it when
        many models may be new to the index, as on its first build."""
        if self._genai_helper is None and _genai_version() != "none":
            self._own_helper(launch.take_helper())

    def _own_helper(self, proc: subprocess.Popen | None) -> None:
        """Takes a helper started at launch (`ocsight.launch`), or starts one when `proc` is None."""
        from ocsight.genai_lookup import Helper

        try:
            self._genai_helper = Helper(proc)
        except OSError:
            return
        atexit.register(self._genai_helper.close)

    def _genai(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], Price | None]:
        from ocsight import genai_lookup

        if self._genai_helper is None and (early := launch.take_helper()) is not None:
            self._own_helper(early)
        if self._genai_helper is not None:
            answers = self._genai_helper.ask(pairs)
            if answers is not None:
                return answers
        return {pair: genai_lookup.lookup(*pair) for pair in pairs}

    def _known(self, provider: str, model: str) -> Price | None:
        for table in (self.overrides(), self.config(), self.models_json()):
            price = table.get((provider, model)) or table.get((provider, "*"))
            if price is not None:
                return price
        return None

    def resolve(self, provider: str, model: str) -> Price | None:
        return self.resolve_all([(provider, model)])[(provider, model)]

    def resolve_all(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Price | None]:
        """Looked up in one batch: genai-prices is asked only about the pairs no other source knows."""
        out, missing = self.resolve_known(pairs)
        if missing:
            out.update(self._genai(missing))
        return out

    def resolve_known(self, pairs: Iterable[tuple[str, str]]) -> tuple[dict[tuple[str, str], Price], list]:
        """The prices every source but genai-prices knows, and the pairs left for it: those are
        worth asking last, when its catalogue has had the longest to load."""
        known: dict[tuple[str, str], Price] = {}
        missing = []
        for pair in pairs:
            price = self._known(*pair)
            if price is None:
                missing.append(pair)
            else:
                known[pair] = price
        return known, missing


def _genai_version() -> str:
    """A stamp of the installed genai-prices data, found without importing it (that takes 150 ms)."""
    from importlib.util import find_spec

    spec = find_spec("genai_prices")
    if spec is None or not spec.origin:
        return "none"
    data = Path(spec.origin).with_name("data.py")
    try:
        st = data.stat()
    except OSError:
        return "unknown"
    return f"{st.st_size}:{st.st_mtime_ns}"
