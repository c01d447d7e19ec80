"""The JSON documents ocsight prints (`stats --json`, `daily --json`, `session --json`) and the MCP
server answers with, built from the index's typed rows. Field names are documented in the README.

Costs are kept in integer picodollars up to here and turned into US dollars once, so a document's
figures are exact sums.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ocsight import __version__
from ocsight.filters import Filters
from ocsight.index import Index, IndexReader
from ocsight.index.reader import Breakdown, Grouped, Period, SessionUsage, Usage
from ocsight.model import PICO, mcp_server
from ocsight.normalise import TOKEN_KEYS

SKIPPED_ITEMS_SHOWN = 50
Doc = dict[str, Any]


def usage_json(u: Usage) -> Doc:
    tokens = {k: getattr(u.tokens, k) for k in TOKEN_KEYS}
    tokens["total"] = sum(tokens.values())
    return {
        "sessions": u.sessions,
        "messages": u.messages,
        "tokens": tokens,
        "cost": {
            "usd": (u.stored_pico + u.estimated_pico) / PICO,
            "stored_usd": u.stored_pico / PICO,
            "estimated_usd": u.estimated_pico / PICO,
            "unpriced_messages": u.unpriced,
        },
    }


def _grouped(rows: list[Grouped], keys: tuple[str, ...]) -> list[Doc]:
    return [{**dict(zip(keys, g.key)), **usage_json(g.usage)} for g in rows]


def breakdown_json(b: Breakdown) -> Doc:
    """The aggregates of `stats --json` (without its `source` and `pricing` blocks)."""
    t = b.totals
    usage = usage_json(t.usage)
    return {
        "totals": {
            "sessions": t.sessions,
            "subagent_sessions": t.subagent_sessions,
            "messages": {"user": t.user_messages, "assistant": t.assistant_messages, "errors": t.errors},
            "tokens": usage["tokens"],
            "cost": usage["cost"],
        },
        "by_provider": _grouped(b.by_provider, ("provider",)),
        "by_model": _grouped(b.by_model, ("provider", "model")),
        "by_agent": _grouped(b.by_agent, ("agent",)),
        "by_project": _grouped(b.by_project, ("project",)),
        "by_tool": [{"tool": r.tool, "calls": r.calls, "errors": r.errors, "mcp_server": mcp_server(r.tool)}
                    for r in b.tools],
        "by_error": [{"error": e, "messages": n} for e, n in b.errors],
        "unpriced_models": [{"provider": p, "model": m, "messages": n} for p, m, n in b.unpriced],
    }


def unpriced_json(reader: IndexReader, filters: Filters, mode: str) -> list[Doc]:
    """The `unpriced_models` block alone (for reports that show no breakdown by model)."""
    return [{"provider": p, "model": m, "messages": n} for p, m, n in reader.unpriced_models(filters, mode)]


def source_json(idx: Index) -> Doc:
    """Where the records came from and what was skipped (the `source` block)."""
    reader = idx.reader
    counts = reader.record_counts()
    skipped = reader.skipped()
    by_reason: dict[str, int] = {}
    for _s, _r, reason in skipped:
        by_reason[reason] = by_reason.get(reason, 0) + 1
    notes = list(dict.fromkeys(idx.notes))
    orphans = reader.messages_without_session()
    if orphans:
        notes.append(f"{orphans:,} message{' has' if orphans == 1 else 's have'} no session record; "
                     "counted under project '(unknown)'")
    return {
        "data_dirs": [str(p) for p in idx.sources.data_dirs],
        "databases": [str(p) for p in idx.sources.databases],
        "legacy_dirs": [str(p) for p in idx.sources.legacy_dirs],
        "demo": idx.sources.demo,
        "index": str(idx.path) if idx.path else None,
        "records": {"projects": counts.projects, "sessions": counts.sessions, "messages": counts.messages,
                    "tool_calls": counts.tool_calls},
        # messages a fork copied from another session: set aside (counted once, where they were made)
        # unless counted as OpenCode counts them (`--include-fork-copies`)
        "fork_copies": reader.fork_copies_found(),
        "fork_copies_counted": reader.fork_copies,
        "skipped": {
            "total": len(skipped),
            "by_reason": dict(sorted(by_reason.items())),
            "items": [{"source": s, "ref": r, "reason": why} for s, r, why in skipped[:SKIPPED_ITEMS_SHOWN]],
        },
        "notes": notes,
    }


def pricing_json(reader: IndexReader, mode: str) -> Doc:
    return {"cost_mode": mode,
            "models": [{"provider": p, "model": m, "source": s} for p, m, s in reader.price_sources()]}


def stats_json(idx: Index, filters: Filters, mode: str) -> Doc:
    """The whole `stats --json` object (its counts read on a second connection meanwhile)."""
    second = idx.second_reader()
    try:
        breakdown = idx.reader.breakdown(filters, mode, second)
    finally:
        if second is not None:
            second.close()
    return {
        "ocsight": __version__,
        "filters": filters.description,
        **breakdown_json(breakdown),
        "pricing": pricing_json(idx.reader, mode),
        "source": source_json(idx),
    }


def periods_json(rows: list[Period]) -> list[Doc]:
    out = []
    for p in rows:
        doc = {"period": p.period, **usage_json(p.usage)}
        if p.models is not None:
            doc["models"] = _grouped(p.models, ("provider", "model"))
        out.append(doc)
    return out


def session_trees(rows: list[SessionUsage]) -> list[Doc]:
    """Sessions as trees, newest first: a subagent session sits in its parent's `children` (when the
    parent has usage here and a record), and `rollup` sums a session with all its descendants."""
    nodes: dict[str, Doc] = {}
    has_record: dict[str, bool] = {}
    for r in rows:
        u = usage_json(r.usage)
        has_record[r.id] = r.has_record
        nodes[r.id] = {
            "id": r.id, "parent_id": r.parent_id, "title": r.title, "project": r.project,
            "version": r.version, "time_created": r.time_created, "models": r.models, "agents": r.agents,
            "messages": u["messages"], "errors": r.errors, "tool_calls": r.tool_calls,
            "tokens": u["tokens"], "cost": u["cost"], "fork_copies": r.fork_copies, "children": [],
        }
    roots: list[Doc] = []
    for node in sorted(nodes.values(), key=lambda n: (n["time_created"] or 0, n["id"])):
        parent_id = node["parent_id"]
        parent = nodes.get(parent_id) if parent_id is not None and has_record.get(parent_id) else None
        (parent["children"] if parent else roots).append(node)
    for root in roots:
        _roll_up(root)
    roots.sort(key=lambda n: (n["time_created"] or 0, n["id"]), reverse=True)
    return roots


def _roll_up(node: Doc) -> Doc:
    """Sums a session with its descendants into `rollup` (tokens, cost, messages, sessions)."""
    tokens = dict(node["tokens"])
    cost = dict(node["cost"])
    messages, count = node["messages"], 1
    for child in node["children"]:
        r = _roll_up(child)
        for k in tokens:
            tokens[k] += r["tokens"][k]
        for k in cost:
            cost[k] += r["cost"][k]
        messages += r["messages"]
        count += r["sessions"]
    node["rollup"] = {"sessions": count, "messages": messages, "tokens": tokens, "cost": cost}
    rollup: Doc = node["rollup"]
    return rollup


def find_session(nodes: list[Doc], sid: str) -> Doc | None:
    for n in nodes:
        if n["id"] == sid:
            return n
        found = find_session(n["children"], sid)
        if found:
            return found
    return None


def when(ms: int | None, tz: dt.tzinfo | None) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M") if ms else "unknown time"
