"""The mock model's plan (tests/mockmodel.py), without OpenCode: the recorded corpora's answers are
still what it plans, and the misbehaving scenarios plan what their table says."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path

import pytest

import mockmodel
from corpus import NAMES, read_log

TOOLS = [{"type": "function", "function": {"name": "bash"}}]


def body(prompt: str, step: int = 0) -> dict:
    """A request for one step of the turn `prompt` began (OpenCode 1.15+ quotes the prompt)."""
    messages = [{"role": "system", "content": "You are OpenCode."}, {"role": "user", "content": f'"{prompt}"'}]
    for _ in range(step):
        messages += [{"role": "assistant", "content": "x"}, {"role": "tool", "content": "y"}]
    return {"model": "mock-large", "messages": messages, "tools": TOOLS}


@pytest.mark.parametrize("name", NAMES)
def test_the_recorded_corpora_answers_are_still_what_the_mock_plans(name: str):
    for entry in read_log(name):
        if entry["scenario"] != "title":
            reply = asdict(mockmodel.plan_reply(body(entry["prompt"], entry["step"])))
            assert {k: reply[k] for k in ("scenario", "tool", "status", "usage")} == \
                {k: entry[k] for k in ("scenario", "tool", "status", "usage")}


def test_a_rate_limit_refuses_the_first_attempt_and_answers_the_next_with_the_same_counts():
    refused = mockmodel.plan_reply(body("[429] x"), 0, retry_after=3)
    answered = mockmodel.plan_reply(body("[429] x"), 1, retry_after=3)
    assert (refused.status, refused.retry_after, refused.usage) == (429, 3, None)
    assert (answered.status, answered.retry_after, answered.text) == (200, None, "Answered after a rate limit.")
    assert answered.usage == mockmodel.usage_for("[429] x", 0, False, False)


def test_a_server_error_refuses_every_attempt():
    for attempt in range(3):
        reply = mockmodel.plan_reply(body("[500] x"), attempt, error_retry_after_ms=250)
        assert (reply.status, reply.usage, reply.retry_after_ms) == (500, None, 250)
    assert mockmodel.plan_reply(body("[500] x")).retry_after_ms is None


def test_a_slow_answer_streams_a_word_a_chunk_at_the_given_pace():
    reply = mockmodel.plan_reply(body("[slow] x"), slow_ms=7)
    chunks = mockmodel.stream(reply, "m", "c")
    words = mockmodel.SLOW_TEXT.split()
    assert (reply.pace_ms, len(mockmodel.text_chunks(reply))) == (7, len(words))
    texts = [json.loads(chunks[i][6:])["choices"][0]["delta"]["content"] for i in mockmodel.text_chunks(reply)]
    assert [t.strip() for t in texts] == words
    assert reply.usage == mockmodel.usage_for("[slow] x", 0, False, False)


def test_a_title_leaves_the_new_keywords_out():
    title = {"messages": [{"role": "user", "content": "Generate a title for:\n[stall] fix the login"}]}
    assert mockmodel.plan_reply(title).text == "Fix the login"


def test_only_the_misbehaving_scenarios_log_entries_carry_time_attempt_and_stall(tmp_path: Path):
    log = tmp_path / "log.jsonl"
    mock = mockmodel.MockModel(log)
    try:
        for prompt in ("[bash] x", "[error] x", "[429] x", "[429] x"):
            mock.record(body(prompt), mock.plan(body(prompt)))
    finally:
        mock.server.server_close()
    bash, error, refused, answered = mockmodel.read_log(log)
    keys = ["n", "tag", "model", "call_id", "scenario", "step", "prompt", "tool", "status", "usage", "finish_reason"]
    assert list(bash) == list(error) == keys  # as in the recorded corpora
    assert (refused["status"], refused["attempt"], answered["status"], answered["attempt"]) == (429, 0, 200, 1)
    assert refused["stalled"] is False and answered["time"] >= refused["time"]


def _post(url: str, prompt: str, out: dict) -> None:
    req = urllib.request.Request(f"{url}/chat/completions", json.dumps(body(prompt)).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            out["text"] = r.read().decode()
    except urllib.error.HTTPError as e:
        out.update(status=e.code, headers=dict(e.headers), body=json.loads(e.read()))


def test_a_stall_holds_the_answer_until_released_then_finishes_it(tmp_path: Path):
    with mockmodel.MockModel(tmp_path / "log.jsonl") as mock:
        out: dict = {}
        client = threading.Thread(target=_post, args=(mock.url, "[stall] x", out))
        client.start()
        assert mock.stalled.wait(10) and mock.stalls == 1
        time.sleep(0.2)
        assert client.is_alive() and not out
        mock.release()
        client.join(10)
    assert out["text"].endswith("data: [DONE]\n\n")
    (entry,) = mockmodel.read_log(tmp_path / "log.jsonl")
    assert entry["stalled"] and entry["stall_after"] == mockmodel.STALL_AFTER


def test_leaving_the_mock_releases_a_stall(tmp_path: Path):
    out: dict = {}
    with mockmodel.MockModel(tmp_path / "log.jsonl") as mock:
        client = threading.Thread(target=_post, args=(mock.url, "[stall] x", out))
        client.start()
        assert mock.stalled.wait(10)
        started = time.monotonic()
    client.join(10)
    assert time.monotonic() - started < 5 and not client.is_alive()


def test_a_rate_limit_answer_carries_retry_after_and_a_json_error(tmp_path: Path):
    with mockmodel.MockModel(tmp_path / "log.jsonl", retry_after=2) as mock:
        refused: dict = {}
        _post(mock.url, "[429] x", refused)
        answered: dict = {}
        _post(mock.url, "[429] x", answered)
    assert (refused["status"], refused["headers"]["Retry-After"]) == (429, "2")
    assert refused["body"]["error"]["type"] == "rate_limit_error"
    assert "Answered after a rate limit." in "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in answered["text"].split("\n\n") if line.startswith("data: {") and '"choices": [{' in line)
