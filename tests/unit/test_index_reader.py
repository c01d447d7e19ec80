"""The index's typed reader on a tiny store: each query states one counting rule."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import storegen
from conftest import open_index
from ocsight.filters import Filters, make_filters
from ocsight.model import Tokens

HOUR = 3_600_000


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """Two sessions and a subagent: known tokens and costs, one error, one tool call each."""
    b = storegen.Builder()
    p = b.project("/home/dev/shop")
    root = b.session(p, at=storegen.BASE_MS)
    b.user(root, storegen.BASE_MS + 1)
    a = b.assistant(root, storegen.BASE_MS + 2, storegen.tokens(100, 10, total=110), cost=0.5)
    b.tool(a, "bash")
    child = b.session(p, at=storegen.BASE_MS + HOUR, parent=root)
    c = b.assistant(child, storegen.BASE_MS + HOUR, storegen.tokens(40, 4, total=44), cost=0.25, agent="general")
    b.tool(c, "github_create_issue", status="error")
    other = b.session(b.project("/home/dev/blog"), at=storegen.BASE_MS + 30 * HOUR)
    b.assistant(other, storegen.BASE_MS + 30 * HOUR, storegen.tokens(0, 0), error="APIError", provider="openai",
                model="gpt-5")
    storegen.write_sqlite(b.plan, tmp_path / "s" / "opencode.db")
    return tmp_path / "s"


def test_totals_count_sessions_messages_tokens_and_stored_cost(tiny: Path):
    with open_index(tiny) as idx:
        t = idx.reader.breakdown(Filters(), "auto").totals
    assert (t.sessions, t.subagent_sessions, t.user_messages, t.assistant_messages, t.errors) == (3, 1, 1, 3, 1)
    assert t.usage.tokens == Tokens(140, 14, 0, 0, 0) and t.usage.stored_pico == 750_000_000_000


def test_a_window_counts_the_messages_created_in_it(tiny: Path):
    with open_index(tiny) as idx:
        day = idx.reader.breakdown(make_filters(since="2026-07-01", until="2026-07-01", timezone="UTC"), "auto")
    assert day.totals.assistant_messages == 2 and day.totals.usage.tokens.input == 140


def test_a_session_scope_counts_those_sessions_alone(tiny: Path):
    with open_index(tiny) as idx:
        (root,) = [s for s in idx.reader.sessions(Filters(), "auto") if s.parent_id is None and s.tool_calls == 1
                   and s.project.endswith("shop")]
        scoped = idx.reader.breakdown(dataclasses.replace(Filters(), sessions=frozenset([root.id])), "auto")
    assert scoped.totals.sessions == 1 and [(t.tool, t.calls) for t in scoped.tools] == [("bash", 1)]


def test_tools_count_calls_and_errors_by_name(tiny: Path):
    with open_index(tiny) as idx:
        tools = idx.reader.breakdown(Filters(), "auto").tools
    assert sorted((t.tool, t.calls, t.errors) for t in tools) == [("bash", 1, 0), ("github_create_issue", 1, 1)]


def test_periods_split_usage_by_day_in_the_time_zone(tiny: Path):
    with open_index(tiny) as idx:
        days = idx.reader.periods(Filters(), "auto", "day", None, breakdown=True)
    assert [(p.period, p.usage.messages) for p in days] == [("2026-07-01", 2), ("2026-07-02", 1)]
    assert days[1].models is not None and [g.key for g in days[1].models] == [("openai", "gpt-5")]


def test_known_values_are_those_with_model_usage(tiny: Path):
    with open_index(tiny) as idx:
        assert idx.reader.known_values("provider") == ["anthropic", "openai"]
        assert idx.reader.known_values("model", "anth") == ["anthropic/claude-sonnet-4-5"]
        assert idx.reader.known_values("project", "SHOP") == ["/home/dev/shop"]


@pytest.fixture
def two_models(tmp_path: Path) -> Path:
    """One session using two models of one provider, another using one of them; two more models, one
    costing as much as m-a with more tokens, one as much with as many tokens."""
    b = storegen.Builder()
    p = b.project("/home/dev/shop")
    first = b.session(p, at=storegen.BASE_MS)
    b.assistant(first, storegen.BASE_MS + 1, storegen.tokens(100, 10, total=110), cost=0.5, model="m-b")
    b.assistant(first, storegen.BASE_MS + 2, storegen.tokens(200, 20, total=220), cost=0.5, model="m-a")
    second = b.session(p, at=storegen.BASE_MS + HOUR)
    b.assistant(second, storegen.BASE_MS + HOUR, storegen.tokens(50, 5, total=55), cost=0.25, model="m-b",
                agent="plan")
    b.assistant(second, storegen.BASE_MS + HOUR + 1, storegen.tokens(300, 30, total=330), cost=0.5, model="m-c")
    b.assistant(second, storegen.BASE_MS + HOUR + 2, storegen.tokens(200, 20, total=220), cost=0.5, model="m-0")
    storegen.write_sqlite(b.plan, tmp_path / "s" / "opencode.db")
    return tmp_path / "s"


def test_a_session_using_two_models_counts_once_for_their_provider(two_models: Path):
    with open_index(two_models) as idx:
        b = idx.reader.breakdown(Filters(), "auto")
    assert [(g.key, g.usage.sessions, g.usage.messages) for g in b.by_provider] == [(("anthropic",), 2, 5)]
    assert b.totals.usage.sessions == 2
    assert [(g.key, g.usage.sessions) for g in b.by_agent] == [(("build",), 2), (("plan",), 1)]


def test_breakdown_rows_are_ordered_by_cost_then_tokens_then_name(two_models: Path):
    with open_index(two_models) as idx:
        by_model = idx.reader.breakdown(Filters(), "auto").by_model
    # m-b costs the most; m-c, m-0 and m-a cost alike, m-c with the most tokens, m-0 and m-a alike
    assert [g.key[1] for g in by_model] == ["m-b", "m-c", "m-0", "m-a"]


def test_a_provider_stored_as_a_number_is_read_as_its_text(tmp_path: Path):
    b = storegen.Builder()
    s = b.session(b.project("/home/dev/shop"), at=storegen.BASE_MS)
    for n, provider in enumerate(("zeta", 7, "alpha")):  # OpenCode writes a string; a record may not
        b.assistant(s, storegen.BASE_MS + n, storegen.tokens(10, 1, total=11), cost=0.5, provider=provider)
    storegen.write_sqlite(b.plan, tmp_path / "s" / "opencode.db")
    with open_index(tmp_path / "s") as idx:
        assert [g.key for g in idx.reader.breakdown(Filters(), "auto").by_provider] == [("7",), ("alpha",), ("zeta",)]
