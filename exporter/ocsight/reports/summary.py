"""A readable terminal overview of a `stats` document."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ocsight.filters import describe, no_usage
from ocsight.normalise import TOKEN_KEYS
from ocsight.reports.format import COMPACT_NOTE, FULL, WIDE, money, short_path, token_kinds, tokens


def _usage_table(title: str, rows: list[dict], keys: list[str], total_usd: float, limit: int | None = 10,
                 detailed: tuple[str, ...] = ()) -> Table:
    """A breakdown; `detailed` names the token types shown in their own columns."""
    table = Table(title=title, title_justify="left", title_style="bold")
    for k in keys:
        table.add_column(k.capitalize())
    table.add_column("Sessions", justify="right")
    table.add_column("Messages", justify="right")
    token_columns = detailed
    for k in token_columns:
        table.add_column(k.replace("_", " ").capitalize(), justify="right", no_wrap=True)
    table.add_column("Tokens", justify="right", no_wrap=True)
    table.add_column("Cost", justify="right", no_wrap=True)
    table.add_column("Share", justify="right", no_wrap=True)
    shown = rows if limit is None else rows[:limit]
    for r in shown:
        share = r["cost"]["usd"] / total_usd * 100 if total_usd else 0.0
        table.add_row(
            *((short_path(r[k]) if k == "project" else str(r[k])) or "-" for k in keys), str(r["sessions"]),
            tokens(r["messages"]), *(tokens(r["tokens"][k]) for k in token_columns),
            tokens(r["tokens"]["total"]), money(r["cost"]), f"{share:.1f}%",
        )
    if len(rows) > len(shown):
        table.caption = f"{len(rows) - len(shown)} more not shown"
    return table


def render(doc: dict, console: Console | None = None, detailed: bool = False,
           top_sessions: list[dict] | None = None) -> None:
    """The overview (`analyze`); `detailed` (`stats`) shows every row and every token type."""
    console = console or Console()
    limit = None if detailed else 10
    kinds = token_kinds(console.width) if detailed else ()
    t = doc["totals"]
    src = doc["source"]
    if src["demo"]:
        console.print("[yellow]Demo store[/yellow] (bundled with ocsight)")
    console.print(f"[bold]OpenCode usage[/bold]  {', '.join(src['databases'] + src['legacy_dirs'])}", soft_wrap=True)
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
    summary.add_row("Sessions", f"{t['sessions']:,} ({t['subagent_sessions']:,} subagent)")
    m = t["messages"]
    summary.add_row("Messages", f"{m['user']:,} user, {m['assistant']:,} assistant, {m['errors']:,} errors")
    for k in TOKEN_KEYS:
        summary.add_row(f"Tokens {k.replace('_', ' ')}", tokens(tok[k]))
    summary.add_row("Tokens total", f"[bold]{tokens(tok['total'])}[/bold]")
    summary.add_row("Cache hit ratio", f"{cached / prompt * 100:.1f}%" if prompt else "-")
    c = t["cost"]
    summary.add_row("Cost", f"[bold green]${c['usd']:,.2f}[/bold green]")
    summary.add_row("  stored by OpenCode", f"${c['stored_usd']:,.2f}")
    summary.add_row("  estimated by ocsight", f"${c['estimated_usd']:,.2f}")
    if c["unpriced_messages"]:
        names = ", ".join(f"{u['provider']}/{u['model']}" for u in doc["unpriced_models"])
        summary.add_row("  unpriced", f"[yellow]{c['unpriced_messages']:,} messages ({names})[/yellow]")
    console.print(summary)
    total = c["usd"]
    for title, key, keys in (("By provider", "by_provider", ["provider"]), ("By model", "by_model", ["provider", "model"]),
                             ("By agent", "by_agent", ["agent"]), ("By project", "by_project", ["project"])):
        console.print(_usage_table(title, doc[key], keys, total, limit, kinds))
    if detailed and kinds != FULL:
        console.print(f"[dim]{COMPACT_NOTE.format(width=WIDE)}[/dim]")
    if top_sessions:
        table = Table(title="Top sessions (with their subagents)", title_justify="left", title_style="bold")
        for col, just in ((("Session", "left"), ("Project", "left"), ("Calls", "right"), ("Tokens", "right"),
                           ("Cost", "right"))):
            table.add_column(col, justify="right" if just == "right" else "left")
        for n in top_sessions:
            r = n["rollup"]
            sub = f" (+{r['sessions'] - 1} subagent)" if r["sessions"] > 1 else ""
            table.add_row(f"{n['title'] or '(untitled)'}{sub}", short_path(n["project"] or "", 24), f"{r['messages']:,}",
                          tokens(r["tokens"]["total"]), money(r["cost"]))
        console.print(table)
    if doc["by_tool"]:
        tools = Table(title="Tools", title_justify="left", title_style="bold")
        for col, just in (("Tool", "left"), ("MCP server", "left"), ("Calls", "right"), ("Errors", "right"),
                          ("Error rate", "right")):
            tools.add_column(col, justify="right" if just == "right" else "left")
        for r in doc["by_tool"] if detailed else doc["by_tool"][:15]:
            rate = r["errors"] / r["calls"] * 100 if r["calls"] else 0
            tools.add_row(r["tool"], r["mcp_server"] or "", f"{r['calls']:,}", f"{r['errors']:,}", f"{rate:.1f}%")
        console.print(tools)
    if doc.get("by_error"):
        console.print("[bold]Errors[/bold]  " + ", ".join(f"{e['error']}: {e['messages']:,}" for e in doc["by_error"]))
    _source_lines(src, console)


def _source_lines(src: dict, console: Console) -> None:
    """What the reading skipped, and notes on the sources."""
    skipped = src["skipped"]
    if skipped["total"]:
        reasons = ", ".join(f"{n} {why}" for why, n in skipped["by_reason"].items())
        console.print(f"[yellow]Skipped {skipped['total']} records:[/yellow] {reasons}")
    for note in src["notes"]:
        console.print(f"[yellow]Note:[/yellow] {note}")
