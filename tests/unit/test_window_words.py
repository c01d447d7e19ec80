"""A window and filters in words (`filters.describe`): one wording for report headers and MCP answers."""

from __future__ import annotations

from ocsight import filters
from ocsight.mcp.answers import describe as mcp_describe


def test_a_window_in_the_local_zone_says_no_zone():
    assert filters.describe(filters.make_filters(days=7, providers=("mockai",)).description) \
        == "last 7 days · provider mockai"


def test_a_window_in_another_zone_says_the_zone():
    d = filters.make_filters(since="2026-11-01", until="2026-11-30", timezone="Europe/Paris").description
    assert filters.describe(d) == "2026-11-01 to 2026-11-30 (Europe/Paris)"


def test_all_history_says_no_zone_in_a_header():
    assert filters.describe(filters.make_filters(timezone="UTC").description) == "all history"


def test_an_mcp_answer_says_the_zone_even_for_all_history_and_the_local_zone():
    assert mcp_describe(filters.make_filters(timezone="UTC")) == "all history (UTC)"
    assert mcp_describe(filters.make_filters(days=1, agents=("plan",))) == "today (local) · agent plan"
