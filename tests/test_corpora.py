"""Exactness on what real OpenCode versions wrote (`tests/fixtures/corpora`, recorded by `make fixtures`).

Every number ocsight reports is checked against two independent accounts: the mock model's log of
what it reported, and the raw tables and files read without ocsight.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

from conftest import records as read_records
from conftest import stats
from corpus import CORPORA, NAMES, expected_from_log, raw_store, read_log, store_dir

TOKEN_KEYS = ("input", "output", "reasoning", "cache_read", "cache_write")


def corpus_stats(cli, name: str, *args: str) -> dict:
    return stats(cli, "--data-dir", str(store_dir(name)), *args)


def records(name: str):
    return read_records(store_dir(name))


def record_tokens(m) -> tuple[int, ...]:
    return tuple(getattr(m.tokens, k) for k in TOKEN_KEYS)


@pytest.mark.parametrize("name", NAMES)
def test_every_model_call_is_one_message_with_the_tokens_the_model_reported(name: str):
    expected = expected_from_log(read_log(name))
    got = [record_tokens(m) for m in records(name).messages if m.role == "assistant" and not m.error]
    assert sorted(got) == sorted(expected.tokens)


@pytest.mark.parametrize("name", NAMES)
def test_the_raw_store_normalised_by_the_documented_rule_agrees_with_the_model(name: str):
    raw, expected = raw_store(store_dir(name)), expected_from_log(read_log(name))
    got = [raw.tokens(m) for m in raw.assistant() if not m.get("error")]
    assert sorted(got) == sorted(expected.tokens)


@pytest.mark.parametrize("name", NAMES)
def test_stats_totals_equal_the_model_log_and_the_raw_store(cli, name: str):
    doc, raw = corpus_stats(cli, name), raw_store(store_dir(name))
    expected = expected_from_log(read_log(name))
    totals = doc["totals"]
    sums = [sum(t[i] for t in expected.tokens) for i in range(5)]
    assert [totals["tokens"][k] for k in TOKEN_KEYS] == sums
    assert totals["tokens"]["total"] == sum(sums)
    assert totals["messages"] == {
        "user": sum(m["role"] == "user" for m in raw.messages.values()),
        "assistant": sum(expected.calls_by_model.values()),
        "errors": expected.errors,
    }
    assert totals["sessions"] == len(raw.sessions)
    assert totals["subagent_sessions"] == sum(s["parent"] is not None for s in raw.sessions.values())
    assert totals["subagent_sessions"] == expected.subagents
    assert totals["cost"]["stored_usd"] == pytest.approx(sum(m["cost"] for m in raw.assistant()), abs=1e-9)
    assert doc["source"]["skipped"]["total"] == 0


@pytest.mark.parametrize("name", NAMES)
def test_tokens_and_calls_by_model_equal_the_model_log(cli, name: str):
    doc, expected = corpus_stats(cli, name), expected_from_log(read_log(name))
    got = {(m["provider"], m["model"]): [m["tokens"][k] for k in TOKEN_KEYS] for m in doc["by_model"]}
    assert got == {k: expected.by_model.get(k, [0] * 5) for k in expected.calls_by_model}
    assert {(m["provider"], m["model"]): m["messages"] for m in doc["by_model"]} == dict(expected.calls_by_model)


@pytest.mark.parametrize("name", NAMES)
def test_tool_calls_by_status_equal_the_raw_parts_and_the_model_log(cli, name: str):
    doc, raw = corpus_stats(cli, name), raw_store(store_dir(name))
    expected = expected_from_log(read_log(name))
    by_status = raw.tool_calls()
    assert {t["tool"]: (t["calls"], t["errors"]) for t in doc["by_tool"]} == {
        tool: (sum(n for (t, _s), n in by_status.items() if t == tool), by_status[(tool, "error")])
        for tool, _status in by_status
    }
    assert Counter({t["tool"]: t["calls"] for t in doc["by_tool"]}) == expected.tool_calls
    assert all(status in ("completed", "error") for _tool, status in by_status)


@pytest.mark.parametrize("name", NAMES)
def test_errors_by_name_equal_the_raw_messages(cli, name: str):
    doc, raw = corpus_stats(cli, name), raw_store(store_dir(name))
    names = Counter(m["error"]["name"] for m in raw.assistant() if m.get("error"))
    assert {e["error"]: e["messages"] for e in doc["by_error"]} == dict(names) == {"APIError": 1}


def test_the_three_eras_give_the_same_numbers_for_the_same_script(cli):
    def comparable(doc: dict) -> dict:
        keep = ("sessions", "messages", "tokens")
        return {
            "totals": {k: doc["totals"][k] for k in ("sessions", "subagent_sessions", "messages", "tokens")},
            **{key: [{k: v for k, v in e.items() if k in keep or not isinstance(v, (dict, int, float))}
                     for e in doc[key]] for key in ("by_provider", "by_model", "by_agent")},
            "by_tool": doc["by_tool"],
            "by_error": doc["by_error"],
        }

    sqlite_era, json_era = (comparable(corpus_stats(cli, n)) for n in ("opencode-1.18", "opencode-1.1"))
    assert sqlite_era == json_era
    # The upgraded store: the same script under 1.1, then what 1.15 added, each counted once.
    upgraded = sorted(record_tokens(m) for m in records("upgrade-1.1-1.15").messages
                      if m.role == "assistant" and not m.error)
    later = expected_from_log([e for e in read_log("upgrade-1.1-1.15") if e["tag"] == "1.15.13"])
    old = [record_tokens(m) for m in records("opencode-1.1").messages if m.role == "assistant" and not m.error]
    assert upgraded == sorted(old + later.tokens)


def test_the_upgraded_store_holds_the_old_messages_twice_and_counts_them_once():
    raw = raw_store(store_dir("upgrade-1.1-1.15"))
    assert raw.json_message_ids and raw.json_message_ids <= raw.db_message_ids
    assert len(raw.db_message_ids) > len(raw.json_message_ids)  # sessions added after the upgrade


def test_a_session_continued_after_the_upgrade_normalises_each_message_by_its_own_era():
    recs = records("upgrade-1.1-1.15")
    eras: dict[str, set[str]] = {}
    for m in recs.messages:
        if m.role == "assistant" and not m.error:
            eras.setdefault(m.session_id, set()).add(m.era)
    assert {"reasoning-in-output", "disjoint"} in eras.values()


def test_estimates_equal_what_opencode_charged_in_the_current_era(cli, monkeypatch):
    # Priced from the config OpenCode ran with: its custom providers carry the prices.
    monkeypatch.setenv("OPENCODE_CONFIG", str(CORPORA / "opencode-1.18" / "opencode.json"))
    stored = corpus_stats(cli, "opencode-1.18", "--cost-mode", "stored")
    estimated = corpus_stats(cli, "opencode-1.18", "--cost-mode", "calculate")
    assert estimated["totals"]["cost"]["unpriced_messages"] == 0
    assert stored["totals"]["cost"]["usd"] > 0
    assert estimated["totals"]["cost"]["usd"] == pytest.approx(stored["totals"]["cost"]["usd"], abs=1e-9)
    for s, e in zip(stored["by_model"], estimated["by_model"]):
        assert e["cost"]["usd"] == pytest.approx(s["cost"]["usd"], abs=1e-9)


def test_the_recorded_corpora_hold_every_kind_of_record_the_script_asks_for():
    for name in NAMES:
        manifest = (CORPORA / name / "manifest.json").read_text()
        assert f'"{name}"' in manifest
        assert (CORPORA / name / "requests.jsonl").stat().st_size > 0
        assert os.listdir(store_dir(name))
        assert (store_dir(name) / "opencode.db").exists() or (store_dir(name) / "storage").is_dir()
        part_types = {p["type"] for p in raw_store(store_dir(name)).parts.values()}
        assert {"text", "reasoning", "tool", "step-start", "step-finish"} <= part_types
    # OpenCode 1.1.65 writes a file edit's patch part only some of the time (its snapshot races the
    # end of the turn); 1.18 always does.
    assert "patch" in {p["type"] for p in raw_store(store_dir("opencode-1.18")).parts.values()}
