"""The MCP server's answers: JSON documents from the index, and a short text for the model to read.

Every figure comes from the index's typed reader and `reports.documents` (the same functions as
`stats --json`, `daily --json` and `session --json`, with the same field names), so an answer and a
report can never disagree. Nothing here writes anything.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ocsight import __version__
from ocsight.errors import EXIT_USAGE, OcsightError
from ocsight.filters import Filters, make_filters, parse_date, resolve_timezone, unknown_names
from ocsight.filters import describe as describe_window
from ocsight.index import Index, IndexReader
from ocsight.normalise import TOKEN_KEYS
from ocsight.reports import documents
from ocsight.reports.format import counted

Doc = dict[str, Any]

MAX_LIMIT = 100
INTERVALS = ("day", "week")
SORT_KEYS = ("cost", "tokens")
LISTED = 5  # rows of each breakdown named in a text summary


class NotFound(OcsightError):
    """An ID or a name the store does not know (an MCP "not found", not a crash)."""


def bad_argument(message: str) -> OcsightError:
    return OcsightError(message, EXIT_USAGE)


@dataclass(frozen=True)
class Answer:
    """One answer: the JSON document, and the same in a few sentences."""

    doc: dict
    text: str


@dataclass(frozen=True)
class Window:
    """What a tool's arguments select: the days and the provider, model, project and agent."""

    days: int | None = None
    since: str | None = None
    until: str | None = None
    provider: str | None = None
    model: str | None = None
    project: str | None = None
    agent: str | None = None


# -- arguments -------------------------------------------------------------------------------------

def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def filters(reader: IndexReader, w: Window, timezone: str | None) -> Filters:
    """The filters a window asks for; names the store has never seen are errors (a typo would
    otherwise answer zero)."""
    if w.days is not None and w.days < 1:
        raise bad_argument(f"days must be at least 1 (got {w.days})")
    try:
        f = make_filters(days=w.days, since=w.since, until=w.until, timezone=timezone,
                               providers=_split(w.provider), models=_split(w.model), projects=_split(w.project),
                               agents=_split(w.agent))
    except OcsightError as e:
        raise bad_argument(re.sub(r"--(\w+)", r"\1", str(e))) from None
    _check_known(reader, f)
    return f


def _check_known(reader: IndexReader, f: Filters) -> None:
    unknown = unknown_names(f, reader.known_values)
    if unknown:
        raise NotFound(unknown[1])


def trend_window(w: Window, days: int = 30) -> Window:
    """A trend's window: the `days` days up to `until` (or today) unless `days` or `since` says otherwise."""
    if w.days is not None or w.since is not None:
        return w
    if w.until is None:
        return dataclasses.replace(w, days=days)
    try:
        last = parse_date(w.until, "until")
    except OcsightError as e:
        raise bad_argument(str(e)) from None
    return dataclasses.replace(w, since=(last - dt.timedelta(days=days - 1)).isoformat())


# -- answers -----------------------------------------------------------------------------------------

def usage_summary(idx: Index, f: Filters, mode: str) -> Answer:
    """Exactly `stats --json` for these filters."""
    doc = documents.stats_json(idx, f, mode)
    return Answer(doc, _stats_text(doc, f"OpenCode usage, {describe(f)}"))


def metrics_summary(idx: Index, mode: str, timezone: str | None) -> Doc:
    """`stats --json` over all history (the `ocsight://metrics/summary` resource)."""
    return documents.stats_json(idx, make_filters(timezone=timezone), mode)


def providers(idx: Index, mode: str, timezone: str | None) -> Doc:
    """Every provider and model with its usage, all history (`ocsight://providers`)."""
    f = make_filters(timezone=timezone)
    body = documents.breakdown_json(idx.reader.breakdown(f, mode))
    return {"ocsight": __version__, "filters": f.description, "cost_mode": mode, "totals": body["totals"],
            "by_provider": body["by_provider"], "by_model": body["by_model"]}


def provider(idx: Index, name: str, mode: str, timezone: str | None) -> Doc:
    """`stats --json --provider NAME`, all history; an unknown provider is not found."""
    f = make_filters(timezone=timezone, providers=(name,))
    _check_known(idx.reader, f)
    return documents.stats_json(idx, f, mode)


