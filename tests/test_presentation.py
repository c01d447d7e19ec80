"""What a demanding user sees in a terminal: names readable at every width, unpriced cost shown as
unknown (never $0.00), counted words and thousands separators, and the demo store's own paths.

Terminal tests run the real command line at 80, 100, 120 and 160 columns (rich takes the width
from COLUMNS, as it does from a terminal) and read the tables' cells back from what was printed.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import sqlite3
from pathlib import Path

import pytest

import storegen
from conftest import stats, write_store
from ocsight import paths

WIDTHS = (80, 100, 120, 140, 160)  # 140: inside the range where the wide layout used to cut names
FULL_NAMES = 100  # from this width up every name is whole
MIN_TAIL = 12

# Long names as real setups have them: two projects with the same last directories, a Bedrock model ID.
PROJECTS = ["/home/dev/clients/northwind/services/billing-service-api",
            "/home/dev/clients/contoso/services/billing-service-api",
            "/srv/work/platform-engineering/infrastructure/terraform-modules"]
RENAMED = {("anthropic", "claude-sonnet-4-5"): ("amazon-bedrock-eu", "anthropic.claude-sonnet-4-5-20250929-v1:0"),
           ("openai", "gpt-5"): ("azure-openai-westeurope", "gpt-5-2025-08-07-deployment")}


def long_names_plan(seed: int = 7) -> storegen.Plan:
    """A generated store (with the unpriced acme/mystery-1) whose providers, models and projects have
    long names."""
    plan = storegen.plan_store(seed=seed, sessions=24, projects=3, days=40)
    for project, worktree in zip(plan.projects, PROJECTS):
        project["worktree"] = worktree
    by_id = {p["id"]: p["worktree"] for p in plan.projects}
    for s in plan.sessions:
        s["directory"] = by_id[s["projectID"]]
    for m in plan.messages:
        if m["role"] == "assistant":
            m["providerID"], m["modelID"] = RENAMED.get((m["providerID"], m["modelID"]),
                                                        (m["providerID"], m["modelID"]))
        else:
            ref = m["model"]
            ref["providerID"], ref["modelID"] = RENAMED.get((ref["providerID"], ref["modelID"]),
                                                            (ref["providerID"], ref["modelID"]))
    return plan


@pytest.fixture
def long_store(tmp_path: Path) -> Path:
    return write_store(long_names_plan(), tmp_path / "long", "db")


def cells(out: str, title: str, header: str) -> list[str]:
    """The cells of column `header` in the table titled `title`, a wrapped cell's lines joined."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    head = next(i for i in range(start, len(lines)) if lines[i].startswith("┃"))
    bounds = [i for i, ch in enumerate(lines[head]) if ch == "┃"]
    names = [lines[head][a + 1:b].strip() for a, b in itertools.pairwise(bounds)]
    col = names.index(header)
    a, b = bounds[col], bounds[col + 1]
    rows: list[str] = []
    for line in lines[head + 1:]:
        if line.startswith("└"):
            break
        if not line.startswith("│"):
            continue  # a rule between sections
        seps = [i for i, ch in enumerate(line) if ch == "│"]
        parts = [line[x + 1:y].strip() for x, y in itertools.pairwise(seps)]
        first_number = parts[-1]  # the last column (a number or cost) is never blank on a row's first line
        if first_number or not rows:
            rows.append(line[a + 1:b].strip())
        else:
            rows[-1] += line[a + 1:b].strip()
    return rows


def readable(shown: list[str], names: list[str], width: int, path: bool) -> None:
    """Every name readable: whole from FULL_NAMES columns up; below, a path may be a distinct tail of
    at least MIN_TAIL characters behind `…`, an ID must be whole (wrapped)."""
    for name in names:
        if width >= FULL_NAMES or not path:
            assert name in shown, f"{name!r} not whole at {width} columns: {shown}"
        else:
            tails = [c for c in shown if c == name or (c.startswith("…") and name.endswith(c[1:]))]
            assert tails, f"{name!r} has no tail at {width} columns: {shown}"
            assert all(len(t) - 1 >= MIN_TAIL or t == name for t in tails)
    if path:  # a tail tells its project from every other: it is the end of no other path
        for c in shown:
            assert [n for n in names if n == c or (c.startswith("…") and n.endswith(c[1:]))] != [] and len(
                [n for n in names if n == c or (c.startswith("…") and n.endswith(c[1:]))]) == 1, c


