"""The reader on records written by the real OpenCode binaries (1.1.65 JSON tree, 1.18.33 database rows)."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest

from conftest import SAMPLES, stats

LEGACY = SAMPLES / "legacy-json-storage-1.1.65"
RECORDS = SAMPLES / "db-records-1.18.33.json"
SCHEMA = SAMPLES.parent / "schema-1.18.33.sql"


def _legacy_messages() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((LEGACY / "message").rglob("*.json"))]


def test_legacy_1_1_tokens_are_normalised_from_reasoning_inside_output(cli):
    assistant = [m for m in _legacy_messages() if m["role"] == "assistant"]
    for m in assistant:  # 1.1.65 wrote total = input + output + cache (reasoning inside output)
        t = m["tokens"]
        assert t["total"] == t["input"] + t["output"] + t["cache"]["read"] + t["cache"]["write"]
    doc = stats(cli, "--data-dir", str(LEGACY))
    tokens = doc["totals"]["tokens"]
    assert tokens["input"] == sum(m["tokens"]["input"] for m in assistant)
    assert tokens["output"] == sum(m["tokens"]["output"] - m["tokens"]["reasoning"] for m in assistant)
    assert tokens["reasoning"] == sum(m["tokens"]["reasoning"] for m in assistant)
    assert tokens["cache_read"] == sum(m["tokens"]["cache"]["read"] for m in assistant)
    assert tokens["total"] == sum(m["tokens"]["total"] for m in assistant)  # nothing counted twice


def test_legacy_1_1_store_counts_messages_sessions_and_stored_cost(cli):
    messages = _legacy_messages()
    doc = stats(cli, "--data-dir", str(LEGACY))
    totals = doc["totals"]
    assert totals["sessions"] == 1
    assert totals["messages"] == {"user": 1, "assistant": 2, "errors": 0}
    stored = math.fsum(m["cost"] for m in messages if m["role"] == "assistant")
    assert totals["cost"]["stored_usd"] == pytest.approx(stored, abs=1e-12)
    assert totals["cost"]["estimated_usd"] == 0
    assert doc["by_project"][0]["project"] == "/home/dev/project-legacy"
    assert doc["by_model"][0]["provider"] == "mock" and doc["by_model"][0]["model"] == "mock-model"


def test_legacy_1_1_failed_tool_call_is_counted_as_an_error(cli):
    doc = stats(cli, "--data-dir", str(LEGACY))
    assert doc["by_tool"] == [{"tool": "todowrite", "calls": 1, "errors": 1, "mcp_server": None}]


def _records() -> dict:
    return json.loads(RECORDS.read_text())


def _insert(con: sqlite3.Connection, table: str, row: dict) -> None:
    values = [json.dumps(v) if isinstance(v, (dict, list)) else v for v in row.values()]
    con.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", values)


def _table_of(sample_key: str) -> str:
    """The sample's keys name the table a record came from: message_user, part_tool, event_sequence..."""
    for table in ("project_directory", "event_sequence", "message", "session", "part"):
        if sample_key.startswith(table):
            return table
    return sample_key


@pytest.fixture
def db_1_18(tmp_path: Path) -> Path:
    """A database in the 1.18.33 schema holding the real records OpenCode 1.18.33 wrote."""
    root = tmp_path / "opencode-1.18"
    root.mkdir()
    con = sqlite3.connect(root / "opencode.db")
    con.executescript(SCHEMA.read_text())
    for key, row in _records().items():
        _insert(con, _table_of(key), row)
    con.commit()
    con.close()
    return root


def test_1_18_records_give_the_stored_tokens_and_cost(cli, db_1_18):
    rec = _records()
    a = rec["message_assistant"]["data"]
    t = a["tokens"]
    assert t["total"] == t["input"] + t["output"] + t["reasoning"] + t["cache"]["read"] + t["cache"]["write"]
    doc = stats(cli, "--data-dir", str(db_1_18))
    totals = doc["totals"]
    assert totals["tokens"] == {
        "input": t["input"], "output": t["output"], "reasoning": t["reasoning"], "cache_read": t["cache"]["read"],
        "cache_write": t["cache"]["write"], "total": t["total"],
    }
    assert totals["cost"]["stored_usd"] == pytest.approx(a["cost"], abs=1e-12)


def test_1_18_errored_message_is_counted_by_error_name(cli, db_1_18):
    doc = stats(cli, "--data-dir", str(db_1_18))
    assert doc["totals"]["messages"] == {"user": 1, "assistant": 2, "errors": 1}
    assert doc["by_error"] == [{"error": "APIError", "messages": 1}]


def test_1_18_tool_call_whose_message_is_missing_is_reported_not_silently_dropped(cli, db_1_18):
    doc = stats(cli, "--data-dir", str(db_1_18))
    assert doc["by_tool"] == [{"tool": "bash", "calls": 1, "errors": 0, "mcp_server": None}]
    assert doc["source"]["skipped"]["by_reason"].get("tool call without its message") == 1


def test_1_18_message_without_session_record_is_counted_and_noted(cli, db_1_18):
    doc = stats(cli, "--data-dir", str(db_1_18))
    assert doc["totals"]["sessions"] == 2  # the error message's session row is not in the sample
    assert [n for n in doc["source"]["notes"] if "no session record" in n] == [
        "1 message has no session record; counted under project '(unknown)'"]
