"""What a report selects: a window of whole days in a time zone, and providers, models, projects,
agents or sessions. The same filters apply to the index's totals (`index.reader`) and to records
(`message_filter`), by the same rules:

- a message counts when its creation time is in the window and it matches every filter;
- providers, models and agents match case-insensitively; a model matches by its ID or as
  provider/ID; a project matches when its path contains the text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ocsight.errors import EXIT_USAGE, OcsightError
from ocsight.model import Message


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


def resolve_timezone(name: str | None) -> dt.tzinfo | None:
    """An IANA zone, or None for the machine's local time."""
    if not name or name == "local":
        return None
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except Exception:  # noqa: BLE001 - ZoneInfoNotFoundError, ValueError for odd keys
        raise OcsightError(f"unknown time zone {name!r} (use an IANA name such as Europe/Paris)", EXIT_USAGE) from None


def parse_date(text: str, flag: str) -> dt.date:
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            pass
    raise OcsightError(f"{flag}: expected a date like 2026-11-24, got {text!r}", EXIT_USAGE)


def _midnight_ms(day: dt.date, tz: dt.tzinfo | None) -> int:
    naive = dt.datetime(day.year, day.month, day.day)
    aware = naive.replace(tzinfo=tz) if tz else naive.astimezone()
    return int(aware.timestamp() * 1000)


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
    """Filters from CLI values; dates are whole days in `timezone` (default: local), `until` inclusive."""
    tz = resolve_timezone(timezone)
    since_ms: int | None = None
    until_ms: int | None = None
    if days is not None:
        if days < 1:
            raise OcsightError("--days must be at least 1", EXIT_USAGE)
        now = today or (dt.datetime.now(tz) if tz else dt.datetime.now()).date()
        since_ms = _midnight_ms(now - dt.timedelta(days=days - 1), tz)
    if since:
        d = parse_date(since, "--since")
        since_ms = max(since_ms or 0, _midnight_ms(d, tz))
    if until:
        d = parse_date(until, "--until")
        until_ms = _midnight_ms(d + dt.timedelta(days=1), tz)
    if since_ms is not None and until_ms is not None and until_ms <= since_ms:
        raise OcsightError("--until is before --since: the window is empty", EXIT_USAGE)

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
    providers = {v.lower() for v in f.providers}
    agents = {v.lower() for v in f.agents}
    models = {v.lower() for v in f.models}

    def matches(m: Message, project: str) -> bool:
        t = m.time_created or 0
        if f.since_ms is not None and t < f.since_ms:
            return False
        if f.until_ms is not None and t >= f.until_ms:
            return False
        if providers and m.provider.lower() not in providers:
            return False
        if agents and m.agent.lower() not in agents:
            return False
        if models and m.model.lower() not in models and f"{m.provider}/{m.model}".lower() not in models:
            return False
        if f.sessions is not None and m.session_id not in f.sessions:
            return False
        return not f.projects or any(p in project for p in f.projects)

    return matches
