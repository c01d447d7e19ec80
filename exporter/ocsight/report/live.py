"""`ocsight live`: today's spend, the running session and its latest calls, redrawn as OpenCode writes.

Each frame refreshes the index (which reads only what changed) and reads the most recently
updated session's records afresh.
"""

from __future__ import annotations

import datetime as dt
import time

from rich.console import Group
from rich.panel import Panel
from rich.table import Table

from ocsight.report.summary import money, short_path, tokens

RECENT = 8
RATE_WINDOW_MS = 10 * 60_000


def _clock(ms: int | None, tz) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz).strftime("%H:%M:%S") if ms else "-"


def frame(run, now_ms: int | None = None):
    """One screen, from the sources as they are now."""
    from ocsight import query, reader

    now_ms = now_ms or int(time.time() * 1000)
    today = dt.datetime.fromtimestamp(now_ms / 1000, run.tz).date().isoformat()
    filters = query.make_filters(since=today, timezone=run.settings.timezone)
    with run.index() as idx:
        doc = query.stats(idx.con, filters, run.cost_mode)
        row = idx.con.execute(
            "SELECT s.id FROM session s JOIN usage_cube c ON c.session_id = s.id "
            "ORDER BY c.bucket DESC, s.time_updated DESC LIMIT 1"
        ).fetchone()
    t = doc["totals"]
    head = Table.grid(padding=(0, 3))
    for _ in range(4):
        head.add_column()
    head.add_row(f"[bold]Today[/bold] {today}", f"[bold green]{money(t['cost'])}[/bold green]",
                 f"{t['messages']['assistant']:,} model calls", f"{t['tokens']['total']:,} tokens")
    parts: list = [head]
    if row is None:
        parts.append("[dim]No sessions yet.[/dim]")
        return Panel(Group(*parts), title="ocsight live", subtitle=_clock(now_ms, run.tz))
    recs = reader.read_records(run.options, sessions=[row[0]])
    session = next((s for s in recs.sessions if s.id == row[0]), None)
    calls = [m for m in recs.messages if m.role == "assistant"]
    recent_tokens = sum(m.tokens.total for m in calls if (m.time_created or 0) >= now_ms - RATE_WINDOW_MS)
    cost = sum(sum(m.cost_parts(run.cost_mode)) for m in calls)
    title = (session.title if session else None) or "(untitled)"
    parts.append(
        f"[bold]Session[/bold] {title} [dim]{row[0]} {short_path(session.directory or '') if session else ''}[/dim]\n"
        f"{len(calls):,} calls, {sum(m.tokens.total for m in calls):,} tokens, ${cost:,.4f}; "
        f"{recent_tokens / (RATE_WINDOW_MS / 60_000):,.0f} tokens/min over the last 10 minutes"
    )
    models = Table(title="Latest model calls", title_justify="left", expand=True)
    for col, just in (("Time", "left"), ("Model", "left"), ("Agent", "left"), ("Tokens", "right"),
                      ("Cost", "right"), ("State", "left")):
        models.add_column(col, justify=just)
    for m in calls[-RECENT:][::-1]:
        state = m.error or ("streaming" if m.time_completed is None else m.finish or "done")
        models.add_row(_clock(m.time_created, run.tz), f"{m.provider}/{m.model}", m.agent, tokens(m.tokens.total),
                       f"${sum(m.cost_parts(run.cost_mode)):,.4f}", state)
    tools = Table(title="Latest tool calls", title_justify="left", expand=True)
    for col, just in (("Time", "left"), ("Tool", "left"), ("Status", "left"), ("Seconds", "right")):
        tools.add_column(col, justify=just)
    for c in sorted(recs.tool_calls, key=lambda c: (c.time_start or 0, c.id))[-RECENT:][::-1]:
        took = f"{(c.time_end - c.time_start) / 1000:.1f}" if c.time_start and c.time_end else "-"
        style = "red" if c.status == "error" else None
        tools.add_row(_clock(c.time_start, run.tz), c.tool, c.status or "-", took, style=style)
    parts += [models, tools]
    return Panel(Group(*parts), title="ocsight live", subtitle=_clock(now_ms, run.tz))


def run(run_ctx, interval: float, once: bool) -> None:
    console = run_ctx.console()
    if once:
        console.print(frame(run_ctx))
        return
    from rich.live import Live

    try:
        with Live(frame(run_ctx), console=console, refresh_per_second=4, screen=False) as view:
            while True:
                time.sleep(interval)
                view.update(frame(run_ctx))
    except KeyboardInterrupt:
        pass  # quitting the view is its normal end
