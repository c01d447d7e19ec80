"""genai-prices lookups, in this process or in a helper process started ahead of need.

Importing genai-prices takes a quarter of a second of CPU (pydantic models for its whole catalogue).
On a thread that import holds the GIL the reader needs between its SQLite statements, and slowed
a first read of a large store by as much as it cost; a helper process loads it on another core
while the store is read, then answers the (provider, model) pairs the read found, in one exchange
over a pipe (`python -m ocsight.genai_lookup`: JSON pairs in, JSON prices out).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from functools import cache

from ocsight import launch
from ocsight.pricing import Price, Rate, price_from_genai

ANSWER_TIMEOUT_S = 30.0
Pair = tuple[str, str]


@cache
def snapshot():
    """genai-prices' catalogue, or None when the package is not installed."""
    try:
        from genai_prices import data_snapshot
    except ImportError:
        return None
    return data_snapshot.get_snapshot()


def lookup(provider: str, model: str) -> Price | None:
    """The provider's own entry for the model when genai-prices knows one, else any provider's."""
    snap = snapshot()
    if snap is None:
        return None
    for pid in (provider, None):
        try:
            _prov, info = snap.find_provider_model(model, None, pid, None)
        except (LookupError, ValueError):
            continue
        try:
            return price_from_genai(info.get_prices(datetime.datetime.now(datetime.timezone.utc)))
        except (AttributeError, TypeError, ValueError):
            return None
    return None


def encode(price: Price | None) -> list | None:
    return None if price is None else [price.source, [list(dataclasses.astuple(r)) for r in price.rates]]


def decode(obj: list | None) -> Price | None:
    return None if obj is None else Price(obj[0], tuple(Rate(*r) for r in obj[1]))


class Helper:
    """A helper process, loading genai-prices from the moment it starts; answers one batch of pairs."""

    def __init__(self, proc: subprocess.Popen | None = None) -> None:
        """`proc`: a helper already started (`launch`), else one is started now."""
        self.proc: subprocess.Popen | None = proc if proc is not None else launch.spawn_helper()

    def ask(self, pairs: Iterable[Pair]) -> dict[Pair, Price | None] | None:
        """The prices of `pairs`; None when the helper failed (the caller then looks them up itself)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        pairs = list(pairs)
        try:
            out, _err = proc.communicate(json.dumps(pairs) + "\n", timeout=ANSWER_TIMEOUT_S)
            answers = json.loads(out)
            if proc.returncode != 0 or len(answers) != len(pairs):
                return None
            return {pair: decode(a) for pair, a in zip(pairs, answers)}
        except (subprocess.TimeoutExpired, ValueError, TypeError, IndexError, OSError):
            proc.kill()
            proc.wait()
            return None

    def close(self) -> None:
        """Ends a helper that was never asked, at once: it has nothing to finish (exit must not wait
        for its import)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait()


def _skip_package_init() -> None:
    """Lets the helper import genai-prices' catalogue without the package's `__init__`, which loads
    its price updater (an HTTP client, package metadata): a quarter of the import, never used here.
    The helper is a process of its own, so nothing else sees the bare package."""
    import importlib.util
    import types

    try:
        spec = importlib.util.find_spec("genai_prices")
    except (ImportError, ValueError):
        return
    if spec is None or not spec.submodule_search_locations:
        return
    package = types.ModuleType("genai_prices")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["genai_prices"] = package


# The names genai-prices' `types` takes from pydantic at import (a tag, a discriminator and a
# field alias in type hints; two TypeAdapters and their config for price updates read as JSON).
PYDANTIC_NAMES = ("ConfigDict", "Discriminator", "Field", "Tag", "TypeAdapter")


class _Inert:
    """Stands in for a pydantic object the helper never uses."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass


def _load_without_pydantic() -> bool:
    """Loads genai-prices' catalogue against inert stand-ins for pydantic; True when done.

    genai-prices uses pydantic only to validate prices it fetches over HTTP; its bundled catalogue
    is plain dataclasses. Importing pydantic and building those validators is half the helper's
    CPU, and the helper, a process of its own, never fetches. If genai-prices asks for more of
    pydantic than the stand-ins hold, the partial import is undone (the caller then loads it with
    the real pydantic); a test holds every lookup equal to one made with the real pydantic.
    """
    import types

    if "pydantic" in sys.modules:
        return False
    stand_in = types.ModuleType("pydantic")
    for name in PYDANTIC_NAMES:
        setattr(stand_in, name, _Inert)
    sys.modules["pydantic"] = stand_in
    try:
        loaded = snapshot() is not None
    except Exception:  # noqa: BLE001 - whatever a missing stand-in breaks
        loaded = False
    if not loaded:
        for module in [m for m in sys.modules if m == "pydantic" or m.startswith("genai_prices.")]:
            del sys.modules[module]
        snapshot.cache_clear()
    return loaded


def _lowest_priority() -> None:
    """The helper loads on cores the reader leaves idle, never slowing the read it runs beside; when
    the reader waits for the answer, its core is idle. Linux's SCHED_IDLE, not just nice 19: a core
    running only a niced process is not idle to the scheduler, which then put the read's second
    thread on the reader's core for its first 20-60 ms rather than on the helper's."""
    if hasattr(os, "nice"):  # not on Windows
        os.nice(19)
    if hasattr(os, "sched_setscheduler"):  # Linux
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass


def main() -> None:
    _lowest_priority()
    _skip_package_init()
    # loaded before the question arrives: that is the point of the helper
    if not _load_without_pydantic():
        snapshot()
    line = sys.stdin.readline()
    if not line.strip():
        return
    pairs = json.loads(line)
    json.dump([encode(lookup(p, m)) for p, m in pairs], sys.stdout)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
    # Tearing down genai-prices' catalogue (thousands of pydantic objects) takes longer than the
    # answer did, and the reader waits for the end of the answer.
    os._exit(0)
