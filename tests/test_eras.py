"""Generated stores of every OpenCode era: exact totals, and the same numbers whatever the storage."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

import storegen
from conftest import stats, without_source, write_store

ALL_ERAS = ("0.x", "1.0", "1.1-old", "1.1", "1.15", "1.18")
TOKEN_KEYS = ("input", "output", "reasoning", "cache_read", "cache_write")


def expected_totals(plan: storegen.Plan) -> dict:
    """Totals worked out from what the generator sent as the model's own numbers, not from the store."""
    assistant = [m for m in plan.messages if m["role"] == "assistant"]
    tokens = {k: sum(plan.truth[m["id"]]["tokens"][k] for m in assistant) for k in TOKEN_KEYS}
    active = {m["sessionID"] for m in plan.messages}
    children = {s["id"] for s in plan.sessions if s.get("parentID")}
    return {
        "sessions": len(active),
        "subagent_sessions": len(active & children),
        "messages": {
            "user": sum(m["role"] == "user" for m in plan.messages),
            "assistant": len(assistant),
            "errors": sum("error" in m for m in assistant),
        },
        "tokens": {**tokens, "total": sum(tokens.values())},
        "stored_usd": math.fsum(m["cost"] for m in assistant),
    }


def expected_tools(plan: storegen.Plan) -> dict[str, tuple[int, int]]:
    calls = Counter(p["tool"] for p in plan.parts if p["type"] == "tool")
    errors = Counter(p["tool"] for p in plan.parts if p["type"] == "tool" and p["state"]["status"] == "error")
    return {tool: (n, errors[tool]) for tool, n in calls.items()}


@pytest.mark.parametrize("era", ALL_ERAS)
def test_every_era_gives_the_model_reported_tokens(cli, tmp_path: Path, era: str):
    plan = storegen.plan_store(seed=11, sessions=30, eras=(era,))
    doc = stats(cli, "--cost-mode", "stored",
                "--data-dir", str(write_store(plan, tmp_path / era, "db")))
    want = expected_totals(plan)
    assert doc["totals"]["tokens"] == want["tokens"]
    assert doc["totals"]["messages"] == want["messages"]
    assert doc["totals"]["sessions"] == want["sessions"]
    assert doc["totals"]["subagent_sessions"] == want["subagent_sessions"]
    assert doc["totals"]["cost"]["usd"] == pytest.approx(want["stored_usd"], abs=1e-9)


def test_multi_step_messages_of_opencode_0_x_count_every_step(cli, tmp_path: Path):
    plan = storegen.plan_store(seed=5, sessions=12, eras=("0.x",))
    multi = [m for m in plan.messages if plan.truth.get(m["id"], {}).get("steps", 0) > 1]
    assert multi, "the generator must produce multi-step messages for this test to mean anything"
    # the message itself only holds its last step's tokens, so reading messages alone would undercount
    stored_only = sum(m["tokens"]["input"] for m in plan.messages if m["role"] == "assistant")
    doc = stats(cli, "--data-dir", str(write_store(plan, tmp_path / "s", "db")))
    assert doc["totals"]["tokens"] == expected_totals(plan)["tokens"]
    assert doc["totals"]["tokens"]["input"] != stored_only


@pytest.mark.parametrize("kind", ["db", "json"])
def test_a_0_x_message_whose_own_counts_are_not_numbers_counts_by_its_steps(cli, tmp_path: Path, kind: str):
    plan = storegen.plan_store(seed=5, sessions=12, eras=("0.x",))
    m = next(m for m in plan.messages if plan.truth.get(m["id"], {}).get("steps", 0) > 1)
    m["tokens"] = {**m["tokens"], "input": "12"}  # alone, skipped: its steps hold the real counts
    doc = stats(cli, "--data-dir", str(write_store(plan, tmp_path / "s", kind)))
    assert doc["totals"]["tokens"] == expected_totals(plan)["tokens"]
    assert doc["source"]["skipped"]["total"] == 0


def test_mixed_eras_in_one_store_are_each_normalised_by_their_own_rules(cli, tmp_path: Path):
    plan = storegen.plan_store(seed=3, sessions=60, eras=ALL_ERAS)
    doc = stats(cli, "--data-dir", str(write_store(plan, tmp_path / "mixed", "db")))
    assert doc["totals"]["tokens"] == expected_totals(plan)["tokens"]


def test_the_same_conversation_gives_the_same_tokens_in_every_era(cli, tmp_path: Path):
    # Single-step eras draw the same provider numbers from the same seed; only the storage differs.
    results = []
    for era in ("1.0", "1.1-old", "1.1", "1.15", "1.18"):
        plan = storegen.plan_store(seed=21, sessions=25, eras=(era,))
        results.append(stats(cli, "--data-dir", str(write_store(plan, tmp_path / era, "db")))["totals"]["tokens"])
    assert all(r == results[0] for r in results)
    assert results[0]["reasoning"] > 0 and results[0]["cache_read"] > 0


