"""The mock model misbehaving ([slow], [stall], [500], [429]) against the real OpenCode 1.18.33, and
what OpenCode stores then: the facts tests of interrupted, failed and retried turns rest on."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

import harness
import mockmodel

pytestmark = pytest.mark.e2e

VERSION = harness.VERSIONS["1.18"]


@dataclass
class Sandbox:
    mock: mockmodel.MockModel
    oc: harness.OpenCode
    log: Path

    def entries(self, scenario: str) -> list[dict]:
        return [e for e in mockmodel.read_log(self.log) if e["scenario"] == scenario]


@contextmanager
def sandbox(tmp_path: Path, **settings) -> Iterator[Sandbox]:
    """A mock model (with `settings`) and OpenCode 1.18.33 in a sandbox talking to it."""
    log = tmp_path / "requests.jsonl"
    log.touch()
    with mockmodel.MockModel(log, **settings) as mock:
        yield Sandbox(mock, harness.OpenCode(VERSION, tmp_path / "sandbox", mock.url), log)


def query(db: Path, sql: str, *args) -> list[tuple]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        return con.execute(sql, args).fetchall()


def assistant_messages(db: Path) -> list[dict]:
    rows = query(db, "SELECT id, data FROM message WHERE json_extract(data, '$.role') = 'assistant'"
                     " ORDER BY time_created, id")
    return [{"id": i, **json.loads(d)} for i, d in rows]


def parts(db: Path, message: str) -> list[dict]:
    return [json.loads(d) for (d,) in query(db, "SELECT data FROM part WHERE message_id = ? ORDER BY id", message)]


def holders(path: Path) -> list[int]:
    """The processes holding `path` open (Linux's /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if any(os.readlink(fd) == str(path) for fd in (proc / "fd").iterdir()):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_a_slow_answer_is_stored_lasting_at_least_its_chunks_times_the_pace(tmp_path):
    with sandbox(tmp_path, slow_ms=100) as box:
        box.oc.run("[slow] take your time")
        (entry,) = box.entries("slow")
    (message,) = assistant_messages(box.oc.database)
    chunks, pace = entry["chunks"], entry["pace_ms"]
    assert (chunks, pace) == (len(mockmodel.SLOW_TEXT.split()), 100)
    assert message["time"]["completed"] - message["time"]["created"] >= chunks * pace
    (text,) = [p for p in parts(box.oc.database, message["id"]) if p["type"] == "text"]
    assert text["text"].split() == mockmodel.SLOW_TEXT.split()
    assert text["time"]["end"] - text["time"]["start"] >= (chunks - 1) * pace  # a pause between any two words
    assert message["tokens"]["output"] == entry["usage"]["completion_tokens"]


def test_an_interrupted_turn_leaves_an_unfinished_assistant_message_without_an_error(tmp_path):
    with sandbox(tmp_path) as box:
        session = box.oc.interrupted_turn(box.mock, "[stall] hang in there")
        (entry,) = box.entries("stall")
    db = box.oc.database
    assert entry["stalled"] and box.mock.stalls == 1
    assert holders(db) == [] and holders(Path(f"{db}-wal")) == []  # OpenCode is gone
    (message,) = assistant_messages(db)
    assert query(db, "SELECT session_id FROM message WHERE id = ?", message["id"]) == [(session,)]
    # What OpenCode 1.18.33 has written of an answer it was streaming: the message with its creation
    # time only (no completion, finish, error, tokens or cost) and two parts, the step's start and an
    # empty text (its words are kept in memory until the text ends).
    assert message["time"] == {"created": message["time"]["created"]}
    assert "finish" not in message and "error" not in message
    assert message["cost"] == 0 and message["tokens"] == {"input": 0, "output": 0, "reasoning": 0,
                                                          "cache": {"read": 0, "write": 0}}
    assert [p["type"] for p in parts(db, message["id"])] == ["step-start", "text"]
    text = parts(db, message["id"])[1]
    assert text["text"] == "" and set(text["time"]) == {"start"}
    # Killed, it leaves its write-ahead log, which holds the whole of a fresh store: the database
    # file alone has not even the tables.
    assert Path(f"{db}-wal").stat().st_size > 0 and Path(f"{db}-shm").exists()
    alone = tmp_path / "alone.db"
    shutil.copyfile(db, alone)
    assert query(alone, "SELECT name FROM sqlite_master WHERE name = 'message'") == []


def test_a_server_error_is_retried_five_times_then_stored_as_an_api_error(tmp_path):
    with sandbox(tmp_path, error_retry_after_ms=100) as box:
        run = box.oc.run("[500] break the server")
        attempts = box.entries("500")
    assert run.returncode == 1 and "mock upstream failed" in run.stdout + run.stderr
    # Each retry waits what the answer's `retry-after-ms` asks (without it: about 2, 4, 8, 16 and 32 s).
    assert [e["attempt"] for e in attempts] == [0, 1, 2, 3, 4, 5]
    assert all(e["status"] == 500 and e["retry_after_ms"] == 100 for e in attempts)
    assert all(b["time"] - a["time"] >= 0.1 for a, b in zip(attempts, attempts[1:]))
    (message,) = assistant_messages(box.oc.database)
    error = message["error"]
    assert error["name"] == "APIError"
    assert (error["data"]["statusCode"], error["data"]["isRetryable"]) == (500, True)
    assert json.loads(error["data"]["responseBody"]) == {"error": mockmodel._ERRORS[500]}
    assert "completed" in message["time"] and message["tokens"]["input"] == 0 and message["cost"] == 0
    assert parts(box.oc.database, message["id"]) == []


def test_a_rate_limited_request_is_retried_after_its_retry_after_and_the_turn_completes(tmp_path):
    with sandbox(tmp_path, retry_after=1) as box:
        box.oc.run("[429] rate limited")
        refused, answered = box.entries("429")
    assert (refused["status"], refused["attempt"], refused["retry_after"]) == (429, 0, 1)
    assert (answered["status"], answered["attempt"]) == (200, 1)
    assert answered["time"] - refused["time"] >= 1
    # One assistant message, as if nothing had been refused: no error, the answer's usage.
    (message,) = assistant_messages(box.oc.database)
    assert "error" not in message and message["finish"] == "stop"
    assert message["tokens"]["input"] == answered["usage"]["prompt_tokens"]
    assert message["tokens"]["output"] == answered["usage"]["completion_tokens"]
