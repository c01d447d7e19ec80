"""What a report selects: a window of whole days in a time zone, and providers, models, projects,
agents or sessions. The same filters apply to the index's totals (`index.reader`) and to records
(`message_filter`), by the same rules:

- a message counts when its creation time is in the window and it matches every filter;
- every name matches case-insensitively (ASCII letters, as SQLite's `lower()` folds them, so the
  index's SQL and `message_filter` agree); a model matches by its ID or as provider/ID; a project
  matches when its path contains the text;
- a name the store has never used (in all its history, not only the window) is a usage error
  (`check_known`): a typo would otherwise answer zero.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ocsight.errors import EXIT_USAGE, OcsightError
from ocsight.model import Message

NAMED = ("provider", "model", "project", "agent")  # the filters that name something in the store
KNOWN_SHOWN = 10  # known values an unknown-name error lists
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(text: str) -> str:
    """`text` for case-insensitive comparison, exactly as SQLite's `lower()` folds it (ASCII only)."""
    return text.translate(_ASCII_LOWER)


@dataclass(frozen=True)
class Filters:
    since_ms: int | None = None
    until_ms: int | None = None  # exclusive
    providers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    projects: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    sessions: frozenset[str] | None = None  # only these sessions (None: every session)
    description: dict[str, Any] = field(default_factory=dict, compare=False)


def resolve_timezone(name: str | None, source: str = "") -> dt.tzinfo | None:
    """An IANA zone, or None for the machine's local time; `source` (a flag, a variable or a file)
    starts the error message."""
    if not name or name.lower() == "local":
        return None
    from zoneinfo import ZoneInfo

    return ZoneInfo(zone_name(name, source))


def zone_name(name: str, source: str = "") -> str:
    """The IANA name `name` spells, in any case (`utc`, `europe/paris`); an unknown zone is a usage error."""
    from zoneinfo import ZoneInfo, available_timezones

    try:
        ZoneInfo(name)
        return name
    except Exception:  # noqa: BLE001 - ZoneInfoNotFoundError, ValueError for odd keys
        pass
    # zone keys are file names, case-sensitive on most systems: look the spelling up
    by_folded = {k.lower(): k for k in available_timezones()}
    if name.lower() in by_folded:
        return by_folded[name.lower()]
    prefix = f"{source}: " if source else ""
    raise OcsightError(f"{prefix}unknown time zone {name!r} (use an IANA name such as Europe/Paris)", EXIT_USAGE)


def local_zone_name() -> str:
    """The machine's time zone by its IANA name where the system says it ($TZ, /etc/localtime), else
    its abbreviation."""
    import time
    from pathlib import Path

    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        return tz
    try:
        target = str(Path("/etc/localtime").resolve())
    except OSError:
        target = ""
    if "/zoneinfo/" in target:
        return target.split("/zoneinfo/", 1)[1]
    return time.tzname[0]


def parse_date(text: str, flag: str) -> dt.date:
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            pass
    raise OcsightError(f"{flag}: expected a date like 2026-11-24, got {text!r}", EXIT_USAGE)


def _midnight_ms(day: dt.date, tz: dt.tzinfo | None) -> int | None:
    """Midnight starting `day` in `tz`; None where that instant is outside what the platform's time
    functions hold (the first and last days datetime knows): no bound, as the window's clamp."""
    try:
        naive = dt.datetime(day.year, day.month, day.day)
        aware = naive.replace(tzinfo=tz) if tz else naive.astimezone()
        return int(aware.timestamp() * 1000)
    except (OverflowError, OSError, ValueError):
        return None


def _days_before(day: dt.date, days: int) -> dt.date | None:
    """`day` less `days` days; None before the year 1 (a window that long holds all history)."""
    try:
        return day - dt.timedelta(days=days)
    except OverflowError:
        return None


def _day_after(day: dt.date) -> dt.date | None:
    try:
        return day + dt.timedelta(days=1)
    except OverflowError:
        return None