def top_sessions(idx: Index, f: Filters, mode: str, limit: int, by: str,
                 tz: dt.tzinfo | None = None) -> Answer:
    """The costliest (or largest) root sessions, each with its subagents rolled up, in the shape of
    `session --json`. The trees are chosen in SQL (`IndexReader.top_trees`); only theirs are built,
    so time and memory do not grow with the store's sessions."""
    if not 1 <= limit <= MAX_LIMIT:
        raise bad_argument(f"limit must be between 1 and {MAX_LIMIT} (got {limit})")
    if by not in SORT_KEYS:
        raise bad_argument(f"by must be one of {', '.join(SORT_KEYS)} (got {by!r})")

    def key(n: Doc) -> tuple[Any, ...]:
        r = n["rollup"]
        main = (r["cost"]["usd"], r["tokens"]["total"]) if by == "cost" else (r["tokens"]["total"], r["cost"]["usd"])
        return (*main, n["time_created"] or 0, n["id"])

    chosen, total = idx.reader.top_trees(f, mode, by, limit)
    rows = idx.reader.sessions(dataclasses.replace(f, sessions=frozenset(chosen)), mode)
    best = sorted(documents.session_trees(rows), key=key, reverse=True)
    doc = {"ocsight": __version__, "filters": f.description, "cost_mode": mode, "by": by, "sessions": best,
           "total_sessions": total}
    return Answer(doc, _top_text(doc, describe(f), tz))


def provider_trends(idx: Index, f: Filters, mode: str, interval: str, tz: dt.tzinfo | None) -> Answer:
    """Usage per day or week (as `daily --json` / `weekly --json`), in all and per provider."""
    if interval not in INTERVALS:
        raise bad_argument(f"interval must be one of {', '.join(INTERVALS)} (got {interval!r})")
    overall = documents.periods_json(idx.reader.periods(f, mode, interval, tz, breakdown=True))
    models = [m for p in overall for m in p.pop("models")]
    names = sorted({m["provider"] for m in models})
    unpriced = [m for m in models if m["cost"]["unpriced_messages"]]
    per_provider = [
        {"provider": name, "periods": documents.periods_json(
            idx.reader.periods(dataclasses.replace(f, providers=(name,)), mode, interval, tz))}
        for name in names
    ]
    per_provider.sort(key=lambda e: -sum(p["cost"]["usd"] for p in e["periods"]))
    doc = {"ocsight": __version__, "period": interval, "filters": f.description, "cost_mode": mode,
           "periods": overall, "by_provider": per_provider}
    return Answer(doc, _trends_text(doc, describe(f), unpriced))


def session_details(idx: Index, session_id: str, mode: str, timezone: str | None) -> Answer:
    """One session, all history: its own usage and tool calls, its subagents (nested, as in
    `session --json`), and the `stats --json` breakdowns of the session with its subagents."""
    sid = session_id.strip()
    reader = idx.reader
    if not sid:
        raise bad_argument("id must be a session ID such as ses_...")
    every = make_filters(timezone=timezone)
    tree = dataclasses.replace(every, sessions=frozenset(reader.subtree(sid)))
    node = next((n for n in documents.session_trees(reader.sessions(tree, mode)) if n["id"] == sid), None)
    if node is None:
        raise NotFound(f"session {sid!r} has no model usage" if reader.has_session(sid) else
                       f"unknown session {sid!r} (top_sessions lists session IDs)")
    with_subagents = documents.breakdown_json(reader.breakdown(tree, mode))
    own_tools = documents.breakdown_json(reader.breakdown(dataclasses.replace(every, sessions=frozenset([sid])),
                                                          mode))["by_tool"]
    doc = {"ocsight": __version__, "cost_mode": mode, "session": node, "by_tool": own_tools,
           "with_subagents": with_subagents}
    return Answer(doc, _session_text(doc, resolve_timezone(timezone)))


def refresh(idx: Index, seconds: float) -> Answer:
    """What the refresh before this answer read, and what the index holds."""
    info = documents.source_json(idx)
    changed = None if idx.touched is None else len(idx.touched)
    read = "full" if changed is None else "incremental" if changed else "unchanged"
    doc = {"ocsight": __version__, "index": info["index"], "read": read, "changed_sessions": changed,
           "seconds": round(seconds, 3), "records": info["records"],
           "skipped": {k: info["skipped"][k] for k in ("total", "by_reason")}, "notes": info["notes"],
           "databases": info["databases"], "legacy_dirs": info["legacy_dirs"]}
    return Answer(doc, _refresh_text(doc))


