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
