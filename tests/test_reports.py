"""The reports users reach for: daily / weekly / monthly, sessions, exports, live view, settings."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from conftest import stats
from corpus import raw_store, store_dir
from ocsight import export as ex
from ocsight import paths

CORPUS = "opencode-1.18"
GOLDEN = Path(__file__).parent / "fixtures" / "golden"
TOKEN_KEYS = ("input", "output", "reasoning", "cache_read", "cache_write", "total")


def data(*args: str) -> tuple[str, ...]:
    return ("--data-dir", str(store_dir(CORPUS)), *args)


def run_json(cli, *args: str) -> dict:
    r = cli(*args, "--json")
    assert r.code == 0, r.err
    return json.loads(r.out)


def days_of_messages(tz: str) -> set[str]:
    raw = raw_store(store_dir(CORPUS))
    return {dt.datetime.fromtimestamp(m["time"]["created"] / 1000, ZoneInfo(tz)).date().isoformat()
            for m in raw.assistant()}


# -- time reports -----------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["daily", "weekly", "monthly"])
def test_periods_add_up_to_the_totals(cli, command: str):
    totals = stats(cli, *data())["totals"]
    periods = run_json(cli, command, *data())["periods"]
    for k in TOKEN_KEYS:
        assert sum(p["tokens"][k] for p in periods) == totals["tokens"][k]
    assert sum(p["messages"] for p in periods) == totals["messages"]["assistant"]
    assert sum(p["cost"]["usd"] for p in periods) == pytest.approx(totals["cost"]["usd"], abs=1e-9)


def test_breakdown_splits_each_period_by_model(cli):
    for period in run_json(cli, "daily", *data("--breakdown"))["periods"]:
        assert period["models"]
        for k in TOKEN_KEYS:
            assert sum(m["tokens"][k] for m in period["models"]) == period["tokens"][k]
        assert sum(m["messages"] for m in period["models"]) == period["messages"]


@pytest.mark.parametrize("tz", ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"])
def test_days_follow_the_time_zone(cli, tz: str):
    days = {p["period"] for p in run_json(cli, "daily", *data("-z", tz))["periods"]}
    assert days == days_of_messages(tz)


def test_the_same_moment_falls_on_different_days_in_distant_zones(cli):
    east = {p["period"] for p in run_json(cli, "daily", *data("-z", "Pacific/Kiritimati"))["periods"]}
    west = {p["period"] for p in run_json(cli, "daily", *data("-z", "Pacific/Pago_Pago"))["periods"]}
    assert east != west  # 25 hours apart: no moment has the same date in both


def test_since_is_a_midnight_in_the_chosen_zone(cli):
    (first,) = sorted(days_of_messages("Pacific/Kiritimati"))[:1]
    inside = run_json(cli, "daily", *data("-z", "Pacific/Kiritimati", "--since", first))["periods"]
    later = (dt.date.fromisoformat(first) + dt.timedelta(days=1)).isoformat()
    outside = run_json(cli, "daily", *data("-z", "Pacific/Kiritimati", "--since", later, "--until", later))
    assert inside and inside[0]["period"] == first
    assert all(p["period"] == later for p in outside["periods"])


def test_weeks_start_on_monday_and_months_are_calendar_months(cli):
    for p in run_json(cli, "weekly", *data("-z", "UTC"))["periods"]:
        assert dt.date.fromisoformat(p["period"]).weekday() == 0
    months = {p["period"] for p in run_json(cli, "monthly", *data("-z", "UTC"))["periods"]}
    assert months == {d[:7] for d in days_of_messages("UTC")}


def test_analyze_names_the_top_sessions_with_their_subagents(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")  # titles whole on one line
    r = cli("analyze", *data())
    assert "Top sessions" in r.out and "(+1 subagent)" in r.out


def test_period_tables_show_every_period(cli):
    r = cli("daily", *data("-z", "UTC"))
    assert r.code == 0 and "Daily usage" in r.out
    for day in days_of_messages("UTC"):
        assert day in r.out


USAGE = {"sessions", "messages", "tokens", "cost"}
SESSION = {"id", "parent_id", "title", "project", "version", "time_created", "models", "agents", "messages",
           "errors", "tool_calls", "tokens", "cost", "fork_copies", "children", "rollup"}


def test_report_json_has_the_documented_fields(cli):
    """The shapes the README documents under Commands."""
    periods = run_json(cli, "daily", *data("--breakdown"))
    assert set(periods) == {"period", "filters", "cost_mode", "periods"}
    for p in periods["periods"]:
        assert set(p) == USAGE | {"period", "models"}
        assert set(p["tokens"]) == set(TOKEN_KEYS)
        assert set(p["cost"]) == {"usd", "stored_usd", "estimated_usd", "unpriced_messages"}
        assert all(set(m) == USAGE | {"provider", "model"} for m in p["models"])
    sessions = run_json(cli, "session", *data())
    assert set(sessions) == {"filters", "cost_mode", "sessions", "total_sessions", "fork_copies_counted"}
    for n in _walk(sessions["sessions"]):
        assert set(n) == SESSION
        assert set(n["rollup"]) == {"sessions", "messages", "tokens", "cost"}
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert '"rows": [...]' in readme and "`rollup`" in readme and "`--breakdown`" in readme
    assert "`fork_copies`" in readme and "`fork_copies_counted`" in readme


# -- sessions ---------------------------------------------------------------------------------------

def _walk(nodes: list[dict]):
    for n in nodes:
        yield n
        yield from _walk(n["children"])


def test_sessions_nest_subagents_under_their_parent_with_costs_rolled_up(cli):
    doc = run_json(cli, "session", *data("--limit", "100"))
    nodes = list(_walk(doc["sessions"]))
    assert len(nodes) == stats(cli, *data())["totals"]["sessions"]
    parents = [n for n in nodes if n["children"]]
    assert parents
    for p in parents:
        own_and_children = p["cost"]["usd"] + sum(c["rollup"]["cost"]["usd"] for c in p["children"])
        assert p["rollup"]["cost"]["usd"] == pytest.approx(own_and_children)
        assert p["rollup"]["tokens"]["total"] == p["tokens"]["total"] + sum(
            c["rollup"]["tokens"]["total"] for c in p["children"])
        assert all(c["parent_id"] == p["id"] for c in p["children"])
    assert all(n["parent_id"] is None for n in doc["sessions"])


def test_one_session_by_id_shows_its_tree(cli):
    parent = next(n for n in _walk(run_json(cli, "session", *data())["sessions"]) if n["children"])
    doc = run_json(cli, "session", parent["id"], *data())
    assert [s["id"] for s in doc["sessions"]] == [parent["id"]]
    r = cli("session", parent["id"], *data())
    assert r.code == 0 and parent["children"][0]["id"] in r.out


def test_an_unknown_session_is_a_one_line_error(cli):
    r = cli("session", "ses_nope", *data())
    assert r.code == 1 and r.err.count("\n") == 1 and "ses_nope" in r.err


def test_an_unknown_session_without_filters_is_not_in_opencodes_data(cli):
    r = cli("session", "ses_nope", *data())
    assert r.code == 1 and r.err == "ocsight: error: no session 'ses_nope' in OpenCode's data\n"


def test_an_unknown_session_with_filters_names_the_window_it_was_looked_for_in(cli):
    r = cli("session", "ses_nope", *data("--days", "3", "--provider", "mock"))
    assert r.code == 1
    assert r.err == "ocsight: error: no session 'ses_nope' with usage in last 3 days · provider mock\n"


def test_session_limit_shows_the_newest(cli):
    doc = run_json(cli, "session", *data("--limit", "2"))
    assert len(doc["sessions"]) == 2 and doc["total_sessions"] > 2
    times = [s["time_created"] for s in doc["sessions"]]
    assert times == sorted(times, reverse=True)


# -- export -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("level", ex.LEVELS)
def test_csv_has_a_header_and_one_row_per_record_that_sum_to_the_totals(cli, level: str):
    r = cli("export", "--format", "csv", "--level", level, *data())
    assert r.code == 0, r.err
    rows = list(csv.DictReader(io.StringIO(r.out)))
    assert list(rows[0]) == ex.FIELDS[level]
    totals = stats(cli, *data())["totals"]
    for k in TOKEN_KEYS:
        assert sum(int(row[f"tokens_{k}"]) for row in rows) == totals["tokens"][k]
    # an unpriced message's cost is unknown: empty, and counted
    assert sum(float(row["cost_usd"] or 0) for row in rows) == pytest.approx(totals["cost"]["usd"], abs=1e-9)
    unpriced = sum(row["cost_usd"] == "" for row in rows) if level == "message" else sum(
        int(row["unpriced_messages"]) for row in rows)
    assert unpriced == totals["cost"]["unpriced_messages"]
    expected_rows = {
        "message": totals["messages"]["user"] + totals["messages"]["assistant"],
        "session": totals["sessions"],
        "model": len(stats(cli, *data())["by_model"]),
        "day": len(run_json(cli, "daily", *data())["periods"]),
    }[level]
    assert len(rows) == expected_rows


@pytest.mark.parametrize("level", ex.LEVELS)
def test_json_export_carries_the_csv_fields(cli, level: str):
    doc = json.loads(cli("export", "--format", "json", "--level", level, *data()).out)
    assert doc["level"] == level and doc["rows"]
    for row in doc["rows"]:
        assert list(row) == ex.FIELDS[level] or set(ex.FIELDS[level]) <= set(row)
    csv_rows = list(csv.DictReader(io.StringIO(cli("export", "--format", "csv", "--level", level, *data()).out)))
    assert [r["tokens_total"] for r in csv_rows] == [str(r["tokens_total"]) for r in doc["rows"]]


@pytest.mark.parametrize("level", ex.LEVELS)
def test_markdown_export_is_a_well_formed_table(cli, level: str):
    text = cli("export", "--format", "markdown", "--level", level, *data()).out
    assert text.startswith(f"# OpenCode usage by {level}")
    table = [ln for ln in text.splitlines() if ln.startswith("|")]
    header, rule, *body = table
    cells = lambda line: len(re.split(r"(?<!\\)\|", line)) - 2  # noqa: E731
    assert cells(header) == len(ex.FIELDS[level]) == cells(rule)
    assert re.fullmatch(r"\|(-{3,}:?\|)+", rule)
    assert body and all(cells(line) == cells(header) for line in body)


def test_export_writes_a_file_whole(cli, tmp_path: Path):
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "usage.csv"
    out.write_text("old contents")
    r = cli("export", "--level", "day", "--output", str(out), *data())
    assert r.code == 0 and "wrote" in r.err
    assert out.read_text().startswith("day,sessions,")
    assert [p.name for p in out.parent.iterdir()] == ["usage.csv"]  # no temporary file left


@pytest.mark.parametrize("name, starts", [("report.md", "# OpenCode usage"), ("report.markdown", "# OpenCode usage"),
                                          ("usage.json", "{"), ("usage.csv", "id,"), ("usage.txt", "id,")])
def test_export_without_a_format_takes_it_from_the_files_extension(cli, tmp_path: Path, name: str, starts: str):
    assert cli("export", "-o", str(tmp_path / name), *data()).code == 0
    assert (tmp_path / name).read_text().startswith(starts)


def test_an_explicit_export_format_wins_over_the_files_extension(cli, tmp_path: Path):
    assert cli("export", "--format", "csv", "-o", str(tmp_path / "usage.md"), *data()).code == 0
    assert (tmp_path / "usage.md").read_text().startswith("id,")


def test_a_failed_export_leaves_no_file(cli, tmp_path: Path):
    r = cli("export", "--output", str(tmp_path / "missing" / "usage.csv"), *data())
    assert r.code == 2 and "does not exist" in r.err
    out = tmp_path / "out"
    out.mkdir()
    r = cli("export", "--data-dir", str(tmp_path / "nowhere"), "--output", str(out / "x.csv"))
    assert r.code == 1 and list(out.iterdir()) == []


def test_message_export_follows_the_filters(cli):
    rows = list(csv.DictReader(io.StringIO(
        cli("export", "--level", "message", "--model", "mock/mock-small", *data()).out)))
    assert rows and {r["model"] for r in rows} == {"mock-small"}
    doc = stats(cli, *data("--model", "mock/mock-small"))
    assert sum(int(r["tokens_total"]) for r in rows) == doc["totals"]["tokens"]["total"]


# -- live -------------------------------------------------------------------------------------------

def test_live_draws_today_and_the_latest_session(cli, monkeypatch):
    raw = raw_store(store_dir(CORPUS))
    last = max(raw.assistant(), key=lambda m: m["time"]["created"])
    monkeypatch.setattr("time.time", lambda: last["time"]["created"] / 1000 + 60)
    monkeypatch.setenv("COLUMNS", "120")
    r = cli("live", "--once", *data("-z", "UTC"))
    assert r.code == 0, r.err
    assert "Today" in r.out and "Latest model calls" in r.out and "Latest tool calls" in r.out
    assert last["sessionID"] in r.out


# -- settings ---------------------------------------------------------------------------------------

def _config(tmp_path: Path, text: str) -> Path:
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "ocsight" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_config_shows_each_value_and_its_source(cli, tmp_path: Path, monkeypatch):
    path = _config(tmp_path, 'timezone = "Asia/Tokyo"\nsession_limit = 3\n')
    monkeypatch.setenv("OCSIGHT_COST_MODE", "calculate")
    doc = run_json(cli, "config")
    s = doc["settings"]
    assert (s["timezone"]["value"], s["timezone"]["source"]) == ("Asia/Tokyo", str(path))
    assert (s["cost_mode"]["value"], s["cost_mode"]["source"]) == ("calculate", "env OCSIGHT_COST_MODE")
    assert (s["cache"]["value"], s["cache"]["source"]) == (True, "default")


def test_settings_apply_to_commands_and_flags_override_them(cli, tmp_path: Path, monkeypatch):
    _config(tmp_path, "session_limit = 1\n")
    monkeypatch.setenv("OCSIGHT_COST_MODE", "calculate")
    assert len(run_json(cli, "session", *data())["sessions"]) == 1
    assert run_json(cli, "session", *data("--limit", "2"))["cost_mode"] == "calculate"
    assert stats(cli, *data("--cost-mode", "stored"))["pricing"]["cost_mode"] == "stored"


@pytest.mark.parametrize("setup", [
    {"env": {"OCSIGHT_COST_MODE": "cheap"}, "says": "OCSIGHT_COST_MODE"},
    {"env": {"OCSIGHT_LIVE_INTERVAL": "-1"}, "says": "OCSIGHT_LIVE_INTERVAL"},
    {"env": {"OCSIGHT_USER_NAME": ""}, "says": "OCSIGHT_USER_NAME"},
    {"file": "cost_mode = 3\n", "says": "cost_mode in"},
    {"file": "colour = false\n", "says": "unknown setting 'colour'"},
    {"file": "timezone = \n", "says": "bad config file"},
    {"env": {"OCSIGHT_TIMEZONE": "Mars/Olympus"}, "says": "OCSIGHT_TIMEZONE: unknown time zone 'Mars/Olympus'"},
    {"file": 'timezone = "Mars/Olympus"\n', "says": "timezone in "},
    {"env": {"OCSIGHT_DATA_DIRS": "[1, 2]"}, "says": "OCSIGHT_DATA_DIRS: expected directories separated by"},
    {"env": {"OCSIGHT_PROJECT_BUDGETS_MONTHLY_USD": "app=3"}, "says": "OCSIGHT_PROJECT_BUDGETS_MONTHLY_USD"},
])
def test_a_bad_setting_is_a_one_line_usage_error(cli, tmp_path: Path, monkeypatch, setup: dict):
    for k, v in setup.get("env", {}).items():
        monkeypatch.setenv(k, v)
    if "file" in setup:
        _config(tmp_path, setup["file"])
    r = cli("stats", "--json", *data())
    assert r.code == 2 and setup["says"] in r.err and r.err.count("\n") == 1


@pytest.mark.parametrize("separator", [",", os.pathsep])
def test_the_data_dirs_variable_takes_a_list_of_directories(cli, monkeypatch, separator):
    both = stats(cli, "--data-dir", str(store_dir(CORPUS)), "--data-dir", str(store_dir("opencode-1.1")))
    monkeypatch.setenv("OCSIGHT_DATA_DIRS", separator.join([str(store_dir(CORPUS)), str(store_dir("opencode-1.1"))]))
    assert stats(cli)["totals"] == both["totals"]


def test_the_time_zone_setting_is_read_in_any_case(cli, monkeypatch):
    monkeypatch.setenv("OCSIGHT_TIMEZONE", "asia/tokyo")
    assert stats(cli, *data())["filters"]["timezone"] == "Asia/Tokyo"


def test_config_shows_the_effective_time_zone_and_data_directories(cli, monkeypatch):
    monkeypatch.setenv("OPENCODE_DATA_DIR", f"/srv/a{os.pathsep}/srv/b")
    s = run_json(cli, "config")["settings"]
    assert s["timezone"]["value"] == "UTC"  # the test's machine zone (TZ=UTC)
    assert (s["data_dirs"]["value"], s["data_dirs"]["source"]) == (["/srv/a", "/srv/b"], "env OPENCODE_DATA_DIR")


def test_config_without_any_setting_names_opencodes_default_data_directory(cli):
    s = run_json(cli, "config")["settings"]
    assert s["data_dirs"]["value"] == [str(Path(os.environ["XDG_DATA_HOME"]) / "opencode")]


def test_config_prints_values_as_the_file_spells_them(cli, tmp_path: Path):
    _config(tmp_path, 'cost_mode = "stored"\ncache = false\n')
    lines = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in cli("config").out.splitlines()
             if line.count("│") == 4 and line.split("│")[1].strip()}
    assert (lines["cost_mode"], lines["cache"], lines["color"], lines["prices"]) == ("stored", "false", "true", "unset")
    assert lines["timezone"] == "UTC"


def test_config_shows_an_unset_setting_alike_whatever_its_kind(cli):
    lines = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in cli("config").out.splitlines()
             if line.count("│") == 4 and line.split("│")[1].strip()}
    assert lines["project_budgets_monthly_usd"] == lines["budget_monthly_usd"] == lines["prices"] == "unset"


def test_config_names_its_file_on_one_line_at_120_columns(cli, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "u"))
    config = tmp_path / "u" / "ocsight" / "config.toml"
    monkeypatch.setenv("COLUMNS", "120")
    line = f"Config file (absent): {config}"
    assert len(line) <= 120  # room for it, at a width where the table is narrower
    assert cli("config").out.splitlines()[0] == line


def test_config_wraps_long_values_instead_of_cutting_them(cli, monkeypatch, tmp_path: Path):
    long_dir = tmp_path / ("very-long-directory-name-" * 4) / "opencode-data-end"
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("OCSIGHT_DATA_DIRS", str(long_dir))
    out = cli("config").out
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80
    cells = "".join(line.split("│")[2].strip() for line in out.splitlines() if line.count("│") == 4)
    assert str(long_dir) in cells


# -- output -----------------------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.parametrize("way", ["flag", "NO_COLOR", "setting"])
def test_colours_can_be_turned_off(cli, monkeypatch, tmp_path: Path, way: str):
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert ANSI.search(cli("analyze", *data()).out)
    args = ["--no-color"] if way == "flag" else []
    if way == "NO_COLOR":
        monkeypatch.setenv("NO_COLOR", "1")
    if way == "setting":
        _config(tmp_path, "color = false\n")
    r = cli("analyze", *data(*args))
    assert r.code == 0 and not ANSI.search(r.out)


@pytest.mark.parametrize("args", [
    ["daily", "--days", "0"], ["export", "--format", "xml"], ["export", "--level", "hour"],
    ["weekly", "-z", "Mars/Olympus_Mons"], ["session", "--limit", "0"], ["live", "--interval", "0"],
    ["monthly", "--since", "yesterday"], ["daily", "--bogus"],
])
def test_bad_flags_are_usage_errors(cli, args: list[str]):
    r = cli(*args, *data())
    assert r.code == 2 and "Traceback" not in r.err


@pytest.mark.parametrize("command", ["analyze", "stats", "daily", "weekly", "monthly", "session", "export",
                                     "live", "config"])
def test_every_command_has_help_with_examples(cli, command: str):
    r = cli(command, "--help")
    assert r.code == 0 and "Examples:" in r.out


def test_analyze_output_matches_the_golden_file(cli, monkeypatch):
    """A picture of `analyze` at 100 columns; `OCSIGHT_UPDATE_GOLDEN=1` rewrites it after `make fixtures`."""
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("LINES", "50")
    r = cli("analyze", "--demo", "--no-color")
    assert r.code == 0
    text = r.out.replace(str(paths.DEMO_DIR), "<demo>")  # the demo store of the package under test
    golden = GOLDEN / "analyze-demo.txt"
    if os.environ.get("OCSIGHT_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_an_export_written_to_a_file_follows_the_users_umask(cli, tmp_path, umask: int, mode: int):
    old = os.umask(umask)
    try:
        r = cli("export", "--format", "markdown", "-o", str(tmp_path / "report.md"), *data())
    finally:
        os.umask(old)
    assert r.code == 0 and (tmp_path / "report.md").stat().st_mode & 0o777 == mode


def test_an_export_over_an_existing_file_keeps_its_mode(cli, tmp_path):
    target = tmp_path / "report.csv"
    target.write_text("old")
    target.chmod(0o640)
    assert cli("export", "--format", "csv", "-o", str(target), *data()).code == 0
    assert target.stat().st_mode & 0o777 == 0o640 and target.read_text() != "old"