# -- text ----------------------------------------------------------------------------------------------

def usd(x: float) -> str:
    return f"${x:,.4f}"


def describe(f: Filters) -> str:
    """The window and filters in words, as a report's header says them, with the time zone its days
    follow: "last 7 days (Europe/Paris) · provider anthropic"."""
    return describe_window(f.description, zone=True)


def _cost(c: dict, unpriced: list[str] | None = None) -> str:
    """A cost block in words. Calls no price covers are never $0: when nothing priced cost anything the
    cost is unknown (naming the `unpriced` models when known), else it is at least the priced part."""
    n = c["unpriced_messages"]
    if n and not c["usd"]:
        return f"cost unknown ({_no_price(n, unpriced)})"
    notes = [f"{counted(n, 'call')} unpriced"] if n else []
    if c["estimated_usd"]:
        notes.append(f"stored {usd(c['stored_usd'])}, estimated {usd(c['estimated_usd'])}")
    text = f"at least {usd(c['usd'])}" if n else usd(c["usd"])
    return text + (f" ({'; '.join(notes)})" if notes else "")


def _no_price(calls: int, unpriced: list[str] | None) -> str:
    return f"no price for {', '.join(unpriced)}" if unpriced else f"{counted(calls, 'call')} unpriced"


def _sum_costs(costs: list[dict]) -> dict:
    return {k: sum(c[k] for c in costs) for k in ("usd", "stored_usd", "estimated_usd", "unpriced_messages")}


def _names(models: list[Doc], provider: str | None = None) -> list[str]:
    """`provider/model` of the unpriced models (`unpriced_models` rows), of one provider if given."""
    return [f"{m['provider']}/{m['model']}" for m in models if provider is None or m["provider"] == provider]


def _tokens(t: dict) -> str:
    kinds = ", ".join(f"{k.replace('_', ' ')} {t[k]:,}" for k in TOKEN_KEYS)
    return f"{t['total']:,} tokens ({kinds})"


def _rows(rows: list[Doc], label: Callable[[Doc], str],
          unpriced: Callable[[Doc], list[str] | None] = lambda r: None) -> str:
    shown = "; ".join(f"{label(r)} {_cost(r['cost'], unpriced(r))}, {r['tokens']['total']:,} tokens, "
                      f"{counted(r['messages'], 'call')}" for r in rows[:LISTED])
    more = f"; and {len(rows) - LISTED} more" if len(rows) > LISTED else ""
    return shown + more


def _stats_text(doc: dict, title: str) -> str:
    t = doc["totals"]
    m = t["messages"]
    if not m["assistant"]:
        return f"{title}: no model calls."
    missing = doc["unpriced_models"]
    subagents = f" ({counted(t['subagent_sessions'], 'subagent')})" if t["subagent_sessions"] else ""
    head = (f"{title}: {_cost(t['cost'], _names(missing))} over {counted(t['sessions'], 'session')}{subagents}, "
            f"{counted(m['assistant'], 'model call')} ({counted(m['errors'], 'error')}), {_tokens(t['tokens'])}.")
    lines = [
        head,
        "By provider: " + _rows(doc["by_provider"], lambda r: r["provider"],
                                lambda r: _names(missing, r["provider"])) + ".",
        "By model: " + _rows(doc["by_model"], lambda r: f"{r['provider']}/{r['model']}",
                             lambda r: [f"{r['provider']}/{r['model']}"]) + ".",
        "By agent: " + _rows(doc["by_agent"], lambda r: r["agent"]) + ".",
        "By project: " + _rows(doc["by_project"], lambda r: r["project"]) + ".",
    ]
    if doc["by_tool"]:
        lines.append("Tools: " + _tools(doc["by_tool"][:8]) + ".")
    if doc["unpriced_models"]:
        names = ", ".join(f"{u['provider']}/{u['model']}" for u in doc["unpriced_models"])
        lines.append(f"No price known for: {names}.")
    lines.append("Costs in USD; the JSON below has every figure (fields as in `ocsight stats --json`).")
    return "\n".join(lines)


def _tools(rows: list[dict]) -> str:
    return ", ".join(f"{r['tool']} {r['calls']:,}" + (f" ({r['errors']:,} failed)" if r["errors"] else "")
                     for r in rows)


def _when(ms: int | None, tz: dt.tzinfo | None) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M") if ms else "unknown time"



