"""The query layer's `stats`: tools, errors and counts on a second connection beside the usage
breakdowns (and `stats --json`'s source and pricing blocks on another)."""

from __future__ import annotations

from pathlib import Path

import pytest

import storegen
from conftest import stats, without_source, write_store
from ocsight import query
from ocsight.sqlite_library import sqlite3


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_store(storegen.plan_store(seed=8, sessions=25), tmp_path / "s", "db")


class Targets(list):
    fail_read_only = False


@pytest.fixture
def opened(monkeypatch) -> Targets:
    """The targets of every SQLite connection opened from now on; read-only ones to the index fail
    once `fail_read_only` is set."""
    targets = Targets()
    real = sqlite3.connect

    def connect(target, *args, **kwargs):
        targets.append(str(target))
        if targets.fail_read_only and "mode=ro" in str(target) and "index-" in str(target):
            raise sqlite3.OperationalError("unable to open database file")
        return real(target, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)
    return targets


def test_tools_errors_and_the_source_are_read_on_other_connections_to_the_index(cli, root: Path, opened: Targets):
    doc = stats(cli, "--data-dir", str(root))
    side = [t for t in opened if "index-" in t and "mode=ro" in t]
    assert len(side) == 2  # the aggregates' and the document's
    assert doc["by_tool"] and doc["by_error"] and doc["totals"]["messages"]["user"] > 0
    assert doc["source"]["records"]["messages"] > 0 and doc["pricing"]["models"]


def test_a_second_connection_that_fails_leaves_the_answer_to_the_index_connection(cli, root: Path, opened: Targets):
    first = stats(cli, "--data-dir", str(root))
    opened.fail_read_only = True
    again = stats(cli, "--data-dir", str(root))
    assert any("mode=ro" in t for t in opened)
    assert without_source(again) == without_source(first)
    assert again["source"]["records"] == first["source"]["records"]


def test_a_connection_holding_a_transaction_answers_alone(cli, root: Path, opened: Targets):
    index = stats(cli, "--data-dir", str(root))["source"]["index"]
    con = sqlite3.connect(index, isolation_level=None)
    apart = query.stats(con, query.Filters(), "auto")
    opened.clear()
    con.execute("BEGIN")
    alone = query.stats(con, query.Filters(), "auto")
    con.execute("COMMIT")
    assert [t for t in opened if "mode=ro" in t] == []
    assert alone == apart and alone["by_tool"]


def test_a_connection_whose_views_stand_in_for_the_cubes_answers_alone(cli, root: Path, opened: Targets):
    index = stats(cli, "--data-dir", str(root))["source"]["index"]
    con = sqlite3.connect(index, isolation_level=None)
    con.execute("CREATE TEMP VIEW tool_cube AS SELECT * FROM main.tool_cube WHERE 0")  # as `mcp.scope` does
    opened.clear()
    doc = query.stats(con, query.Filters(), "auto")
    assert [t for t in opened if "mode=ro" in t] == []
    assert doc["by_tool"] == [] and doc["totals"]["messages"]["assistant"] > 0
