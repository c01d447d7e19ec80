"""Per-message records: the same numbers as the totals, with every field consumers need."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import storegen
from conftest import SAMPLES, records, stats, write_store

LEGACY = SAMPLES / "legacy-json-storage-1.1.65"


def _read(root: Path, sessions=None):
    return records(root, sessions=sessions)


def test_records_of_the_real_1_1_store_carry_tool_times_errors_and_steps():
    rec = _read(LEGACY)
    (tool,) = rec.tool_calls
    raw = next(json.loads(p.read_text()) for p in (LEGACY / "part").rglob("*.json")
               if json.loads(p.read_text())["type"] == "tool")
    assert (tool.tool, tool.status, tool.call_id) == ("todowrite", "error", raw["callID"])
    assert (tool.time_start, tool.time_end) == (raw["state"]["time"]["start"], raw["state"]["time"]["end"])
    assert tool.error.startswith("Error: The todowrite tool was called with invalid arguments")
    assert len(rec.steps) == 2 and {s.reason for s in rec.steps} == {"tool-calls", "stop"}
    assert [m.role for m in rec.messages] == ["user", "assistant", "assistant"]
    assert rec.sessions[0].version == "1.1.65" and rec.projects[0].worktree == "/home/dev/project-legacy"


def test_record_tokens_and_costs_add_up_to_stats(cli, tmp_path: Path):
    plan = storegen.plan_store(seed=13, sessions=25, eras=("0.x", "1.1", "1.18"))
    root = write_store(plan, tmp_path / "s", "both")
    rec = _read(root)
    doc = stats(cli, "--data-dir", str(root))
    assistant = [m for m in rec.messages if m.role == "assistant"]
    for key in ("input", "output", "reasoning", "cache_read", "cache_write"):
        assert sum(getattr(m.tokens, key) for m in assistant) == doc["totals"]["tokens"][key]
    assert len(assistant) == doc["totals"]["messages"]["assistant"]
    assert rec.errors_by_name() == {e["error"]: e["messages"] for e in doc["by_error"]}
    assert len(rec.tool_calls) == sum(t["calls"] for t in doc["by_tool"])


def test_subagent_sessions_link_to_the_task_call_that_started_them(tmp_path: Path):
    plan = storegen.plan_store(seed=19, sessions=30, subagent_share=0.5)
    rec = _read(write_store(plan, tmp_path / "s", "db"))
    children = {s.id: s for s in rec.sessions if s.parent_id}
    tasks = [t for t in rec.tool_calls if t.tool == "task"]
    assert children and tasks
    for t in tasks:
        assert t.child_session_id in children
        assert children[t.child_session_id].parent_id == t.session_id


def test_mcp_tools_name_their_server(tmp_path: Path):
    plan = storegen.plan_store(seed=8, sessions=40)
    rec = _read(write_store(plan, tmp_path / "s", "db"))
    servers = {t.tool: t.mcp_server for t in rec.tool_calls}
    assert servers.get("github_create_issue") == "github"
    assert servers.get("context7_resolve-library-id") == "context7"
    assert servers.get("bash") is None


def test_a_message_without_tokens_carries_its_sessions_era(tmp_path: Path):
    b = storegen.Builder()
    s = b.session(b.project(), version=storegen.ERAS["1.1"])
    b.user(s, storegen.BASE_MS)
    b.assistant(s, storegen.BASE_MS + 1, storegen.tokens(input=10, output=5))  # no total: the session decides
    rec = _read(write_store(b.plan, tmp_path / "s", "db"))
    assert {m.role: m.era for m in rec.messages} == {"user": "reasoning-in-output", "assistant": "reasoning-in-output"}


def test_records_can_be_read_for_some_sessions_only(tmp_path: Path):
    plan = storegen.plan_store(seed=3, sessions=10)
    root = write_store(plan, tmp_path / "s", "both")
    wanted = plan.sessions[2]["id"]
    rec = _read(root, [wanted])
    assert rec.messages and {m.session_id for m in rec.messages} == {wanted}
    assert {t.session_id for t in rec.tool_calls} <= {wanted}


def test_every_model_call_is_a_step_with_its_own_tokens(tmp_path: Path):
    plan = storegen.plan_store(seed=5, sessions=10, eras=("0.x",))
    rec = _read(write_store(plan, tmp_path / "s", "db"))
    by_message: dict[str, int] = {}
    for s in rec.steps:
        by_message[s.message_id] = by_message.get(s.message_id, 0) + s.tokens.input
    for m in rec.messages:
        if m.steps > 1:
            assert by_message[m.id] == m.tokens.input


def test_records_without_every_step_keep_0_x_steps_and_every_message_as_it_was(tmp_path: Path):
    # the sidecar's read: a 1.x message holds its one step's tokens, so only 0.x steps are read
    from ocsight.telemetry import spans

    plan = storegen.plan_store(seed=13, sessions=25, eras=("0.x", "1.1", "1.18"))
    root = write_store(plan, tmp_path / "s", "both")
    every = _read(root)
    some = records(root, every_step=False)
    old = {s.id for s in every.sessions if s.version.startswith("0.")}
    assert some.steps == [s for s in every.steps if s.session_id in old] and some.steps
    assert len(some.steps) < len(every.steps)
    assert [dataclasses.replace(m, steps=0) for m in some.messages] == [
        dataclasses.replace(m, steps=0) for m in every.messages]
    assert spans.spans(some) == spans.spans(every)
