"""A readable terminal overview of a `stats` document."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ocsight.filters import describe, no_usage
from ocsight.normalise import TOKEN_KEYS
from ocsight.reports import layout
from ocsight.reports.format import (
    PARTIAL,
    UNKNOWN,
    counted,
    fork_copies,
    home_path,
    tokens,
    unpriced_note,
)
from ocsight.reports.layout import Column, costs, counts, notes

# the step at which each column goes when a table is too wide; counts turn compact at COMPACT_AT
DETAILED_DROPS = {"share": 1, "cache_write": 2, "reasoning": 3, "cache_read": 4, "sessions": 6, "output": 7,
                  "input": 8}
DETAILED_COMPACT_AT = 5
OVERVIEW_DROPS = {"share": 1, "sessions": 3}
OVERVIEW_COMPACT_AT = 2


def _share(cost: dict, total_usd: float) -> str:
    if cost["unpriced_messages"] and not cost["usd"]:
        return UNKNOWN
    return f"{cost['usd'] / total_usd * 100 if total_usd else 0.0:.1f}%"


def _usage_table(title: str, rows: list[dict], keys: list[str], total_usd: float, width: int,
                 limit: int | None = 10, detailed: tuple[str, ...] = ()) -> Table:
    """A breakdown; `detailed` names the token types shown in their own columns (as the width allows)."""
    shown = rows if limit is None else rows[:limit]
    drops = DETAILED_DROPS if detailed else OVERVIEW_DROPS
    columns = [Column("Project", [home_path(r[k]) or "-" for r in shown], "path",
                      known=tuple(home_path(r[k]) for r in rows)) if k == "project"
               else Column(k.capitalize(), [str(r[k]) or "-" for r in shown], "name") for k in keys]
    columns += [counts("Sessions", [r["sessions"] for r in shown], drops["sessions"]),
                counts("Calls", [r["messages"] for r in shown])]  # model calls, as every table names them
    columns += [counts(k.replace("_", " ").capitalize(), [r["tokens"][k] for r in shown], drops[k])
                for k in detailed]
    columns += [counts("Tokens", [r["tokens"]["total"] for r in shown]),
                costs([r["cost"] for r in shown]),
                Column("Share", [_share(r["cost"], total_usd) for r in shown], drop=drops["share"])]
    fitted = layout.fit(columns, width, DETAILED_COMPACT_AT if detailed else OVERVIEW_COMPACT_AT)
    table = layout.table(fitted, title)
    for cells in layout.rows(fitted):
        table.add_row(*cells)
    more = [f"{len(rows) - len(shown):,} more not shown"] if len(rows) > len(shown) else []
    table.caption = "; ".join(more + notes(fitted)) or None
    return table


def _cost_rows(summary: Table, doc: dict) -> None:
    c = doc["totals"]["cost"]
    mode = doc.get("pricing", {}).get("cost_mode", "auto")
    if c["unpriced_messages"] and not c["usd"]:
        summary.add_row("Cost", "[bold yellow]unknown[/bold yellow]")
    elif c["unpriced_messages"]:
        summary.add_row("Cost", f"[bold green]{PARTIAL}${c['usd']:,.2f}[/bold green] [yellow](partial)[/yellow]")
    else:
        summary.add_row("Cost", f"[bold green]${c['usd']:,.2f}[/bold green]")
    names = ", ".join(f"{u['provider']}/{u['model']}" for u in doc["unpriced_models"])
    if mode == "calculate":
        summary.add_row("  stored by OpenCode", "not used (calculate mode)")
    else:
        summary.add_row("  stored by OpenCode", f"${c['stored_usd']:,.2f}")
    if mode == "stored":
        summary.add_row("  estimated by ocsight", "none (stored mode)")
        if c["unpriced_messages"]:
            summary.add_row("  no stored cost", f"[yellow]{counted(c['unpriced_messages'], 'message')} ({names}), "
                                                "no price known either[/yellow]")
        return
    # what ocsight estimated leaves the unpriced messages out: unknown when nothing else was estimated
    estimated = f"${c['estimated_usd']:,.2f}"
    if c["unpriced_messages"]:
        estimated = f"{PARTIAL}{estimated}" if c["estimated_usd"] else "[yellow]unknown[/yellow]"
    summary.add_row("  estimated by ocsight", estimated)
    if c["unpriced_messages"]:
        # short enough for one line at 80 columns (a wrapped value leaves its end alone, right-aligned);
        # the note under the tables names the models with their counts
        summary.add_row("  unpriced", f"[yellow]cost unknown for {counted(c['unpriced_messages'], 'message')} "
                                      "(models named below)[/yellow]")


def render(doc: dict, console: Console | None = None, detailed: bool = False,
           top_sessions: list[dict] | None = None) -> None:
    """The overview (`analyze`); `detailed` (`stats`) shows every row and every token type that fits."""
    console = console or Console()
    width = console.width
    limit = None if detailed else 10
    kinds = TOKEN_KEYS if detailed else ()
    t = doc["totals"]
    src = doc["source"]
    if src["demo"]:
        console.print("[bold]OpenCode usage[/bold]  the bundled [yellow]demo store[/yellow] (not your data)")
    else:
        console.print(f"[bold]OpenCode usage[/bold]  {', '.join(src['databases'] + src['legacy_dirs'])}",
                      soft_wrap=True)
    if not t["messages"]["assistant"]:
        console.print(no_usage(doc["filters"]), markup=False)
        _source_lines(src, console)
        return
    console.print(describe(doc["filters"]), style="dim", markup=False)
    tok = t["tokens"]
    cached = tok["cache_read"]
    prompt = tok["input"] + tok["cache_read"] + tok["cache_write"]
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="dim")
    summary.add_column(justify="right")
    summary.add_row("Sessions", f"{t['sessions']:,} ({counted(t['subagent_sessions'], 'subagent session')})")
    m = t["messages"]
    summary.add_row("Messages", f"{m['user']:,} user, {m['assistant']:,} assistant, {counted(m['errors'], 'error')}")
    for k in TOKEN_KEYS:
        summary.add_row(f"Tokens {k.replace('_', ' ')}", tokens(tok[k]))
    summary.add_row("Tokens total", f"[bold]{tokens(tok['total'])}[/bold]")
    summary.add_row("Cache hit ratio", f"{cached / prompt * 100:.1f}%" if prompt else "-")
    _cost_rows(summary, doc)
    copies = src.get("fork_copies", 0)
    if copies:
        # messages a fork copied from its source session: their spend is counted where it was made
        summary.add_row("Fork copies", fork_copies(copies, bool(src.get("fork_copies_counted"))))
    console.print(summary)
    total = t["cost"]["usd"]
    for title, key, keys in (("By provider", "by_provider", ["provider"]), ("By model", "by_model", ["provider", "model"]),
                             ("By agent", "by_agent", ["agent"]), ("By project", "by_project", ["project"])):
        console.print(_usage_table(title, doc[key], keys, total, width, limit, kinds))
    if doc["unpriced_models"]:
        console.print(f"[dim]{unpriced_note(doc['unpriced_models'], doc.get('pricing', {}).get('cost_mode', 'auto'))}"
                      "[/dim]")
    if top_sessions:
        console.print(_top_sessions(top_sessions, width, tuple(home_path(r["project"]) for r in doc["by_project"])))
    if doc["by_tool"]:
        tools = doc["by_tool"] if detailed else doc["by_tool"][:15]
        fitted = layout.fit([
            Column("Tool", [r["tool"] for r in tools], "name"),
            Column("MCP server", [r["mcp_server"] or "" for r in tools], "name"),
            counts("Calls", [r["calls"] for r in tools]),
            counts("Errors", [r["errors"] for r in tools]),
            Column("Error rate", [f"{r['errors'] / r['calls'] * 100 if r['calls'] else 0:.1f}%" for r in tools]),
        ], width)
        table = layout.table(fitted, "Tools")
        for cells in layout.rows(fitted):
            table.add_row(*cells)
        console.print(table)
    if doc.get("by_error"):
        console.print("[bold]Errors[/bold]  " + ", ".join(f"{e['error']}: {e['messages']:,}" for e in doc["by_error"]))
    _source_lines(src, console)


def _source_lines(src: dict, console: Console) -> None:
    """What the reading skipped, and notes on the sources."""
    skipped = src["skipped"]
    if skipped["total"]:
        reasons = ", ".join(f"{n:,} {why}" for why, n in skipped["by_reason"].items())
        console.print(f"[yellow]Skipped {counted(skipped['total'], 'record')}:[/yellow] {reasons}")
    for note in src["notes"]:
        console.print(f"[yellow]Note:[/yellow] {escape(note)}", soft_wrap=True)  # a path is read whole


def _top_sessions(nodes: list[dict], width: int, projects: tuple[str, ...]) -> Table:
    titles = []
    for n in nodes:
        more = n["rollup"]["sessions"] - 1
        titles.append(f"{n['title'] or '(untitled)'}" + (f" (+{counted(more, 'subagent')})" if more else ""))
    fitted = layout.fit([
        Column("Session", titles, "name"),
        Column("Project", [home_path(n["project"] or "") for n in nodes], "path", known=projects),
        counts("Calls", [n["rollup"]["messages"] for n in nodes]),
        counts("Tokens", [n["rollup"]["tokens"]["total"] for n in nodes]),
        costs([n["rollup"]["cost"] for n in nodes]),
    ], width)
    table = layout.table(fitted, "Top sessions (with their subagents)")
    for cells in layout.rows(fitted):
        table.add_row(*cells)
    if notes(fitted):
        table.caption = "; ".join(notes(fitted))
    return table
