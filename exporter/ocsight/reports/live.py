"""`ocsight live`: today's spend, the followed session and its latest calls, redrawn as OpenCode writes.

Rendering, and the loop that redraws: `cli` gathers a `Frame` (refreshing the index, which reads only
what changed, and reading the followed session's records afresh) before every redraw. On a terminal,
keys open a picker of recent sessions (`picker`) and choose the session followed; without one
(`--once`, output to a pipe) the view is drawn with no keyboard handling at all.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, JustifyMethod
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ocsight.index.reader import RecentSession
from ocsight.model import Message, Session, ToolCall
from ocsight.reports import keys
from ocsight.reports.documents import usage_json
from ocsight.reports.format import counted, home_path, short_path, tokens
from ocsight.reports.picker import Picker, open_picker, pick_key

RECENT = 8
RATE_WINDOW_MS = 10 * 60_000
HINTS = "s: pick a session · n: follow the newest · q: quit"
PICKER_HINTS = "↑/↓ or j/k and Enter, or a number: choose · Esc or q: back"


@dataclass(frozen=True)
class Context:
    """How full the followed session's context window was at its last model call."""

    used: int  # that call's input and cache (read and write) tokens: the prompt the model was sent
    limit: int | None  # the model's context window; None when no catalogue or config gives one
    model: str  # provider/model of that call


@dataclass(frozen=True)
class Frame:
    """What one screen shows."""

    now_ms: int
    today: str
    totals: dict[str, Any]  # `stats --json`'s totals for today
    session_id: str | None  # the session followed (None: no sessions yet)
    session: Session | None
    calls: list[Message]  # its model calls
    tool_calls: list[ToolCall]
    cost_mode: str
    tz: dt.tzinfo | None
    context: Context | None = None  # None: the session has no call with tokens yet
    chosen: bool = False  # the user chose this session (else the newest is followed)


def context_fill(calls: Sequence[Message], limit_of: Callable[[str, str], int | None]) -> Context | None:
    """The context fill at the latest call that sent the model anything (a streaming call has no tokens yet)."""
    sent = [m for m in calls if m.tokens.input + m.tokens.cache_read + m.tokens.cache_write > 0]
    if not sent:
        return None
    last = max(sent, key=lambda m: (m.time_created or 0, m.id))
    t = last.tokens
    return Context(t.input + t.cache_read + t.cache_write, limit_of(last.provider, last.model),
                   f"{last.provider}/{last.model}")


def when(ms: int | None, tz: dt.tzinfo | None, today: str) -> str:
    """A time of today as HH:MM:SS; of another day with its date in front (MM-DD, and the year when it
    is not this year's), so a call of two weeks ago never reads like one of today."""
    if not ms:
        return "-"
    t = dt.datetime.fromtimestamp(ms / 1000, tz)
    day = t.date().isoformat()
    if day == today:
        return t.strftime("%H:%M:%S")
    return t.strftime("%m-%d %H:%M:%S" if day[:4] == today[:4] else "%Y-%m-%d %H:%M:%S")


def _table(title: str, columns: tuple[tuple[str, JustifyMethod, bool], ...]) -> Table:
    """A table as wide as its content (at most the terminal): figures and times (`whole`) are never
    wrapped or cut; names fold onto more lines when the terminal is narrow."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
                  collapse_padding=True)
    for name, justify, whole in columns:
        table.add_column(name, justify=justify, no_wrap=whole, overflow="fold")
    return table


def _call_cost(m: Message, mode: str) -> str:
    return "unpriced" if m.is_unpriced(mode) else f"${sum(m.cost_parts(mode)):,.4f}"



def spend(usd: float, unpriced: int, decimals: int = 2) -> str:
    """A cost with its unpriced calls named: never a bare $0 for calls no price source knows."""
    if unpriced and usd == 0:
        return f"unknown ({unpriced:,} unpriced)"
    return f"${usd:,.{decimals}f}" + (f" + {unpriced:,} unpriced" if unpriced else "")


def _spend(cost: dict[str, Any]) -> str:
    return spend(cost["usd"], cost["unpriced_messages"])


def context_line(c: Context | None) -> str:
    if c is None:
        return "no model call yet"
    if c.limit is None:
        return f"{c.used:,} / unknown ({c.model}: no context limit known)"
    return f"{c.used:,} / {c.limit:,} ({c.used / c.limit:.0%}) {c.model}"


def _facts() -> Table:
    """Labels and values, the values wrapping at words beside their label."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    return grid


