"""`ocsight live`: today's spend, the running session and its latest calls, redrawn as OpenCode writes.

Rendering only: `cli` gathers a `Frame` (refreshing the index, which reads only what changed, and
reading the followed session's records afresh) before every redraw.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group, JustifyMethod
from rich.panel import Panel
from rich.table import Table

from ocsight.model import Message, Session, ToolCall
from ocsight.reports.format import money, short_path, tokens

RECENT = 8
RATE_WINDOW_MS = 10 * 60_000


@dataclass(frozen=True)
class Frame:
    """What one screen shows."""

    now_ms: int
    today: str
    totals: dict[str, Any]  # `stats --json`'s totals for today
    session_id: str | None  # the session followed (None: no sessions yet)
    session: Session | None
    calls: list[Message]  # its model calls, oldest first
    tool_calls: list[ToolCall]
    cost_mode: str
    tz: dt.tzinfo | None


def _clock(ms: int | None, tz: dt.tzinfo | None) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz).strftime("%H:%M:%S") if ms else "-"


def _table(title: str, columns: tuple[tuple[str, JustifyMethod], ...]) -> Table:
    table = Table(title=title, title_justify="left", expand=True)
    for name, justify in columns:
        table.add_column(name, justify=justify)
    return table


def render(f: Frame) -> Panel:
    t = f.totals
    head = Table.grid(padding=(0, 3))
    for _ in range(4):
        head.add_column()
    head.add_row(f"[bold]Today[/bold] {f.today}", f"[bold green]{money(t['cost'])}[/bold green]",
                 f"{t['messages']['assistant']:,} model calls", f"{t['tokens']['total']:,} tokens")
    parts: list[Any] = [head]
    if f.session_id is None:
        parts.append("[dim]No sessions yet.[/dim]")
        return Panel(Group(*parts), title="ocsight live", subtitle=_clock(f.now_ms, f.tz))
    calls = f.calls
    recent_tokens = sum(m.tokens.total for m in calls if (m.time_created or 0) >= f.now_ms - RATE_WINDOW_MS)
    cost = sum(sum(m.cost_parts(f.cost_mode)) for m in calls)
    session = f.session
    title = (session.title if session else None) or "(untitled)"
    where = short_path(session.directory or "") if session else ""
    parts.append(
        f"[bold]Session[/bold] {title} [dim]{f.session_id} {where}[/dim]\n"
        f"{len(calls):,} calls, {sum(m.tokens.total for m in calls):,} tokens, ${cost:,.4f}; "
        f"{recent_tokens / (RATE_WINDOW_MS / 60_000):,.0f} tokens/min over the last 10 minutes"
    )
    models = _table("Latest model calls", (("Time", "left"), ("Model", "left"), ("Agent", "left"),
                                           ("Tokens", "right"), ("Cost", "right"), ("State", "left")))
    for m in calls[-RECENT:][::-1]:
        state = m.error or ("streaming" if m.time_completed is None else m.finish or "done")
        models.add_row(_clock(m.time_created, f.tz), f"{m.provider}/{m.model}", m.agent, tokens(m.tokens.total),
                       f"${sum(m.cost_parts(f.cost_mode)):,.4f}", state)
    tools = _table("Latest tool calls", (("Time", "left"), ("Tool", "left"), ("Status", "left"),
                                         ("Seconds", "right")))
    for c in sorted(f.tool_calls, key=lambda c: (c.time_start or 0, c.id))[-RECENT:][::-1]:
        took = f"{(c.time_end - c.time_start) / 1000:.1f}" if c.time_start and c.time_end else "-"
        tools.add_row(_clock(c.time_start, f.tz), c.tool, c.status or "-", took,
                      style="red" if c.status == "error" else None)
    parts += [models, tools]
    return Panel(Group(*parts), title="ocsight live", subtitle=_clock(f.now_ms, f.tz))


def run(frame: Callable[[], Frame], console: Console, interval: float, once: bool) -> None:
    """Draws `frame()` once, or every `interval` seconds until Ctrl-C."""
    if once:
        console.print(render(frame()))
        return
    from rich.live import Live

    try:
        with Live(render(frame()), console=console, refresh_per_second=4, screen=False) as view:
            while True:
                time.sleep(interval)
                view.update(render(frame()))
    except KeyboardInterrupt:
        pass  # quitting the view is its normal end


def now_ms() -> int:
    return int(time.time() * 1000)
