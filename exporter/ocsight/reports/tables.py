"""Terminal tables for the time reports and the session tree."""

from __future__ import annotations

import datetime as dt

from rich.table import Table
from rich.tree import Tree

from ocsight.reports.format import COMPACT_NOTE, FULL, WIDE, money, short_path, token_kinds, tokens

PERIOD_TITLES = {"day": "Daily usage", "week": "Weekly usage (weeks start on Monday)", "month": "Monthly usage"}


def _usage_cells(u: dict, kinds: tuple[str, ...]) -> list[str]:
    t = u["tokens"]
    return [f"{u['messages']:,}", *(tokens(t[k]) for k in kinds), tokens(t["total"]), money(u["cost"])]


def periods_table(rows: list[dict], grain: str, breakdown: bool, width: int = WIDE) -> Table:
    kinds = token_kinds(width)
    table = Table(title=PERIOD_TITLES[grain], title_justify="left", title_style="bold")
    table.add_column(grain.capitalize(), no_wrap=True)
    if breakdown:
        table.add_column("Model")
    table.add_column("Sessions", justify="right")
    for h in ["Calls", *(k.replace("_", " ").capitalize() for k in kinds), "Total", "Cost"]:
        table.add_column(h, justify="right", no_wrap=True)
    total_usd = 0.0
    for p in rows:
        total_usd += p["cost"]["usd"]
        lead = [f"[bold]{p['period']}[/bold]"] + (["[bold]all[/bold]"] if breakdown else [])
        table.add_row(*lead, f"{p['sessions']:,}", *_usage_cells(p, kinds), end_section=breakdown)
        for m in p.get("models", []) if breakdown else ():
            table.add_row("", f"{m['provider']}/{m['model']}", f"{m['sessions']:,}", *_usage_cells(m, kinds),
                          style="dim")
        if breakdown and p.get("models"):
            table.rows[-1].end_section = True
    table.caption = f"{len(rows)} {grain}s, ${total_usd:,.2f}" if rows else "no usage in this window"
    if kinds != FULL:
        table.caption += "; " + COMPACT_NOTE.format(width=WIDE)
    return table


def _when(ms: int | None) -> str:
    if not ms:
        return "?"
    return dt.datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M")


def _label(node: dict) -> str:
    r = node["rollup"]
    own = money(node["cost"])
    rolled = f", with subagents {money(r['cost'])}, {r['tokens']['total']:,} tokens" if node["children"] else ""
    title = node["title"] or "(untitled)"
    return (f"[bold]{title}[/bold] [dim]{node['id']} {_when(node['time_created'])} "
            f"{short_path(node['project'] or '')}[/dim]\n"
            f"{node['messages']:,} calls, {node['tokens']['total']:,} tokens, {own}{rolled}; "
            f"{', '.join(node['models']) or '-'}; {node['tool_calls']:,} tool calls"
            + (f", [red]{node['errors']} errors[/red]" if node["errors"] else ""))


def sessions_tree(roots: list[dict], limit: int) -> Tree:
    tree = Tree(f"[bold]Sessions[/bold] ({len(roots)} shown of their trees, newest first)"
                if len(roots) <= limit else f"[bold]Sessions[/bold] (newest {limit} of {len(roots)})")

    def add(parent: Tree, node: dict) -> None:
        branch = parent.add(_label(node))
        for child in node["children"]:
            add(branch, child)

    for root in roots[:limit]:
        add(tree, root)
    return tree
