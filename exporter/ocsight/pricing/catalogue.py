"""Prices for (provider, model) pairs, from every source, first match first:

1. the user's overrides file (`--prices`, `OCSIGHT_PRICES`, or `$XDG_CONFIG_HOME/ocsight/prices.toml`):
   an explicit price is the user's intent, so it beats every catalogue;
2. custom providers in OpenCode's own config (`opencode.json`), which OpenCode prices with;
3. OpenCode's models.dev cache (`models.json`): the catalogue and IDs OpenCode itself prices with;
4. genai-prices, a maintained offline catalogue with fuzzy model matching (`pricing.genai`).

A pair none of them knows is *unpriced*: counted and named, never costed at $0.00.

Loading the sources takes time a read of the store can hide: `prefetch()` loads them on a thread,
started by the command line once its arguments are parsed; `resolve_all` waits for it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from ocsight import paths
from ocsight.errors import EXIT_USAGE, OcsightError
from ocsight.pricing import genai
from ocsight.pricing.rates import Pair, Price, price_from_models_dev

PriceTable = dict[Pair, Price]


def strip_jsonc(text: str) -> str:
    """JSON with comments and trailing commas (OpenCode's opencode.jsonc) as plain JSON."""
    import re

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


def read_structured(path: Path) -> object:
    """A TOML, JSON or JSONC file's content."""
    raw = path.read_bytes()
    if path.suffix == ".toml":
        return _toml().loads(raw.decode())
    return json.loads(strip_jsonc(raw.decode()))


def _toml() -> ModuleType:
    """TOML's parser, imported when a TOML file is read (most runs read none)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    return tomllib


def overrides_path(explicit: str | None = None) -> Path | None:
    """The user's price overrides file, if one is configured or present at the default place."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("OCSIGHT_PRICES")
    if env:
        return Path(env).expanduser()
    for name in ("prices.toml", "prices.json"):
        p = paths.config_home() / "ocsight" / name
        if p.is_file():
            return p
    return None


def models_json_paths() -> list[Path]:
    """OpenCode's price catalogue: OPENCODE_MODELS_PATH, else its models.dev cache."""
    env = os.environ.get("OPENCODE_MODELS_PATH")
    if env:
        return [Path(env).expanduser()]
    base = paths.cache_home() / "opencode"
    return [base / "models.json", *sorted(base.glob("models-*.json"))]


def opencode_config_paths() -> list[Path]:
    """OpenCode's global config files, which may define custom providers with their prices."""
    base = paths.config_home() / "opencode"
    env = os.environ.get("OPENCODE_CONFIG")
    found = [base / name for name in ("config.json", "opencode.json", "opencode.jsonc")]
    if env:
        found.append(Path(env).expanduser())
    return [p for p in found if p.is_file()]


def _by_provider(data: object, source: str) -> PriceTable:
    """Prices in models.dev's shape, `{provider: {model: cost}}`."""
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


def _models_of(providers: object) -> Iterable[tuple[str, str, dict[str, object]]]:
    """(provider, model, model entry) of a models.dev or OpenCode config `provider` table."""
    for pid, prov in providers.items() if isinstance(providers, dict) else ():
        models = prov.get("models") if isinstance(prov, dict) else None
        for mid, model in models.items() if isinstance(models, dict) else ():
            if isinstance(model, dict):
                yield pid, mid, model


class Catalogue:
    """Resolves (provider, model) pairs against the sources above."""

    def __init__(self, overrides: Path | None = None, configs: tuple[Path, ...] = (), keep_cache: bool = True) -> None:
        """`configs`: OpenCode config files read besides the user's own (the demo store's);
        `keep_cache`: whether genai-prices' answers are kept for later runs."""
        if overrides is not None and not overrides.is_file():
            raise OcsightError(f"price overrides file not found: {overrides}", EXIT_USAGE)
        self.overrides_file = overrides
        self.configs = tuple(p for p in configs if p.is_file())
        self.problems: list[str] = []
        self._tables: list[PriceTable] | None = None
        self._failure: OcsightError | None = None
        self._genai = genai.Lookups(persist=keep_cache)
        self._lock = threading.Lock()
        self._prefetch: threading.Thread | None = None
        self._limits: dict[Pair, int] | None = None

    @property
    def loaded(self) -> bool:
        """Whether the price sources were read (so `problems` says what was wrong with them)."""
        with self._lock:
            return self._tables is not None

    def fingerprint(self) -> str:
        """Changes whenever a price source may have changed; the index re-resolves its prices then."""
        files = [self.overrides_file, *self._config_paths(), *models_json_paths()]
        parts = []
        for f in files:
            if f is None:
                continue
            try:
                st = f.stat()
                parts.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")
            except OSError:
                parts.append(f"{f}:-")
        return "|".join(parts) + "|genai-prices:" + genai.stamp()

    # -- loading -------------------------------------------------------------------------------------

    def prefetch(self) -> None:
        """Loads the price sources on a thread from now on, genai-prices too (unless its answers were
        ever cached): worth it before a read of many models new to the index (its first build), on a
        core the read leaves idle."""
        if self._prefetch is None:
            self._prefetch = threading.Thread(target=self._load_ahead, name="ocsight-prices")
            self._prefetch.start()

    def _load_ahead(self) -> None:
        try:
            self._sources()
        except OcsightError:
            return  # kept, and raised where the prices are asked for
        if not self._genai.cached():
            genai.load()

    def _sources(self) -> list[PriceTable]:
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._tables is None:
                try:
                    self._tables = [self._overrides(), self._config(), self._models_json()]
                except OcsightError as e:
                    self._failure = e
                    raise
            return self._tables

    def _overrides(self) -> PriceTable:
        f = self.overrides_file
        if f is None:
            return {}
        try:
            return _by_provider(read_structured(f), "overrides")
        except OSError as e:
            raise OcsightError(f"cannot read price overrides file {f}: {e.strerror}", EXIT_USAGE) from None
        except (ValueError, UnicodeDecodeError) as e:  # TOMLDecodeError is a ValueError
            raise OcsightError(f"bad price overrides file {f}: {e}", EXIT_USAGE) from None

    def _config_paths(self) -> list[Path]:
        return [*opencode_config_paths(), *self.configs]

    def _config(self) -> PriceTable:
        out: PriceTable = {}
        for path in self._config_paths():
            try:
                data = read_structured(path)
                providers = data.get("provider") if isinstance(data, dict) else None
            except (OSError, ValueError, UnicodeDecodeError) as e:
                self.problems.append(f"unreadable OpenCode config {path}: {e}")
                continue
            for pid, mid, model in _models_of(providers or {}):
                cost = model.get("cost")
                if isinstance(cost, dict):
                    try:
                        out[(pid, mid)] = price_from_models_dev(cost, "opencode-config")
                    except ValueError as e:
                        self.problems.append(f"{path}: {pid}/{mid}: {e}")
        return out

    def _models_json(self) -> PriceTable:
        out: PriceTable = {}
        for path in models_json_paths():
            if not path.is_file():
                continue
            try:
                catalogue = json.loads(path.read_bytes())
            except (OSError, ValueError) as e:
                self.problems.append(f"unreadable price catalogue {path}: {e}")
                continue
            for pid, mid, model in _models_of(catalogue):
                cost = model.get("cost")
                if (pid, mid) not in out and isinstance(cost, dict):
                    try:
                        out[(pid, mid)] = price_from_models_dev(cost, "models.json")
                    except ValueError:
                        self.problems.append(f"{path}: bad cost for {pid}/{mid}")
        return out

    def context_limit(self, provider: str, model: str) -> int | None:
        """A model's context window in tokens (`limit.context`): OpenCode's config first (the user's
        own models), then its models.dev cache; None when neither gives one."""
        with self._lock:
            if self._limits is None:
                self._limits = self._read_limits()
            return self._limits.get((provider, model))

    def _read_limits(self) -> dict[Pair, int]:
        out: dict[Pair, int] = {}
        tables: list[object] = []
        for path in self._config_paths():
            try:
                data = read_structured(path)
            except (OSError, ValueError, UnicodeDecodeError):
                continue  # reported by the price read; a limit is only shown as unknown
            tables.append(data.get("provider") if isinstance(data, dict) else None)
        for path in models_json_paths():
            try:
                tables.append(json.loads(path.read_bytes()))
            except (OSError, ValueError):
                continue
        for table in tables:
            for pid, mid, model in _models_of(table):
                limit = model.get("limit")
                context = limit.get("context") if isinstance(limit, dict) else None
                if (pid, mid) not in out and isinstance(context, int) and not isinstance(context, bool) \
                        and context > 0:
                    out[(pid, mid)] = context
        return out

    # -- asking ----------------------------------------------------------------------------------------

    def _known(self, provider: str, model: str) -> Price | None:
        for table in self._sources():
            price = table.get((provider, model)) or table.get((provider, "*"))
            if price is not None:
                return price
        return None

    def resolve(self, provider: str, model: str) -> Price | None:
        return self.resolve_all([(provider, model)])[(provider, model)]

    def resolve_all(self, pairs: Iterable[Pair]) -> dict[Pair, Price | None]:
        """Each pair's price, or None: genai-prices is asked only about the pairs no other source knows."""
        if self._prefetch is not None:
            self._prefetch.join()
        out: dict[Pair, Price | None] = {}
        missing = []
        for pair in pairs:
            price = self._known(*pair)
            if price is None:
                missing.append(pair)
            else:
                out[pair] = price
        if missing:
            out.update(self._genai.resolve(missing))
        return out