def render(f: Frame, hints: bool = False) -> Panel:
    t = f.totals
    facts = _facts()
    facts.add_row("Today", f"{f.today} · [bold green]{_spend(t['cost'])}[/bold green] · "
                           f"{counted(t['messages']['assistant'], 'model call')} · {t['tokens']['total']:,} tokens")
    parts: list[Any] = [facts]
    if f.session_id is None:
        parts.append(Text("No sessions yet.", style="dim"))
    else:
        parts += _session_parts(f, facts)
    if hints:
        parts.append(Text(HINTS, style="dim"))
    return Panel(Group(*parts), title="ocsight live", subtitle=when(f.now_ms, f.tz, f.today), expand=False)


def _session_parts(f: Frame, facts: Table) -> list[Any]:
    calls = sorted(f.calls, key=lambda m: (m.time_created or 0, m.id))
    recent_tokens = sum(m.tokens.total for m in calls if (m.time_created or 0) >= f.now_ms - RATE_WINDOW_MS)
    cost = sum(sum(m.cost_parts(f.cost_mode)) for m in calls)
    unpriced = sum(1 for m in calls if m.is_unpriced(f.cost_mode))
    session = f.session
    title = (session.title if session else None) or "(untitled)"
    where = home_path(session.directory or "") if session else ""
    how = "chosen" if f.chosen else "the newest"
    facts.add_row("Session", Text.assemble(title, (f" ({how})", "dim")))
    facts.add_row("", Text(f"{f.session_id} {where}", style="dim"))
    facts.add_row("Started", when(session.time_created, f.tz, f.today) if session else "-")
    rate = recent_tokens / (RATE_WINDOW_MS / 60_000)
    facts.add_row("Usage", f"{counted(len(calls), 'call')} · {sum(m.tokens.total for m in calls):,} tokens · "
                  f"{spend(cost, unpriced, 4)} · {rate:,.0f} tokens/min (last 10 min)")
    facts.add_row("Context", context_line(f.context))
    models = _table("Latest model calls", (("Time", "right", True), ("Model", "left", False),
                                           ("Agent", "left", False), ("Tokens", "right", True),
                                           ("Cost", "right", True), ("State", "left", False)))
    for m in calls[-RECENT:][::-1]:
        state = m.error or ("streaming" if m.time_completed is None else m.finish or "done")
        models.add_row(when(m.time_created, f.tz, f.today), f"{m.provider}/{m.model}", m.agent,
                       tokens(m.tokens.total), _call_cost(m, f.cost_mode), state)
    tools = _table("Latest tool calls", (("Time", "right", True), ("Tool", "left", False),
                                         ("Status", "left", False), ("Seconds", "right", True)))
    for c in sorted(f.tool_calls, key=lambda c: (c.time_start or 0, c.id))[-RECENT:][::-1]:
        took = f"{(c.time_end - c.time_start) / 1000:,.1f}" if c.time_start and c.time_end else "-"
        tools.add_row(when(c.time_start, f.tz, f.today), c.tool, c.status or "-", took,
                      style="red" if c.status == "error" else None)
    return [Text(), models, Text(), tools if f.tool_calls else Text("Latest tool calls: none")]


# -- the session picker ---------------------------------------------------------------------------

