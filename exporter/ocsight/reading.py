"""One entry point for every consumer: locate the sources, bring the index up to date, read records.

The command line, the sidecar and the MCP server all read through here, so they never compute the
same total in two ways: totals come from the index (`Index.reader`), per-message records from the
sources through the same staging the index is summed from (`read_records`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ocsight import paths
from ocsight.errors import EXIT_USAGE, OcsightError
from ocsight.index import Index
from ocsight.model import COST_MODES, Records, Skipped
from ocsight.pricing.catalogue import Catalogue, overrides_path
from ocsight.pricing.rates import price_rows
from ocsight.sources import database, locate


@dataclass(frozen=True)
class ReadOptions:
    data_dirs: tuple[str, ...] = ()
    data_dirs_from: str = "--data-dir"  # what named `data_dirs`, as an error about them says it
    demo: bool = False
    use_cache: bool = True
    index_name: str = ""  # a consumer's own index (`ocsight.index.index_path`)
    lean_memory: bool = False  # long-running consumers: a refresh's staged rows spill to temporary files
    cost_mode: str = "auto"
    prices: str | None = None
    fork_copies: bool = False  # count the copies a fork made as OpenCode does (`--include-fork-copies`)


def catalogue_for(opts: ReadOptions) -> Catalogue:
    """The price sources; the demo store brings the config its OpenCode ran with (its custom providers)."""
    if opts.cost_mode not in COST_MODES:
        raise OcsightError(f"unknown cost mode {opts.cost_mode!r} (choose auto, stored or calculate)", EXIT_USAGE)
    demo_config = (paths.DEMO_DIR / "opencode.json",) if opts.demo else ()
    return Catalogue(overrides_path(opts.prices), demo_config, keep_cache=opts.use_cache)


def open_index(opts: ReadOptions, catalogue: Catalogue | None = None,
               progress: Callable[[str], None] | None = None) -> Index:
    """The refreshed and priced index for the requested sources; raises OcsightError for bad input.

    `catalogue`: the price sources (by default those the options name)."""
    catalogue = catalogue or catalogue_for(opts)
    sources = locate.locate(opts.data_dirs, demo=opts.demo, given_by=opts.data_dirs_from)
    idx = Index.open(sources, use_cache=opts.use_cache, name=opts.index_name, lean=opts.lean_memory,
                     fork_copies=opts.fork_copies)
    try:
        idx.refresh(catalogue, progress)
    except sqlite3.DatabaseError as e:
        idx.close()
        raise OcsightError(f"ocsight's index failed ({e}); delete {idx.path} and run again") from None
    except BaseException:
        idx.close()
        raise
    return idx


def read_records(idx: Index, sessions: Iterable[str] | None = None, every_step: bool = True,
                 fork_copies: bool | None = None) -> Records:
    """Every normalised record of these sessions (all when None), read afresh from the sources, with
    the session and project records the index holds.

    Without `every_step`, model calls are read only where they make their message's tokens
    (OpenCode 0.x sessions): since 1.0 a message holds its one step's tokens. The copies a fork
    made of other sessions' messages, with their steps and tool calls, are left out unless
    `fork_copies` (by default: unless the index's readers count them, `Index.fork_copies`): they
    were no model call."""
    from ocsight.sources import staging  # records are read by few commands

    wanted = None if sessions is None else tuple(sorted(set(sessions)))
    for _attempt in range(3):
        dbs = database.ranked(idx.sources.databases)
        usable = [db for db in dbs if not db.empty]
        job = staging.ReadJob(
            tuple(staging.Database.of(db) for db in usable),
            idx.sources.trees(),
            staging.Scope(sessions=wanted), detail=True, every_step=every_step, lean=idx.lean)
        read = staging.stage(job)
        try:
            pairs = read.model_pairs()
            rates = idx.reader.price_rows(pairs)
            # models written since the refresh are priced here (the index is not written)
            known = idx.reader.priced_models()
            missing = [p for p in pairs if p not in known]
            if missing and idx.catalogue is not None:
                rates += price_rows(idx.catalogue.resolve_all(missing))
            messages, steps, tools, skipped = read.records(rates)
        finally:
            read.close()
        if not any(db.changed_under_us() for db in usable):
            break
        time.sleep(0.05)
    else:
        raise OcsightError("OpenCode's database kept changing while being read; try again")
    if not (idx.fork_copies if fork_copies is None else fork_copies):
        copies = {m.id for m in messages if m.fork_copy}
        if copies:
            messages = [m for m in messages if not m.fork_copy]
            steps = [s for s in steps if s.message_id not in copies]
            tools = [t for t in tools if t.message_id not in copies]
    problems = [s for s in skipped if s[0] == "index"]  # messages that could not be used, by ID
    from_sources = sorted([*idx.reader.source_problems(), *(s for s in skipped if s[0] != "index")])
    return Records(idx.reader.project_records(wanted), idx.reader.session_records(wanted), messages, steps, tools,
                   [Skipped(*s) for s in from_sources + problems])