def fits(out: str, width: int) -> bool:
    """No table line is wider than the terminal (the header's data path may be: the terminal wraps it)."""
    return all(len(line) <= width for line in out.splitlines() if line[:1] in "┏┃┡│└")


def run_at(cli, monkeypatch, width: int, *args: str):
    monkeypatch.setenv("COLUMNS", str(width))
    r = cli(*args, "--no-color")
    assert r.code == 0, r.err
    return r


# -- names --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("width", WIDTHS)
def test_stats_shows_providers_models_and_projects_readably(cli, monkeypatch, long_store: Path, width: int):
    r = run_at(cli, monkeypatch, width, "stats", "--data-dir", str(long_store))
    doc = stats(cli, "--data-dir", str(long_store))
    readable(cells(r.out, "By provider", "Provider"), [p["provider"] for p in doc["by_provider"]], width, False)
    readable(cells(r.out, "By model", "Model"), [m["model"] for m in doc["by_model"]], width, False)
    readable(cells(r.out, "By model", "Provider"), sorted({m["provider"] for m in doc["by_model"]}), width, False)
    readable(cells(r.out, "By project", "Project"), PROJECTS, width, True)
    assert fits(r.out, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_analyze_shows_projects_readably_in_every_table(cli, monkeypatch, long_store: Path, width: int):
    r = run_at(cli, monkeypatch, width, "analyze", "--data-dir", str(long_store))
    readable(cells(r.out, "By project", "Project"), PROJECTS, width, True)
    top = cells(r.out, "Top sessions", "Project")
    distinct = list(dict.fromkeys(top))
    readable(distinct, [p for p in PROJECTS if any(c == p or p.endswith(c[1:]) for c in distinct)], width, True)
    assert fits(r.out, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_monthly_breakdown_shows_whole_model_names(cli, monkeypatch, long_store: Path, width: int):
    r = run_at(cli, monkeypatch, width, "monthly", "--breakdown", "--data-dir", str(long_store))
    doc = json.loads(cli("monthly", "--breakdown", "--json", "--data-dir", str(long_store)).out)
    names = sorted({f"{m['provider']}/{m['model']}" for p in doc["periods"] for m in p["models"]})
    readable(cells(r.out, "Monthly usage", "Model"), names, width, False)
    assert fits(r.out, width)


def test_piped_output_is_fitted_to_80_columns(monkeypatch, long_store: Path):
    from conftest import run_ocsight

    monkeypatch.delenv("COLUMNS", raising=False)
    r = run_ocsight("stats", "--data-dir", str(long_store))  # stdout is a pipe: rich assumes 80 columns
    assert r.code == 0, r.err
    assert fits(r.out, 80) and not fits(r.out, 79)
    readable(cells(r.out, "By project", "Project"), PROJECTS, 80, True)


@pytest.mark.parametrize("width", WIDTHS)
def test_the_session_tree_shows_projects_readably(cli, monkeypatch, long_store: Path, width: int):
    out = run_at(cli, monkeypatch, width, "session", "--limit", "100", "--data-dir", str(long_store)).out
    words = out.split()
    shown = sorted({w for w in words if w.startswith(("/", "…/"))})
    readable(shown, [p for p in PROJECTS if any(w == p or p.endswith(w[1:]) for w in shown)], width, True)
    assert len(shown) == len(PROJECTS)


def test_a_wide_terminal_shows_every_token_type_and_a_narrow_one_says_what_it_left_out(cli, monkeypatch,
                                                                                        long_store: Path):
    wide = run_at(cli, monkeypatch, 200, "stats", "--data-dir", str(long_store)).out
    assert all(h in wide for h in ("Reasoning", "Cache read", "Cache write", "Share"))
    narrow = run_at(cli, monkeypatch, 80, "stats", "--data-dir", str(long_store)).out
    assert "Cache write" not in narrow and re.search(r"widen to \d+ columns for: .*cache write", narrow)


# -- unpriced -----------------------------------------------------------------------------------------

def unpriced_plan() -> storegen.Plan:
    """One session of a priced model (with the cost OpenCode stored) and one of a model no price
    source knows (stored cost 0), in two projects, on two days."""
    b = storegen.Builder()
    paid = b.session(b.project("/home/dev/priced-app"), at=storegen.BASE_MS)
    b.assistant(paid, storegen.BASE_MS + 10, storegen.tokens(1_000, 100, total=1_100), cost=1.5)
    free = b.session(b.project("/home/dev/mystery-app"), at=storegen.BASE_MS + storegen.DAY_MS)
    for i in range(3):
        b.assistant(free, storegen.BASE_MS + storegen.DAY_MS + i, storegen.tokens(500, 50, total=550),
                    provider="acme", model="mystery-1")
    return b.plan


@pytest.fixture
def unpriced_store(tmp_path: Path) -> Path:
    return write_store(unpriced_plan(), tmp_path / "store-u", "db")


def acme_line(out: str) -> str:
    (line,) = [ln for ln in out.splitlines() if "mystery-1" in ln and "│" in ln]
    return line


@pytest.mark.parametrize("width", WIDTHS)
def test_an_unpriced_models_rows_show_an_unknown_cost(cli, monkeypatch, unpriced_store: Path, width: int):
    data = ("--data-dir", str(unpriced_store))
    for command in ("analyze", "stats"):
        out = run_at(cli, monkeypatch, width, command, *data).out
        row = acme_line(out)
        assert "$0.00" not in row and "0.0%" not in row and "—" in row
        assert "no price source knows acme/mystery-1 (3 messages)" in " ".join(out.split())
        assert re.search(r"Cost\s+≥\$1\.50 \(partial\)", out)  # the priced part, marked
    for command in ("daily", "session"):
        out = run_at(cli, monkeypatch, width, command, *data).out
        assert "acme/mystery-1" in " ".join(out.split()) and "$0.00" not in out
    monthly = run_at(cli, monkeypatch, width, "monthly", *data).out
    assert "≥$1.50" in monthly and "$1.50 " not in monthly.replace("≥$1.50", "")


def test_a_period_of_unpriced_and_priced_messages_is_marked_partial(cli, monkeypatch, tmp_path: Path):
    plan = unpriced_plan()
    root = write_store(plan, tmp_path / "u", "db")
    out = run_at(cli, monkeypatch, 120, "monthly", "--breakdown", "--data-dir", str(root)).out
    period = next(ln for ln in out.splitlines() if "│ all" in ln)
    assert "≥$1.50" in period
    assert "—" in acme_line(out)


def _only_unpriced_calculated(tmp_path: Path) -> tuple[str, ...]:
    """Arguments reading a store of one call no price source knows, in calculate mode."""
    b = storegen.Builder()
    s = b.session(b.project())
    b.assistant(s, storegen.BASE_MS, storegen.tokens(500, 50, total=550), provider="acme", model="mystery-1")
    return "--data-dir", str(write_store(b.plan, tmp_path / "a", "db")), "--cost-mode", "calculate"


def test_calculate_mode_with_only_unpriced_models_says_the_cost_is_unknown(cli, monkeypatch, tmp_path: Path):
    data = _only_unpriced_calculated(tmp_path)
    out = run_at(cli, monkeypatch, 100, "stats", *data).out
    assert re.search(r"^Cost\s+unknown$", out, re.MULTILINE) and "$0.00" not in acme_line(out)
    assert stats(cli, *data)["totals"]["cost"]["unpriced_messages"] == 1  # JSON keeps its numbers


def test_stored_mode_does_not_call_messages_unpriced(cli, monkeypatch, unpriced_store: Path):
    out = run_at(cli, monkeypatch, 100, "stats", "--data-dir", str(unpriced_store), "--cost-mode", "stored").out
    assert "unpriced" not in out.lower()
    assert re.search(r"no stored cost\s+3 messages \(acme/mystery-1\)", out)
    assert re.search(r"estimated by ocsight\s+none \(stored mode\)", out)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_message_export_leaves_an_unpriced_messages_cost_empty(cli, unpriced_store: Path, fmt: str):
    out = cli("export", "--level", "message", "--format", fmt, "--data-dir", str(unpriced_store)).out
    rows = list(csv.DictReader(io.StringIO(out))) if fmt == "csv" else json.loads(out)["rows"]
    acme = [r for r in rows if r["model"] == "mystery-1" and r["role"] == "assistant"]
    priced = [r for r in rows if r["model"] == "claude-sonnet-4-5" and r["role"] == "assistant"]
    empty = "" if fmt == "csv" else None
    assert len(acme) == 3 and all(r["cost_usd"] == empty and str(r["unpriced"]) == "1" for r in acme)
    assert all(float(r["cost_usd"]) == 1.5 and str(r["unpriced"]) == "0" for r in priced)
    doc = stats(cli, "--data-dir", str(unpriced_store))
    assert sum(int(r["unpriced"]) for r in rows) == doc["totals"]["cost"]["unpriced_messages"]


def test_markdown_export_totals_say_what_is_not_priced(cli, unpriced_store: Path):
    text = cli("export", "--level", "message", "--format", "markdown", "--data-dir", str(unpriced_store)).out
    assert "Total cost: at least $1.50 (3 unpriced messages" in text
    model = cli("export", "--level", "model", "--format", "markdown", "--data-dir", str(unpriced_store)).out
    assert "Total cost: at least $1.50 (3 unpriced messages" in model


def _markdown_rows(text: str) -> list[dict[str, str]]:
    header, _rule, *body = [ln for ln in text.splitlines() if ln.startswith("|")]
    names = [c.strip() for c in header.strip("|").split("|")]
    return [dict(zip(names, (c.strip() for c in line.strip("|").split("|")))) for line in body]


@pytest.mark.parametrize("level", ["session", "model"])
def test_markdown_export_shows_an_unpriced_rows_cost_as_unknown_not_zero(cli, unpriced_store: Path, level: str):
    text = cli("export", "--format", "markdown", "--level", level, "--data-dir", str(unpriced_store)).out
    (acme,) = [r for r in _markdown_rows(text) if r["unpriced_messages"] != "0"]
    assert (acme["cost_usd"], acme["estimated_usd"]) == ("—", "—")


def test_markdown_export_marks_a_partly_priced_rows_cost_as_at_least(cli, tmp_path: Path):
    b = storegen.Builder()
    s = b.session(b.project())
    b.assistant(s, storegen.BASE_MS, storegen.tokens(1_000, 100, total=1_100), cost=1.5)
    b.assistant(s, storegen.BASE_MS + 5, storegen.tokens(500, 50, total=550), provider="acme", model="mystery-1")
    root = write_store(b.plan, tmp_path / "p", "db")
    text = cli("export", "--format", "markdown", "--level", "session", "--data-dir", str(root)).out
    (row,) = _markdown_rows(text)
    assert row["cost_usd"] == "≥1.5" and row["unpriced_messages"] == "1"


def test_calculate_mode_with_nothing_priced_says_the_estimate_is_unknown(cli, monkeypatch, tmp_path: Path):
    data = _only_unpriced_calculated(tmp_path)
    out = run_at(cli, monkeypatch, 100, "stats", *data).out
    assert re.search(r"^  estimated by ocsight\s+unknown$", out, re.MULTILINE) and "$0.00" not in out


@pytest.mark.parametrize("width", (80, 100))
def test_the_unpriced_headline_line_is_whole_on_one_line(cli, monkeypatch, long_store: Path, width: int):
    out = run_at(cli, monkeypatch, width, "stats", "--data-dir", str(long_store), "--cost-mode", "calculate").out
    lines = out.splitlines()
    (i,) = [i for i, line in enumerate(lines) if line.startswith("  unpriced")]
    assert re.search(r"cost unknown for [\d,]+ messages \(models named below\)$", lines[i])
    assert lines[i + 1].startswith("By provider")


def test_the_session_footnote_counts_only_the_sessions_shown(cli, monkeypatch, tmp_path: Path):
    b = storegen.Builder()
    one = b.session(b.project(), at=storegen.BASE_MS)
    b.assistant(one, storegen.BASE_MS + 1, storegen.tokens(500, 50, total=550), provider="acme", model="mystery-1")
    other = b.session(b.project(), at=storegen.BASE_MS + storegen.DAY_MS)
    for i in range(2):
        b.assistant(other, storegen.BASE_MS + storegen.DAY_MS + i, storegen.tokens(500, 50, total=550),
                    provider="acme", model="mystery-1")
    root = write_store(b.plan, tmp_path / "f", "db")
    out = run_at(cli, monkeypatch, 120, "session", one["id"], "--data-dir", str(root)).out
    assert "acme/mystery-1 (1 message)" in " ".join(out.split())


# -- words and numbers --------------------------------------------------------------------------------

def test_one_of_a_thing_is_singular(cli, monkeypatch, tmp_path: Path):
    b = storegen.Builder()
    s = b.session(b.project())
    m = b.assistant(s, storegen.BASE_MS, storegen.tokens(500, 50, total=550), cost=0.01)
    b.tool(m, "bash")
    b.assistant(s, storegen.BASE_MS + 5, storegen.tokens(0, 0, total=0), error="APIError")
    root = write_store(b.plan, tmp_path / "one", "db")
    con = sqlite3.connect(root / "opencode.db")
    with con:  # one record OpenCode could never have written: skipped, and said so
        con.execute("INSERT INTO message (id, session_id, time_created, time_updated, data) "
                    "VALUES ('msg_bad', ?, ?, ?, 'not json')", (s["id"], storegen.BASE_MS + 9, storegen.BASE_MS + 9))
    con.close()
    out = run_at(cli, monkeypatch, 100, "analyze", "--data-dir", str(root)).out
    assert re.search(r"\b1 error\b", out) and "1 errors" not in out
    assert "Skipped 1 record:" in out
    tree = run_at(cli, monkeypatch, 100, "session", "--data-dir", str(root)).out
    assert "Sessions: 1, with its subagents" in tree
    assert "2 calls" in tree and "1 tool call" in tree and "1 error" in tree
    assert not re.search(r"\b1 (calls|errors|tool calls|records)\b", out + tree)


def test_counts_have_thousands_separators_in_every_column(cli, monkeypatch, tmp_path: Path):
    plan = storegen.plan_store(seed=5, sessions=1_005, turns=(1, 1), projects=1, subagent_share=0)
    root = write_store(plan, tmp_path / "many", "db")
    doc = stats(cli, "--data-dir", str(root))
    sessions = sum(p["sessions"] for p in doc["by_project"])
    out = run_at(cli, monkeypatch, 120, "analyze", "--data-dir", str(root)).out
    assert sessions >= 1_000 and f"{sessions:,}" in cells(out, "By project", "Sessions")
    assert not re.search(r"(?<![\d,.])\d{4,}(?![\d,.])", out.replace(str(root), ""))


def test_export_says_how_many_rows_it_wrote_in_words(cli, tmp_path: Path):
    b = storegen.Builder()
    b.assistant(b.session(b.project()), storegen.BASE_MS, storegen.tokens(500, 50, total=550), cost=0.01)
    root = write_store(b.plan, tmp_path / "one", "db")
    r = cli("export", "--level", "session", "-o", str(tmp_path / "out.csv"), "--data-dir", str(root))
    assert r.code == 0 and f"wrote 1 row (one per session) to {tmp_path / 'out.csv'}" in r.err


def table_headers(out: str) -> list[str]:
    """The column headers of every table printed."""
    return [h.strip() for line in out.splitlines() if line.startswith("┃") for h in line.strip("┃").split("┃")]


def test_every_table_names_the_count_of_model_calls_calls(cli, monkeypatch, unpriced_store: Path):
    data = ("--data-dir", str(unpriced_store))
    for command in (("analyze",), ("stats",), ("daily", "--breakdown"), ("monthly",)):
        headers = table_headers(run_at(cli, monkeypatch, 160, *command, *data).out)
        assert "Calls" in headers and "Messages" not in headers, command


@pytest.mark.parametrize("width", (80, 100))
@pytest.mark.parametrize("command", [("stats",), ("analyze",), ("monthly", "--breakdown"), ("daily",)])
def test_notes_under_a_table_wrap_left_aligned_within_it(cli, monkeypatch, long_store: Path, width: int,
                                                         command: tuple[str, ...]):
    lines = run_at(cli, monkeypatch, width, *command, "--data-dir", str(long_store)).out.splitlines()
    captions = 0
    for i, line in enumerate(lines):
        if not line.startswith("└"):
            continue
        below = list(itertools.takewhile(lambda x: x.strip() and not x.startswith(("┏", "┃")), lines[i + 1:]))
        for caption in below[:2]:
            assert not caption.startswith(" ") and len(caption.rstrip()) <= len(line), (caption, line)
        captions += len(below) > 0
    assert captions


def test_a_column_of_counts_is_written_in_one_style(cli, monkeypatch, long_store: Path):
    out = run_at(cli, monkeypatch, 80, "daily", "--breakdown", "--data-dir", str(long_store)).out
    title = "Daily usage"
    header = next(line for line in out.splitlines() if line.startswith("┃"))
    compacted = 0
    for name in [h.strip() for h in header.strip("┃").split("┃")][2:-1]:  # the counts, between model and cost
        column = [c for c in cells(out, title, name) if c]
        in_units = [c for c in column if c[-1] in "kMB"]
        assert not in_units or not [c for c in column if "," in c], (name, column)
        compacted += bool(in_units)
    assert compacted  # the layout this holds for: some counts in units


# -- the demo store -----------------------------------------------------------------------------------

def test_the_demo_shows_its_projects_as_home_paths_and_names_no_file(cli, monkeypatch):
    for width in WIDTHS:
        out = run_at(cli, monkeypatch, width, "analyze", "--demo").out
        assert "ocsight-record" not in out and str(paths.DEMO_DIR) not in out
        assert "the bundled demo store" in out.splitlines()[0]
        projects = cells(out, "By project", "Project")
        readable(projects, ["/home/dev/webshop", "/home/dev/api-server"], width, True)


def test_the_demo_says_so_once_in_its_header(cli, monkeypatch):
    out = run_at(cli, monkeypatch, 100, "analyze", "--demo").out
    assert out.splitlines()[0] == "OpenCode usage  the bundled demo store (not your data)"
    assert out.lower().count("demo store") == 1


@pytest.mark.parametrize("corpus", ["opencode-1.18", "opencode-1.1"])
def test_moving_a_recorded_store_out_of_its_sandbox_changes_its_paths_and_no_number(cli, tmp_path: Path,
                                                                                    corpus: str):
    """What `tests/record.py` does to the demo store after recording it, on a database and on a legacy tree."""
    import shutil

    import record
    from corpus import store_dir

    store = tmp_path / "store"
    shutil.copytree(store_dir(corpus), store)
    before = stats(cli, "--data-dir", str(store), "--no-cache")
    assert record.relocate(store, "/tmp/ocsight-record/home/", "/home/") > 0
    after = stats(cli, "--data-dir", str(store), "--no-cache")
    moved = json.loads(json.dumps(before).replace("/tmp/ocsight-record/home/", "/home/"))
    assert {k: v for k, v in after.items() if k != "source"} == {k: v for k, v in moved.items() if k != "source"}
    assert after["source"]["records"] == before["source"]["records"]
    assert after["source"]["skipped"] == before["source"]["skipped"]
    assert {p["project"] for p in after["by_project"]} == {"/home/dev/webshop", "/home/dev/api-server"}
