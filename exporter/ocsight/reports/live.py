"""`ocsight live`: today's spend, the followed session and its latest calls, redrawn as OpenCode writes.

Rendering, and the loop that redraws: `cli` gathers a `Frame` (refreshing the index, which reads only
what changed, and reading the followed session's records afresh) before every redraw. On a terminal,
keys open a picker of recent sessions (`Picker`) and choose the session followed; without one
(`--once`, output to a pipe) the view is drawn with no keyboard handling at all.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from rich import box
from rich.console import Console, Group, JustifyMethod
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ocsight.index.reader import RecentSession
from ocsight.model import Message, Session, ToolCall
from ocsight.reports.documents import usage_json
from ocsight.reports.format import money, short_path, tokens

RECENT = 8
RATE_WINDOW_MS = 10 * 60_000
PICKER_SIZE = 15  # sessions the picker lists; digits choose the first nine
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


def _unpriced(m: Message, mode: str) -> bool:
    return m.is_estimated(mode) and m.estimated_usd is None and m.tokens.total > 0


def _call_cost(m: Message, mode: str) -> str:
    return "unpriced" if _unpriced(m, mode) else f"${sum(m.cost_parts(mode)):,.4f}"


def _spend(cost: dict[str, Any]) -> str:
    n = cost["unpriced_messages"]
    return money(cost) + (f" + {n:,} unpriced" if n else "")


def context_line(c: Context | None) -> str:
    if c is None:
        return "no model call yet"
    if c.limit is None:
        return f"{c.used:,} / unknown ({c.model}: no context limit known)"
    return f"{c.used:,} / {c.limit:,} ({c.used * 100 // c.limit}%) {c.model}"


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
                           f"{t['messages']['assistant']:,} model calls · {t['tokens']['total']:,} tokens")
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
    unpriced = sum(1 for m in calls if _unpriced(m, f.cost_mode))
    session = f.session
    title = (session.title if session else None) or "(untitled)"
    where = short_path(session.directory or "") if session else ""
    how = "chosen" if f.chosen else "the newest"
    facts.add_row("Session", Text.assemble(title, (f" ({how})", "dim")))
    facts.add_row("", Text(f"{f.session_id} {where}", style="dim"))
    facts.add_row("Started", when(session.time_created, f.tz, f.today) if session else "-")
    facts.add_row("Usage", f"{len(calls):,} calls · {sum(m.tokens.total for m in calls):,} tokens · ${cost:,.4f}"
                  + (f" + {unpriced:,} unpriced" if unpriced else "")
                  + f" · {recent_tokens / (RATE_WINDOW_MS / 60_000):,.0f} tokens/min (last 10 min)")
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
    return [models, tools]


# -- the session picker ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Picker:
    """The picker's state: row 0 follows the newest session, rows 1.. are `sessions`."""

    sessions: tuple[RecentSession, ...]
    cursor: int = 0

    def moved(self, by: int) -> Picker:
        return replace(self, cursor=max(0, min(len(self.sessions), self.cursor + by)))

    def choice(self, row: int) -> str | None:
        """The session ID a row stands for (None: the newest)."""
        return None if row == 0 else self.sessions[row - 1].id


def render_picker(p: Picker, tz: dt.tzinfo | None, today: str) -> Panel:
    table = _table("", (("", "left", True), ("#", "right", True), ("Session", "left", False),
                        ("Project", "left", False), ("Last activity", "right", True), ("Spend", "right", True)))
    table.add_row(">" if p.cursor == 0 else "", "0", "follow the newest session", "", "", "",
                  style="reverse" if p.cursor == 0 else None)
    for n, s in enumerate(p.sessions, 1):
        title = (s.title or "(untitled)") + (" (subagent)" if s.parent_id else "")
        table.add_row(">" if p.cursor == n else "", str(n),
                      Text.assemble(title, " ", (s.id, "dim")), short_path(s.project),
                      when(s.last_ms, tz, today), _spend(usage_json(s.usage)["cost"]),
                      style="reverse" if p.cursor == n else None)
    return Panel(Group(table, Text(PICKER_HINTS, style="dim")), title="ocsight live: pick a session",
                 expand=False)