def render_picker(p: Picker, tz: dt.tzinfo | None, today: str, width: int) -> Panel:
    """One line a session; when the terminal is narrow, titles end in "…" and project paths keep their
    tail, while times and spend stay whole."""
    lasts = [when(s.last_ms, tz, today) for s in p.sessions]
    spends = [_spend(usage_json(s.usage)["cost"]) for s in p.sessions]
    titles = [(s.title or "(untitled)") + (" (subagent)" if s.parent_id else "") for s in p.sessions]
    projects = [s.project for s in p.sessions]
    # the panel's frame (4), the gaps between the six columns (2 each) and the whole columns
    whole = 4 + 10 + 1 + len(str(len(p.sessions))) + max(map(cell_len, ["Last activity", *lasts])) \
        + max(map(cell_len, ["Spend", *spends]))
    room = max(20, width - whole)
    title_w = min(max(map(cell_len, ["the newest", *titles])), max(14, room * 11 // 20))
    project_w = max(8, min(max(map(cell_len, ["Project", *projects])), room - title_w))
    table = _table("", (("", "left", True), ("#", "right", True), ("Session", "left", True),
                        ("Project", "left", True), ("Last activity", "right", True), ("Spend", "right", True)))
    table.columns[2].max_width = title_w
    table.columns[3].max_width = project_w
    table.add_row(">" if p.cursor == 0 else "", "0", Text("the newest", overflow="ellipsis"),
                  "", "", "", style="reverse" if p.cursor == 0 else None)
    for n, s in enumerate(p.sessions, 1):
        table.add_row(">" if p.cursor == n else "", str(n), Text(titles[n - 1], overflow="ellipsis"),
                      short_path(projects[n - 1], project_w), lasts[n - 1], spends[n - 1],
                      style="reverse" if p.cursor == n else None)
    return Panel(Group(table, Text(PICKER_HINTS, style="dim")), title="ocsight live: pick a session",
                 expand=False)


# -- the loop -------------------------------------------------------------------------------------

Frames = Callable[[str | None, bool], Frame]  # (the session chosen, None for the newest; chosen) -> Frame
Recent = Callable[[], list[RecentSession]]


def run(frame: Frames, console: Console, interval: float, once: bool, session: str | None = None,
        recent: Recent | None = None, pick: bool = False) -> None:
    """Draws the view once (`once`), or every `interval` seconds until q or Ctrl-C. With `recent` and a
    terminal on both ends, keys open the session picker (at once with `pick`); without, no key is read."""
    interactive = recent is not None and (pick or not once) and keys.available(sys.stdin, sys.stdout)
    try:
        if interactive and recent is not None:
            with keys.Keys(sys.stdin.fileno()) as k:
                _interactive(frame, recent, session, console, interval, once, k, pick)
        elif once:
            console.print(render(frame(session, session is not None)))
        else:
            _redraw(frame, session, console, interval)
    except (KeyboardInterrupt, EOFError):
        pass  # quitting the view is its normal end


def _redraw(frame: Frames, session: str | None, console: Console, interval: float) -> None:
    from rich.live import Live

    def draw() -> Panel:
        return render(frame(session, session is not None))

    with Live(draw(), console=console, auto_refresh=False) as view:
        while True:
            time.sleep(interval)
            view.update(draw(), refresh=True)


def _interactive(frame: Frames, recent: Recent, session: str | None, console: Console, interval: float,
                 once: bool, k: keys.Keys, pick: bool) -> None:
    """The view with keys: s opens the picker, n follows the newest, q quits; `once` with `pick`: the
    picker, then one frame of the session chosen."""
    from rich.live import Live

    current = frame(session, session is not None)
    picker = open_picker(recent(), session, console.height) if pick else None
    with Live(console=console, auto_refresh=False, transient=once) as view:
        due = 0.0
        while True:
            if picker is not None:
                view.update(render_picker(picker, current.tz, current.today, console.width), refresh=True)
            elif once:
                break
            elif time.monotonic() >= due:
                current = frame(session, session is not None)
                view.update(render(current, hints=True), refresh=True)
                due = time.monotonic() + interval
            for key in k.read(None if picker is not None else max(0.0, due - time.monotonic())):
                if picker is None:
                    if key == "q":
                        return
                    if key == "s":
                        picker = open_picker(recent(), session, console.height)
                    elif key == "n":
                        session, due = None, 0.0
                    continue
                after = pick_key(picker, key)
                if isinstance(after, Picker):
                    picker = after
                    continue
                if after is None and once:
                    return
                if after is not None:
                    session = after.session
                picker, due = None, 0.0
                break
    # only `once` leaves the loop here: the picker is gone (transient), the frame stays on the screen
    console.print(render(frame(session, session is not None)))


def now_ms() -> int:
    return int(time.time() * 1000)
