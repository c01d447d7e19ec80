"""Terminal tables for the time reports and the session tree."""

from __future__ import annotations

import datetime as dt

from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from ocsight.normalise import TOKEN_KEYS
from ocsight.reports import layout
from ocsight.reports.format import MIN_TAIL, PARTIAL, counted, distinct_tails, fork_copies, home_path, money
from ocsight.reports.layout import FULL_NAMES, Column, costs, counts, notes

PERIOD_TITLES = {"day": "Daily usage", "week": "Weekly usage (weeks start on Monday)", "month": "Monthly usage"}
# the step at which each column goes when the table is too wide; counts turn compact at COMPACT_AT
DROPS = {"cache_write": 1, "reasoning": 2, "cache_read": 3, "sessions": 5, "output": 6, "input": 7}
COMPACT_AT = 4


def periods_table(rows: list[dict], grain: str, breakdown: bool, width: int, unpriced_note: str | None = None) -> Table:
    """Periods (each followed by its models with `breakdown`), as many token columns as fit `width`."""
    lines: list[tuple[str, str | None, dict, bool]] = []  # (period cell, model, usage, a model line)
    for p in rows:
        lines.append((f"[bold]{p['period']}[/bold]", "all" if breakdown else None, p, False))
        for m in p.get("models", []) if breakdown else ():
            lines.append(("", f"{m['provider']}/{m['model']}", m, True))
    columns = [Column(grain.capitalize(), [line[0] for line in lines], "label")]
    if breakdown:
        columns.append(Column("Model", [line[1] or "" for line in lines], "name"))
    usage = [line[2] for line in lines]
    columns += [counts("Sessions", [u["sessions"] for u in usage], DROPS["sessions"]),
                counts("Calls", [u["messages"] for u in usage])]
    columns += [counts(k.replace("_", " ").capitalize(), [u["tokens"][k] for u in usage], DROPS[k])
                for k in TOKEN_KEYS]
    columns += [counts("Total", [u["tokens"]["total"] for u in usage]), costs([u["cost"] for u in usage])]
    fitted = layout.fit(columns, width, COMPACT_AT)
    table = layout.table(fitted, PERIOD_TITLES[grain])
    for (_period, _model, _usage, model_line), cells, nxt in zip(lines, layout.rows(fitted), [*lines[1:], None]):
        # a rule under each period's line and under its last model
        table.add_row(*cells, style="dim" if model_line else None,
                      end_section=breakdown and (not model_line or nxt is None or not nxt[3]))
    if rows:
        priced = sum(p["cost"]["usd"] for p in rows)
        unpriced = sum(p["cost"]["unpriced_messages"] for p in rows)
        total = "cost unknown" if unpriced and not priced else f"{PARTIAL if unpriced else ''}${priced:,.2f}"
        table.caption = "; ".join([f"{counted(len(rows), grain)}, {total}", *notes(fitted)])
        if unpriced_note and unpriced:
            table.caption += "\n" + unpriced_note
    else:
        table.caption = "no usage in this window"
    return table


def _when(ms: int | None) -> str:
    if not ms:
        return "?"
    return dt.datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M")


def _label(node: dict, project: str, copies_counted: bool) -> str:
    r = node["rollup"]
    own = money(node["cost"])
    rolled = f", with subagents {money(r['cost'])}, {counted(r['tokens']['total'], 'token')}" if node["children"] else ""
    title = escape(node["title"] or "(untitled)")
    errors = node["errors"]
    return (f"[bold]{title}[/bold] [dim]{node['id']} {_when(node['time_created'])} {escape(project)}[/dim]\n"
            f"{counted(node['messages'], 'call')}, {counted(node['tokens']['total'], 'token')}, {own}{rolled}; "
            f"{escape(', '.join(node['models'])) or '-'}; {counted(node['tool_calls'], 'tool call')}"
            + (f", [red]{counted(errors, 'error')}[/red]" if errors else "")
            + (f"; fork copies: {fork_copies(node['fork_copies'], copies_counted)}" if node["fork_copies"] else ""))


def sessions_tree(roots: list[dict], limit: int, width: int = FULL_NAMES, copies_counted: bool = False) -> Tree:
    """`copies_counted`: the sessions' usage counts the copies a fork made again (else they are set aside)."""
    n = len(roots)
    heading = ("none with usage in this window" if n == 0 else "1, with its subagents" if n == 1
               else f"{n:,}, newest first, each with its subagents" if n <= limit
               else f"the newest {limit:,} of {n:,}, each with its subagents")
    tree = Tree(f"[bold]Sessions[/bold]: {heading}")
    projects = sorted({home_path(n["project"] or "") for n in _nodes(roots)})
    # below FULL_NAMES a project is its tail, in half the width, and the end of no other project's path
    shown = (distinct_tails(projects, max(MIN_TAIL + 1, width // 2)) if width < FULL_NAMES else projects)
    as_shown = dict(zip(projects, shown))

    def add(parent: Tree, node: dict) -> None:
        branch = parent.add(_label(node, as_shown[home_path(node["project"] or "")], copies_counted))
        for child in node["children"]:
            add(branch, child)

    for root in roots[:limit]:
        add(tree, root)
    return tree


def _nodes(nodes: list[dict]) -> list[dict]:
    """Every session of these trees."""
    return [x for n in nodes for x in (n, *_nodes(n["children"]))]


def session_ids(nodes: list[dict]) -> frozenset[str]:
    """The IDs of every session of these trees."""
    return frozenset(n["id"] for n in _nodes(nodes))
