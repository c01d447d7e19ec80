"""Filters: days and dates in a time zone, provider, model, project and agent."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import storegen
from conftest import stats, write_store


def _ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.fixture
def timed_store(tmp_path: Path) -> Path:
    """One assistant message of 1 input token at each instant below (UTC), tagged by its token count."""
    b = storegen.Builder()
    s = b.session(b.project())
    for n, iso in enumerate([
        "2026-11-23T22:59:59.999Z",  # Paris: 23:59:59.999 on the 23rd
        "2026-11-23T23:00:00.000Z",  # Paris: midnight, the 24th
        "2026-11-23T18:14:59.999Z",  # Kathmandu (+05:45): 23:59:59.999 on the 23rd
        "2026-11-23T18:15:00.000Z",  # Kathmandu: midnight, the 24th
        "2026-11-24T03:29:59.999Z",  # St John's (-03:30): 23:59:59.999 on the 23rd
        "2026-11-24T03:30:00.000Z",  # St John's: midnight, the 24th
    ]):
        b.assistant(s, _ms(iso), storegen.tokens(10**n, total=10**n))
    return write_store(b.plan, tmp_path / "timed", "db")


def _inputs(doc: dict) -> int:
    return doc["totals"]["tokens"]["input"]


@pytest.mark.parametrize(
    ("zone", "on_or_after_24th"),
    [
        ("UTC", 10**4 + 10**5),
        ("Europe/Paris", 10**1 + 10**4 + 10**5),
        ("Asia/Kathmandu", 10**0 + 10**1 + 10**3 + 10**4 + 10**5),
        ("America/St_Johns", 10**5),
    ],
)
def test_since_starts_at_midnight_in_the_chosen_time_zone(cli, timed_store, zone, on_or_after_24th):
    doc = stats(cli, "--since", "2026-11-24", "--timezone", zone, "--data-dir", str(timed_store))
    assert _inputs(doc) == on_or_after_24th


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "Asia/Kathmandu", "America/St_Johns"])
def test_until_is_the_complement_of_the_next_days_since(cli, timed_store, zone):
    before = _inputs(stats(cli, "--until", "2026-11-23", "-z", zone, "--data-dir", str(timed_store)))
    after = _inputs(stats(cli, "--since", "2026-11-24", "-z", zone, "--data-dir", str(timed_store)))
    assert before + after == sum(10**n for n in range(6))
    assert before and after


def test_local_time_zone_is_the_default(cli, timed_store, monkeypatch):
    import time

    monkeypatch.setenv("TZ", "Asia/Kathmandu")
    time.tzset()
    doc = stats(cli, "--since", "2026-11-24", "--data-dir", str(timed_store))
    assert _inputs(doc) == 10**0 + 10**1 + 10**3 + 10**4 + 10**5
    assert doc["filters"]["timezone"] == "local"


def test_days_counts_today_as_the_first_day(cli, tmp_path: Path):
    now = dt.datetime.now(dt.timezone.utc)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    b = storegen.Builder()
    s = b.session(b.project())
    b.assistant(s, int((midnight + dt.timedelta(minutes=1)).timestamp() * 1000), storegen.tokens(1, total=1))
    b.assistant(s, int((midnight - dt.timedelta(minutes=1)).timestamp() * 1000), storegen.tokens(10, total=10))
    b.assistant(s, int((midnight - dt.timedelta(days=6, minutes=1)).timestamp() * 1000), storegen.tokens(100, total=100))
    root = write_store(b.plan, tmp_path / "d", "db")
    assert _inputs(stats(cli, "--days", "1", "-z", "UTC", "--data-dir", str(root))) == 1
    assert _inputs(stats(cli, "--days", "2", "-z", "UTC", "--data-dir", str(root))) == 11
    assert _inputs(stats(cli, "--days", "7", "-z", "UTC", "--data-dir", str(root))) == 11
    assert _inputs(stats(cli, "--days", "8", "-z", "UTC", "--data-dir", str(root))) == 111


@pytest.fixture
def mixed_store(tmp_path: Path) -> Path:
    b = storegen.Builder()
    app, lib = b.project("/home/dev/app"), b.project("/home/dev/lib")
    s1, s2 = b.session(app), b.session(lib)
    b.assistant(s1, storegen.BASE_MS, storegen.tokens(1, total=1), provider="anthropic", model="claude-sonnet-4-5")
    b.assistant(s1, storegen.BASE_MS + 1, storegen.tokens(10, total=10), provider="openai", model="gpt-5", agent="plan")
    b.assistant(s2, storegen.BASE_MS + 2, storegen.tokens(100, total=100), provider="openai", model="gpt-5-mini")
    return write_store(b.plan, tmp_path / "mixed", "db")


@pytest.mark.parametrize(
    ("args", "inputs"),
    [
        (("--provider", "openai"), 110),
        (("--provider", "OpenAI"), 110),
        (("--provider", "anthropic,openai"), 111),
        (("--provider", "anthropic", "--provider", "openai"), 111),
        (("--model", "gpt-5"), 10),
        (("--model", "openai/gpt-5-mini"), 100),
        (("--project", "lib"), 100),
        (("--project", "/home/dev/app"), 11),
        (("--agent", "plan"), 10),
        (("--provider", "openai", "--project", "app"), 10),
        (("--provider", "anthropic", "--agent", "plan"), 0),
    ],
)
def test_filters_select_matching_messages(cli, mixed_store, args, inputs):
    assert _inputs(stats(cli, *args, "--data-dir", str(mixed_store))) == inputs


def test_tool_calls_follow_the_project_and_provider_filters(cli, tmp_path: Path):
    b = storegen.Builder()
    app, lib = b.session(b.project("/home/dev/app")), b.session(b.project("/home/dev/lib"))
    b.tool(b.assistant(app, storegen.BASE_MS, storegen.tokens(1, total=1), provider="openai"), "bash")
    b.tool(b.assistant(lib, storegen.BASE_MS + 1, storegen.tokens(1, total=1)), "read", status="error")
    root = write_store(b.plan, tmp_path / "t", "db")

    def tools(*args: str) -> list:
        return [(t["tool"], t["calls"], t["errors"]) for t in stats(cli, *args, "--data-dir", str(root))["by_tool"]]

    assert tools("--project", "lib") == [("read", 1, 1)]
    assert tools("--project", "app") == [("bash", 1, 0)]
    assert tools("--provider", "openai") == [("bash", 1, 0)]
    assert tools() == [("bash", 1, 0), ("read", 1, 1)]


def test_an_empty_selection_gives_zeros_not_an_error(cli, mixed_store):
    doc = stats(cli, "--provider", "anthropic", "--agent", "plan", "--data-dir", str(mixed_store))
    assert doc["totals"]["sessions"] == 0
    assert doc["totals"]["cost"] == {"usd": 0.0, "stored_usd": 0.0, "estimated_usd": 0.0, "unpriced_messages": 0}
    assert doc["by_model"] == [] and doc["by_tool"] == []


@pytest.mark.parametrize(
    "args",
    [
        ("--days", "0"),
        ("--days", "x"),
        ("--since", "yesterday"),
        ("--until", "2026-13-01"),
        ("--since", "2026-11-24", "--until", "2026-11-23"),
        ("--timezone", "Mars/Olympus_Mons"),
        ("--cost-mode", "cheapest"),
        ("--no-such-flag",),
    ],
)
def test_bad_flags_are_a_one_line_error_with_exit_code_2(cli, mixed_store, args):
    r = cli("stats", "--json", *args, "--data-dir", str(mixed_store))
    assert r.code == 2, r
    assert r.out == ""
    assert r.err.startswith("ocsight: error: ") and r.err.count("\n") == 1, r.err


@pytest.mark.parametrize(("args", "names"), [
    (("--days", "x"), "'--days'"),
    (("--cost-mode", "cheapest"), "'--cost-mode'"),
    (("--no-such-flag",), "'--no-such-flag'"),
    (("--limit", "0"), "'--limit'"),
    (("-z",), "'-z'"),
])
def test_a_usage_error_names_the_option_and_points_at_the_commands_help(cli, mixed_store, args, names):
    r = cli("session", "--data-dir", str(mixed_store), *args)
    assert r.code == 2
    assert r.err.startswith("ocsight: error: ") and names in r.err and "'ocsight session --help'" in r.err, r.err


def test_ocsight_alone_shows_the_help(cli):
    r = cli()
    assert "Commands:" in r.out + r.err and "ocsight: error" not in r.err


# -- names the store does not know -------------------------------------------------------------------

@pytest.mark.parametrize(("args", "says"), [
    (("--provider", "nobody"), "--provider: unknown provider 'nobody' (known: anthropic, openai)"),
    (("--model", "gpt-6"), "--model: unknown model 'gpt-6' (known: anthropic/claude-sonnet-4-5, openai/gpt-5, "),
    (("--agent", "nobody"), "--agent: unknown agent 'nobody' (known: build, plan)"),
    (("--project", "nonexistent"), "--project: no project path contains 'nonexistent' "
                                   "(known: /home/dev/app, /home/dev/lib)"),
    (("--provider", "openai,nobody"), "unknown provider 'nobody'"),
])
def test_a_name_the_store_never_used_is_a_usage_error_listing_the_known_ones(cli, mixed_store, args, says):
    r = cli("stats", "--json", *args, "--data-dir", str(mixed_store))
    assert (r.code, r.out) == (2, "")
    assert says in r.err and r.err.count("\n") == 1, r.err


@pytest.mark.parametrize("command", [
    ("analyze",), ("stats",), ("daily",), ("weekly",), ("monthly",), ("session",),
    ("export", "--level", "message"), ("export", "--level", "day"),
])
def test_every_command_that_filters_rejects_an_unknown_name(cli, mixed_store, command):
    r = cli(*command, "--provider", "nobody", "--data-dir", str(mixed_store))
    assert r.code == 2 and "unknown provider 'nobody'" in r.err, r.err


@pytest.mark.parametrize("flag", [("--provider", "mock"), ("--days", "3"), ("--project", "lib")])
def test_live_refuses_a_window_or_filter_it_would_not_apply(cli, mixed_store, flag):
    r = cli("live", "--once", *flag, "--data-dir", str(mixed_store))
    assert r.code == 2 and flag[0] in r.err, r.err


def test_a_known_name_without_usage_in_the_window_gives_zeros(cli, mixed_store):
    day = dt.datetime.fromtimestamp(storegen.BASE_MS / 1000, dt.timezone.utc).date()
    doc = stats(cli, "--provider", "anthropic", "--until", (day - dt.timedelta(days=1)).isoformat(), "-z", "UTC",
                "--data-dir", str(mixed_store))
    assert doc["totals"]["messages"]["assistant"] == 0


@pytest.mark.parametrize(("args", "inputs"), [
    (("--provider", "OPENAI"), 110),
    (("--model", "OpenAI/GPT-5"), 10),
    (("--agent", "PLAN"), 10),
    (("--project", "LIB"), 100),
    (("--project", "/HOME/Dev/App"), 11),
])
def test_every_filter_matches_in_any_case(cli, mixed_store, args, inputs):
    assert _inputs(stats(cli, *args, "--data-dir", str(mixed_store))) == inputs


def test_message_records_and_totals_select_the_same_project_in_any_case(cli, mixed_store):
    import json

    r = cli("export", "--format", "json", "--level", "message", "--project", "LIB", "--data-dir", str(mixed_store))
    assert r.code == 0, r.err
    rows = json.loads(r.out)["rows"]
    assert sum(row["tokens_input"] for row in rows) == 100


# -- windows at the edges of the calendar ----------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("--days", "99999999"),
    ("--days", str(10**30)),
    ("--since", "0001-01-01"),
    ("--until", "9999-12-31"),
    ("--since", "0001-01-01", "--until", "9999-12-31"),
    ("--since", "0001-01-01", "--until", "9999-12-31", "-z", "Pacific/Kiritimati"),
    ("--since", "0001-01-01", "--until", "9999-12-31", "-z", "America/Adak"),
])
def test_a_window_past_the_calendars_ends_holds_all_history(cli, mixed_store, args):
    assert _inputs(stats(cli, *args, "--data-dir", str(mixed_store))) == 111


def test_until_before_the_first_of_the_last_days_is_a_usage_error(cli, mixed_store):
    r = cli("stats", "--days", "3", "--until", "2001-01-01", "--data-dir", str(mixed_store))
    assert r.code == 2 and "--until is before --days 3" in r.err and r.err.count("\n") == 1, r.err


@pytest.mark.parametrize(("given", "name"), [("utc", "UTC"), ("europe/paris", "Europe/Paris"),
                                             ("AMERICA/ST_JOHNS", "America/St_Johns")])
def test_time_zone_names_are_read_in_any_case(cli, timed_store, given, name):
    spelled = stats(cli, "--since", "2026-11-24", "-z", given, "--data-dir", str(timed_store))
    canonical = stats(cli, "--since", "2026-11-24", "-z", name, "--data-dir", str(timed_store))
    assert _inputs(spelled) == _inputs(canonical)
    assert spelled["filters"]["timezone"] == name


# -- the window and filters are shown --------------------------------------------------------------

@pytest.mark.parametrize("command", ["analyze", "stats", "daily", "weekly", "monthly", "session"])
def test_reports_show_their_window_and_filters(cli, mixed_store, command):
    r = cli(command, "--days", "100000", "--provider", "openai", "--data-dir", str(mixed_store))
    assert r.code == 0, r.err
    assert "last 100,000 days · provider openai" in r.out


@pytest.mark.parametrize("command", ["analyze", "stats", "daily", "session"])
def test_an_unfiltered_report_says_it_covers_all_history(cli, mixed_store, command):
    assert "all history" in cli(command, "--data-dir", str(mixed_store)).out


def test_export_to_a_file_says_what_it_selected(cli, mixed_store, tmp_path: Path):
    r = cli("export", "--project", "lib", "-o", str(tmp_path / "out.csv"), "--data-dir", str(mixed_store))
    assert r.code == 0 and "all history · project lib" in r.err, r.err


def test_a_markdown_export_says_what_it_covers_in_words(cli, mixed_store):
    r = cli("export", "--format", "markdown", "--days", "30", "--project", "lib", "--data-dir", str(mixed_store))
    assert r.code == 0, r.err
    assert "- Covers: last 30 days · project lib" in r.out.splitlines(), r.out


@pytest.mark.parametrize("command", ["analyze", "stats", "daily", "weekly", "monthly", "session"])
def test_a_window_without_usage_is_one_line_instead_of_empty_tables(cli, mixed_store, command):
    r = cli(command, "--until", "2001-01-01", "--provider", "openai", "--data-dir", str(mixed_store))
    assert r.code == 0, r.err
    assert r.out.strip().splitlines()[-1] == "No usage: up to 2001-01-01 · provider openai."
    assert not any(box in r.out for box in "┏│━"), r.out