def test_tool_calls_are_counted_by_name_and_status(cli, tmp_path: Path):
    plan = storegen.plan_store(seed=8, sessions=40)
    doc = stats(cli, "--data-dir", str(write_store(plan, tmp_path / "t", "db")))
    got = {t["tool"]: (t["calls"], t["errors"]) for t in doc["by_tool"]}
    assert got == expected_tools(plan)
    assert {t["tool"]: t["mcp_server"] for t in doc["by_tool"]}.get("github_create_issue") == "github"
    assert {t["tool"]: t["mcp_server"] for t in doc["by_tool"]}.get("bash") is None


def test_breakdowns_add_up_to_the_totals(cli, tmp_path: Path):
    plan = storegen.plan_store(seed=4, sessions=50, eras=("1.1", "1.18"))
    doc = stats(cli, "--data-dir", str(write_store(plan, tmp_path / "b", "db")))
    for key in ("by_provider", "by_model", "by_agent", "by_project"):
        assert sum(g["messages"] for g in doc[key]) == doc["totals"]["messages"]["assistant"], key
        for k in (*TOKEN_KEYS, "total"):
            assert sum(g["tokens"][k] for g in doc[key]) == doc["totals"]["tokens"][k], (key, k)
        assert math.fsum(g["cost"]["usd"] for g in doc[key]) == pytest.approx(doc["totals"]["cost"]["usd"], abs=1e-9)


def test_by_model_matches_the_generated_messages_per_model(cli, tmp_path: Path):
    plan = storegen.plan_store(seed=9, sessions=40)
    doc = stats(cli, "--data-dir", str(write_store(plan, tmp_path / "m", "db")))
    per_model = Counter((m["providerID"], m["modelID"]) for m in plan.messages if m["role"] == "assistant")
    assert {(g["provider"], g["model"]): g["messages"] for g in doc["by_model"]} == dict(per_model)


@pytest.mark.parametrize("eras", [("1.18",), ("1.1", "1.15"), ALL_ERAS])
def test_the_same_store_as_sqlite_json_or_both_gives_identical_stats(cli, tmp_path: Path, eras):
    plan = storegen.plan_store(seed=17, sessions=30, eras=eras)
    docs = {
        kind: without_source(stats(cli, "--data-dir", str(write_store(plan, tmp_path / kind, kind))))
        for kind in ("db", "json", "both")
    }
    assert docs["db"] == docs["json"] == docs["both"]
    assert docs["db"]["totals"]["tokens"] == expected_totals(plan)["tokens"]


def test_an_upgraded_store_counts_imported_messages_once_and_new_ones_too(cli, tmp_path: Path):
    # OpenCode 1.2-1.15 imported the JSON tree into the database and kept the files; later sessions
    # exist only in the database, and a machine may also hold JSON sessions never imported.
    plan = storegen.plan_store(seed=23, sessions=40, eras=("1.1", "1.1", "1.18"))
    ids = [s["id"] for s in plan.sessions]
    root = tmp_path / "upgraded"
    storegen.write_sqlite(plan, root / "opencode.db", session_ids=set(ids[5:]))
    storegen.write_legacy(plan, root / "storage", session_ids=set(ids[:25]))
    doc = stats(cli, "--data-dir", str(root))
    assert doc["totals"]["tokens"] == expected_totals(plan)["tokens"]
    assert doc["totals"]["messages"] == expected_totals(plan)["messages"]


def test_the_database_copy_of_a_message_wins_over_its_json_copy(cli, tmp_path: Path):
    b = storegen.Builder()
    s = b.session(b.project())
    m = b.assistant(s, storegen.BASE_MS, storegen.tokens(100, 10, total=110), cost=0.5)
    root = tmp_path / "both"
    storegen.write_legacy(b.plan, root / "storage")
    m["tokens"] = storegen.tokens(200, 20, total=220)  # the database holds the newer copy
    m["cost"] = 1.0
    b.plan.parts = [p for p in b.plan.parts if p["messageID"] != m["id"]]
    storegen.write_sqlite(b.plan, root / "opencode.db")
    doc = stats(cli, "--data-dir", str(root))
    assert doc["totals"]["tokens"]["input"] == 200
    assert doc["totals"]["cost"]["stored_usd"] == 1.0


def test_a_total_decides_the_era_also_for_counts_written_as_whole_reals(cli, tmp_path: Path):
    # A 1.1 session falls back to reasoning-in-output; a disjoint total (100 + 50 + 20) overrules it.
    b = storegen.Builder()
    s = b.session(b.project(), version="1.1.40")
    b.assistant(s, storegen.BASE_MS, {"input": 100.0, "output": 50.0, "reasoning": 20.0,
                                      "cache": {"read": 0.0, "write": 0}, "total": 170.0})
    b.assistant(s, storegen.BASE_MS + 1000, storegen.tokens(100, 50, 20))  # no total: the session's era
    doc = stats(cli, "--data-dir", str(write_store(b.plan, tmp_path / "reals", "db")))
    assert doc["totals"]["tokens"] == {"input": 200, "output": 50 + 30, "reasoning": 40, "cache_read": 0,
                                       "cache_write": 0, "total": 320}
