"""One entry point for every consumer: locate the sources, bring the index up to date, price it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ocsight import index as index_mod
from ocsight import pricing, query
from ocsight.errors import OcsightError
from ocsight.sqlite_library import sqlite3
from ocsight.store import locate

SKIPPED_ITEMS_SHOWN = 50


@dataclass(frozen=True)
class ReadOptions:
    data_dirs: tuple[str, ...] = ()
    demo: bool = False
    use_cache: bool = True
    index_name: str = ""  # a consumer's own index (`ocsight.index.index_path`)
    lean_memory: bool = False  # long-running consumers: a refresh's staged rows spill to temporary files
    cost_mode: str = "auto"
    prices: str | None = None


def open_index(opts: ReadOptions, progress: Callable[[str], None] | None = None) -> index_mod.Index:
    """The refreshed and priced index for the requested sources; raises OcsightError for bad input."""
    if opts.cost_mode not in pricing.COST_MODES:
        raise OcsightError(f"unknown cost mode {opts.cost_mode!r} (choose auto, stored or calculate)", 2)
    sources = locate.locate(opts.data_dirs, demo=opts.demo)
    catalogue = _catalogue(opts)
    idx = index_mod.Index.open(sources, use_cache=opts.use_cache, name=opts.index_name, lean=opts.lean_memory)
    try:
        idx.refresh(catalogue, progress)
        idx.notes += catalogue.problems
    except sqlite3.DatabaseError as e:
        idx.close()
        raise OcsightError(f"ocsight's index failed ({e}); delete {idx.path} and run again") from None
    except BaseException:
        idx.close()
        raise
    return idx


def _catalogue(opts: ReadOptions) -> pricing.Catalogue:
    """The price sources; the demo store brings the config its OpenCode ran with (its custom providers)."""
    demo_config = (locate.DEMO_DIR / "opencode.json",) if opts.demo else ()
    return pricing.Catalogue(pricing.overrides_path(opts.prices), demo_config)


def source_info(idx: index_mod.Index) -> dict:
    con = idx.con
    one = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
    counts = {
        "projects": one("SELECT count(*) FROM project"),
        "sessions": one("SELECT count(*) FROM session"),
        "messages": one("SELECT coalesce(sum(messages), 0) FROM usage_cube"),
        "tool_calls": one("SELECT coalesce(sum(calls), 0) FROM tool_cube"),
    }
    skipped = con.execute("SELECT source, ref, reason FROM skipped ORDER BY source, ref").fetchall()
    by_reason: dict[str, int] = {}
    for _s, _r, reason in skipped:
        by_reason[reason] = by_reason.get(reason, 0) + 1
    orphans = one(
        "SELECT coalesce(sum(messages), 0) FROM usage_cube c WHERE NOT EXISTS (SELECT 1 FROM session s "
        "WHERE s.id = c.session_id)"
    )
    notes = list(dict.fromkeys(idx.notes))
    if orphans:
        notes.append(f"{orphans} messages have no session record; they are counted under project '(unknown)'")
    return {
        "data_dirs": [str(p) for p in idx.sources.data_dirs],
        "databases": [str(p) for p in idx.sources.databases],
        "legacy_dirs": [str(p) for p in idx.sources.legacy_dirs],
        "demo": idx.sources.demo,
        "index": str(idx.path) if idx.path else None,
        "records": counts,
        "skipped": {
            "total": len(skipped),
            "by_reason": dict(sorted(by_reason.items())),
            "items": [{"source": s, "ref": r, "reason": why} for s, r, why in skipped[:SKIPPED_ITEMS_SHOWN]],
        },
        "notes": notes,
    }


def pricing_info(idx: index_mod.Index, mode: str) -> dict:
    # One scan of the cube into a lookup table (IN), not one scan per priced model (EXISTS): 4x faster
    rows = idx.con.execute(
        "SELECT ps.provider, ps.model, ps.source FROM price_source ps WHERE (ps.provider, ps.model) IN "
        "(SELECT c.provider, c.model FROM usage_cube c WHERE c.role = 'assistant') ORDER BY 1, 2"
    ).fetchall()
    return {"cost_mode": mode, "models": [{"provider": p, "model": m, "source": s} for p, m, s in rows]}


def stats_document(idx: index_mod.Index, filters: query.Filters, mode: str) -> dict:
    """The whole `stats --json` object."""
    from ocsight import __version__

    body = query.stats(idx.con, filters, mode)
    return {
        "ocsight": __version__,
        "filters": filters.description,
        **body,
        "pricing": pricing_info(idx, mode),
        "source": source_info(idx),
    }


def read_records(opts: ReadOptions, sessions: list[str] | None = None):
    """Every normalised record of the requested sessions (all when None), read afresh from the sources."""
    from ocsight import records

    sources = locate.locate(opts.data_dirs, demo=opts.demo)
    catalogue = _catalogue(opts)
    idx = index_mod.Index(sources, None)
    try:
        idx.stage_records(catalogue, sessions)
        return records.load(idx.con, only_wanted=sessions is not None)
    except sqlite3.DatabaseError as e:
        raise OcsightError(f"reading records failed: {e}") from None
    finally:
        idx.close()
