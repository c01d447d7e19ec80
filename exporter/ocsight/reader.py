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


# `source_info`'s queries, in the order it reads their rows
SOURCE_QUERIES = [
    ("SELECT count(*) FROM project", []),
    ("SELECT count(*) FROM session", []),
    ("SELECT coalesce(sum(messages), 0) FROM usage_cube", []),
    ("SELECT coalesce(sum(calls), 0) FROM tool_cube", []),
    ("SELECT source, ref, reason FROM skipped ORDER BY source, ref", []),
    (("SELECT coalesce(sum(messages), 0) FROM usage_cube c WHERE NOT EXISTS (SELECT 1 FROM session s "
      "WHERE s.id = c.session_id)"), []),
]
# One scan of the cube into a lookup table (IN), not one scan per priced model (EXISTS): 4x faster
PRICING_QUERY = (
    "SELECT ps.provider, ps.model, ps.source FROM price_source ps WHERE (ps.provider, ps.model) IN "
    "(SELECT c.provider, c.model FROM usage_cube c WHERE c.role = 'assistant') ORDER BY 1, 2"
)


def source_info(idx: index_mod.Index, rows: list[list] | None = None) -> dict:
    """The `source` block; `rows`: those of `SOURCE_QUERIES`, when already read."""
    if rows is None:
        rows = [idx.con.execute(sql, args).fetchall() for sql, args in SOURCE_QUERIES]
    (projects,), (sessions,), (messages,), (tool_calls,) = (r[0] for r in rows[:4])
    counts = {"projects": projects, "sessions": sessions, "messages": messages, "tool_calls": tool_calls}
    skipped = [tuple(r) for r in rows[4]]
    by_reason: dict[str, int] = {}
    for _s, _r, reason in skipped:
        by_reason[reason] = by_reason.get(reason, 0) + 1
    orphans = rows[5][0][0]
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


def pricing_info(idx: index_mod.Index, mode: str, rows: list | None = None) -> dict:
    """The `pricing` block; `rows`: those of `PRICING_QUERY`, when already read."""
    if rows is None:
        rows = idx.con.execute(PRICING_QUERY).fetchall()
    return {"cost_mode": mode, "models": [{"provider": p, "model": m, "source": s} for p, m, s in rows]}


def stats_document(idx: index_mod.Index, filters: query.Filters, mode: str) -> dict:
    """The whole `stats --json` object; the `source` and `pricing` blocks are read on another
    connection beside the aggregates (`query.aside`)."""
    from ocsight import __version__

    side = query.aside(idx.con, [*SOURCE_QUERIES, (PRICING_QUERY, [])])
    body = query.stats(idx.con, filters, mode)
    *source_rows, pricing_rows = side()
    return {
        "ocsight": __version__,
        "filters": filters.description,
        **body,
        "pricing": pricing_info(idx, mode, pricing_rows),
        "source": source_info(idx, source_rows),
    }


def read_records(opts: ReadOptions, sessions: list[str] | None = None, every_step: bool = True):
    """Every normalised record of the requested sessions (all when None), read afresh from the sources.

    Without `every_step`, LLM steps are read only where they make their message's tokens (OpenCode
    0.x sessions): since 1.0 a message holds its one step's tokens, and those steps, a third of a
    read of records, are left out (`Records.steps` and `Message.steps` then count 0.x steps alone).
    """
    from ocsight import records

    sources = locate.locate(opts.data_dirs, demo=opts.demo)
    catalogue = _catalogue(opts)
    idx = index_mod.Index(sources, None)
    try:
        idx.stage_records(catalogue, sessions, every_step)
        return records.load(idx.con, only_wanted=sessions is not None)
    except sqlite3.DatabaseError as e:
        raise OcsightError(f"reading records failed: {e}") from None
    finally:
        idx.close()