def make_filters(
    days: int | None = None,
    since: str | None = None,
    until: str | None = None,
    timezone: str | None = None,
    providers: tuple[str, ...] = (),
    models: tuple[str, ...] = (),
    projects: tuple[str, ...] = (),
    agents: tuple[str, ...] = (),
    today: dt.date | None = None,
) -> Filters:
    """Filters from CLI values; dates are whole days in `timezone` (default: local), `until` inclusive.

    A window reaching past the dates the platform can hold is open on that side: `--days 99999999`
    and `--since 0001-01-01` mean all history, `--until 9999-12-31` no end."""
    tz = resolve_timezone(timezone, "--timezone")
    since_ms: int | None = None
    until_ms: int | None = None
    since_day: dt.date | None = None
    if days is not None:
        if days < 1:
            raise OcsightError("--days must be at least 1", EXIT_USAGE)
        now = today or (dt.datetime.now(tz) if tz else dt.datetime.now()).date()
        since_day = _days_before(now, days - 1)
    if since:
        d = parse_date(since, "--since")
        since_day = d if since_day is None else max(since_day, d)
    if since_day is not None:
        since_ms = _midnight_ms(since_day, tz)
    if until:
        d = parse_date(until, "--until")
        if since_day is not None and d < since_day:
            first = "--since" if since and since_day == parse_date(since, "--since") else f"--days {days}"
            raise OcsightError(f"--until is before {first} ({d.isoformat()} < {since_day.isoformat()}): "
                               "the window is empty", EXIT_USAGE)
        after = _day_after(d)
        until_ms = None if after is None else _midnight_ms(after, tz)

    def split(values: Iterable[str]) -> tuple[str, ...]:
        return tuple(v.strip() for value in values for v in value.split(",") if v.strip())

    desc: dict[str, Any] = {
        "days": days, "since": since, "until": until, "timezone": timezone or "local",
        "provider": list(split(providers)), "model": list(split(models)),
        "project": list(split(projects)), "agent": list(split(agents)),
    }
    return Filters(since_ms, until_ms, split(providers), split(models), split(projects), split(agents),
                   description=desc)


def message_filter(f: Filters) -> Callable[[Message, str], bool]:
    """The filters as a test of one message and its project path, for consumers of records."""
    providers = {fold(v) for v in f.providers}
    agents = {fold(v) for v in f.agents}
    models = {fold(v) for v in f.models}
    projects = [fold(v) for v in f.projects]

    def matches(m: Message, project: str) -> bool:
        t = m.time_created or 0
        if f.since_ms is not None and t < f.since_ms:
            return False
        if f.until_ms is not None and t >= f.until_ms:
            return False
        if providers and fold(m.provider) not in providers:
            return False
        if agents and fold(m.agent) not in agents:
            return False
        if models and fold(m.model) not in models and fold(f"{m.provider}/{m.model}") not in models:
            return False
        if f.sessions is not None and m.session_id not in f.sessions:
            return False
        return not projects or any(p in fold(project) for p in projects)

    return matches


def unknown_names(f: Filters, known: Callable[[str], list[str]]) -> tuple[str, str] | None:
    """The first name in `f` the store has never used, as (filter, message), or None when every one
    is known. `known(filter)` lists the store's values of that filter over all its history (models
    both as provider/ID and as bare IDs), as the index's reader does."""
    for dim, values in (("provider", f.providers), ("model", f.models), ("project", f.projects),
                        ("agent", f.agents)):
        if not values:
            continue
        names = known(dim)
        folded = [fold(k) for k in names]
        for v in values:
            found = any(fold(v) in k for k in folded) if dim == "project" else fold(v) in folded
            if not found:
                shown = ", ".join(names[:KNOWN_SHOWN]) + (", ..." if len(names) > KNOWN_SHOWN else "")
                what = "no project path contains" if dim == "project" else f"unknown {dim}"
                return dim, f"{what} {v!r} (known: {shown or 'none'})"
    return None


def describe(d: dict[str, Any], zone: bool = False) -> str:
    """A window and filters (a `Filters.description`) in a few words, for a report's header:
    "last 20 days · provider mockai", "2026-11-01 to 2026-11-30 (Europe/Paris)", "all history".
    With `zone`, the time zone days follow is said even for all history or the local zone (an
    answer read by a model, which cannot see the user's clock)."""
    days, since, until = d.get("days"), d.get("since"), d.get("until")
    if days:
        when = "today" if days == 1 else f"last {days:,} days"
        if since:
            when += f" from {since}"
        if until:
            when += f" up to {until}"
    elif since and until:
        when = f"{since} to {until}"
    elif since:
        when = f"since {since}"
    elif until:
        when = f"up to {until}"
    else:
        when = "all history"
    tz = d.get("timezone") or "local"
    if zone or (tz != "local" and (days or since or until)):
        when += f" ({tz})"
    return " · ".join([when, *(f"{k} {', '.join(d[k])}" for k in NAMED if d.get(k))])


def no_usage(d: dict[str, Any]) -> str:
    """The line a report prints instead of empty tables: "No usage: last 7 days · provider mockai."."""
    return f"No usage: {describe(d)}."