def _title(n: dict) -> str:
    return f"{n['id']} \"{n['title'] or '(untitled)'}\""


def _top_text(doc: dict, window: str, tz: dt.tzinfo | None) -> str:
    rows = doc["sessions"]
    if not rows:
        return f"No sessions with model calls in {window}."
    head = f"Top {len(rows)} of {counted(doc['total_sessions'], 'session')} by {doc['by']}, {window}"
    lines = [f"{head}, each with its subagents:"]
    for i, n in enumerate(rows, 1):
        r = n["rollup"]
        sub = f", {counted(r['sessions'] - 1, 'subagent session')}" if r["sessions"] > 1 else ""
        lines.append(f"{i}. {_title(n)} in {n['project']}, {_when(n['time_created'], tz)}: {_cost(r['cost'])}, "
                     f"{r['tokens']['total']:,} tokens, {counted(r['messages'], 'call')}{sub}")
    return "\n".join(lines)


def _trends_text(doc: dict, window: str, unpriced: list[Doc]) -> str:
    periods = doc["periods"]
    if not periods:
        return f"No model calls in {window}."
    unit = doc["period"]
    total = _sum_costs([p["cost"] for p in periods])
    span = f"{periods[0]['period']} to {periods[-1]['period']}"
    calls = f"{counted(len(periods), unit)} with model calls"
    lines = [f"Usage per {unit}, {window}: {_cost(total, _names(unpriced))} over {calls}, {span}."]
    for e in doc["by_provider"]:
        cost = _sum_costs([p["cost"] for p in e["periods"]])
        tokens = sum(p["tokens"]["total"] for p in e["periods"])
        busiest = max(e["periods"], key=lambda p: (p["cost"]["usd"], p["tokens"]["total"]))
        lines.append(f"{e['provider']}: {_cost(cost, _names(unpriced, e['provider']))}, {tokens:,} tokens; "
                     f"highest {unit} {busiest['period']}: {_cost(busiest['cost'])}.")
    latest = "; ".join(f"{p['period']} {_cost(p['cost'])}, {p['tokens']['total']:,} tokens"
                       for p in periods[-7:][::-1])
    lines.append(f"Latest: {latest}.")
    return "\n".join(lines)


def _session_text(doc: dict, tz: dt.tzinfo | None) -> str:
    n = doc["session"]
    w = doc["with_subagents"]["totals"]
    parent = f", a subagent of {n['parent_id']}" if n["parent_id"] else ""
    about = f"OpenCode {n['version'] or '?'}, {_when(n['time_created'], tz)}{parent}"
    own = (f"Own usage: {_cost(n['cost'])}, {_tokens(n['tokens'])}, {counted(n['messages'], 'model call')} "
           f"({counted(n['errors'], 'error')}), models {', '.join(n['models']) or '-'}, "
           f"agents {', '.join(n['agents']) or '-'}.")
    tools = counted(n["tool_calls"], "tool call") + (f": {_tools(doc['by_tool'])}" if doc["by_tool"] else "") + "."
    lines = [f"Session {_title(n)} in {n['project']} ({about}).", own, tools]
    if n["children"]:
        children = "; ".join(f"{_title(c)} {_cost(c['rollup']['cost'])}" for c in n["children"][:LISTED])
        lines.append(f"With its subagents ({counted(len(list(_below(n))), 'session')}): {_cost(w['cost'])}, "
                     f"{_tokens(w['tokens'])}, {counted(w['messages']['assistant'], 'model call')}. "
                     f"Subagents: {children}.")
    else:
        lines.append("No subagent sessions.")
    return "\n".join(lines)


def _below(node: Doc) -> Iterator[Doc]:
    for child in node["children"]:
        yield child
        yield from _below(child)


def _refresh_text(doc: dict) -> str:
    r = doc["records"]
    what = ("read everything afresh" if doc["read"] == "full" else "found nothing new" if doc["read"] == "unchanged"
            else f"read {counted(doc['changed_sessions'], 'changed session')}")
    skipped = f"; {doc['skipped']['total']:,} records skipped" if doc["skipped"]["total"] else ""
    return (f"Index refreshed in {doc['seconds']:.3f} s: {what}. It holds {r['sessions']:,} sessions, "
            f"{r['messages']:,} messages and {r['tool_calls']:,} tool calls{skipped}.")