def pick_key(p: Picker, key: str) -> tuple[Picker, bool, str | None]:
    """The picker after a key: (picker, done, chosen row's session); done with no choice is a way back."""
    if key in ("up", "k"):
        return p.moved(-1), False, None
    if key in ("down", "j"):
        return p.moved(1), False, None
    if key == "enter":
        return p, True, p.choice(p.cursor)
    if key.isdigit() and int(key) <= len(p.sessions):
        return p, True, p.choice(int(key))
    if key in ("esc", "q"):
        return p, True, ""
    return p, False, None


# -- the loop -------------------------------------------------------------------------------------

Frames = Callable[[str | None, bool], Frame]  # (session chosen or None for the newest, chosen) -> Frame
Recent = Callable[[], list[RecentSession]]


@dataclass
class _Following:
    session: str | None = None  # None: the newest


def run(frame: Frames, console: Console, interval: float, once: bool, session: str | None = None,
        recent: Recent | None = None, pick: bool = False) -> None:
    """Draws the view once (`once`), or every `interval` seconds until q or Ctrl-C; with `recent` and a
    terminal on both ends, keys open the session picker (at once with `pick`)."""
    from ocsight.reports import keys

    following = _Following(session)
    if once:
        if pick and recent is not None:
            probe = frame(None, False)
            chosen = pick_once(recent, console, probe.tz, probe.today)
            if chosen is False:
                return
            session = chosen if isinstance(chosen, str) else None
        console.print(render(frame(session, session is not None)))
        return
    interactive = recent is not None and keys.available(sys.stdin, sys.stdout)
    if not interactive or recent is None:
        _redraw(frame, following, console, interval)
        return
    try:
        with keys.Keys(sys.stdin.fileno()) as k:
            _interactive(frame, recent, following, console, interval, k, pick)
    except (KeyboardInterrupt, EOFError):
        pass  # quitting the view is its normal end


def pick_once(recent: Recent, console: Console, tz: dt.tzinfo | None, today: str) -> str | None | bool:
    """Shows the picker until a choice: the session chosen (None: the newest), or False when backed out."""
    from rich.live import Live

    from ocsight.reports import keys

    p = Picker(tuple(recent()))
    with keys.Keys(sys.stdin.fileno()) as k, Live(render_picker(p, tz, today), console=console,
                                                    auto_refresh=False) as view:
        while True:
            for key in k.read(None):
                p, done, chosen = pick_key(p, key)
                if done:
                    return False if chosen == "" else chosen
            view.update(render_picker(p, tz, today), refresh=True)


def _redraw(frame: Frames, following: _Following, console: Console, interval: float) -> None:
    from rich.live import Live

    def draw() -> Panel:
        return render(frame(following.session, following.session is not None))

    try:
        with Live(draw(), console=console, auto_refresh=False) as view:
            while True:
                time.sleep(interval)
                view.update(draw(), refresh=True)
    except KeyboardInterrupt:
        pass  # quitting the view is its normal end


def _interactive(frame: Frames, recent: Recent, following: _Following, console: Console, interval: float,
                 k: Any, pick: bool) -> None:
    from rich.live import Live

    current = frame(following.session, following.session is not None)
    picker: Picker | None = None
    if pick:
        picker = _open_picker(recent, following)
    with Live(console=console, auto_refresh=False) as view:
        due = 0.0
        while True:
            if picker is not None:
                view.update(render_picker(picker, current.tz, current.today), refresh=True)
            elif time.monotonic() >= due:
                current = frame(following.session, following.session is not None)
                view.update(render(current, hints=True), refresh=True)
                due = time.monotonic() + interval
            for key in k.read(None if picker is not None else max(0.0, due - time.monotonic())):
                if picker is None:
                    if key == "q":
                        return
                    if key in ("s", "p"):
                        picker = _open_picker(recent, following)
                    elif key == "n":
                        following.session, due = None, 0.0
                    continue
                picker, done, chosen = pick_key(picker, key)
                if done:
                    if chosen != "":
                        following.session = chosen
                    picker, due = None, 0.0
                    break


def _open_picker(recent: Recent, following: _Following) -> Picker:
    sessions = tuple(recent())
    rows = [s.id for s in sessions]
    return Picker(sessions, rows.index(following.session) + 1 if following.session in rows else 0)


def now_ms() -> int:
    return int(time.time() * 1000)
