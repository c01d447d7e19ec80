"""The real OpenCode, live: a scenario recorded afresh in every `make test`, to catch drift.

The recorded corpora pin what OpenCode 1.18.33 wrote once; this test has the binary write it again
(installed from npm on first use) and checks that the store has the shape the corpora have and that
ocsight reads it exactly, against the mock model's log.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import harness
import mockmodel
from conftest import stats
from corpus import CORPORA, expected_from_log

pytestmark = pytest.mark.e2e

VERSION = harness.VERSIONS["1.18"]
SCRIPT = [("[bash] live", "mock/mock-small"), ("[task] live", None), ("[error] live", None)]


def schema(db: Path) -> dict[str, list[str]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    out = {t: [c[1] for c in con.execute(f"PRAGMA table_info({t})")] for t in tables}
    con.close()
    return out


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("live-opencode")
    log = root / "requests.jsonl"
    log.touch()
    with mockmodel.MockModel(log) as mock:
        oc = harness.OpenCode(VERSION, root / "sandbox", mock.url)
        for prompt, model in SCRIPT:
            oc.run(prompt, model)
        with oc.serve() as server:
            session = server.new_session()
            server.prompt(session, "[reason] live over the API", "freebie/free-model")
    oc.copy_store(root / "store")
    return root / "store", mockmodel.read_log(log)


def test_opencode_writes_the_schema_the_recorded_corpus_has(live):
    store, _log = live
    assert schema(store / "opencode.db") == schema(CORPORA / "opencode-1.18" / "store" / "opencode.db")


def test_ocsight_reads_a_live_store_exactly(cli, live):
    store, log = live
    expected = expected_from_log(log)
    doc = stats(cli, "--data-dir", str(store))
    keys = ("input", "output", "reasoning", "cache_read", "cache_write")
    assert [doc["totals"]["tokens"][k] for k in keys] == [sum(t[i] for t in expected.tokens) for i in range(5)]
    assert doc["totals"]["messages"]["assistant"] == sum(expected.calls_by_model.values())
    assert doc["totals"]["messages"]["errors"] == expected.errors == 1
    assert doc["totals"]["subagent_sessions"] == expected.subagents == 1
    assert {t["tool"]: t["calls"] for t in doc["by_tool"]} == dict(expected.tool_calls)
    assert doc["source"]["skipped"]["total"] == 0


def test_watch_follows_the_real_opencode_as_it_writes(tmp_path, monkeypatch):
    """The sidecar follows a sandboxed OpenCode; each finished call reaches the receiver once."""
    import threading
    import time

    from ocsight import reading
    from ocsight.telemetry.watch import Sidecar, WatchOptions
    from otlp_receiver import Receiver

    receiver = Receiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.start_grpc()}")
    log = tmp_path / "requests.jsonl"
    log.touch()
    try:
        with mockmodel.MockModel(log) as mock:
            oc = harness.OpenCode(VERSION, tmp_path / "sandbox", mock.url)
            oc.run("hello before the sidecar")  # history: not sent without --backfill
            time.sleep(0.05)
            data = oc.data_dir
            sidecar = Sidecar(WatchOptions(read=reading.ReadOptions(data_dirs=(str(data),)), protocol="grpc",
                                           interval=0.5, metric_interval=3600))
            thread = threading.Thread(target=sidecar.follow, daemon=True)
            thread.start()
            before = len(mockmodel.read_log(log))
            oc.run("[bash] while watched", "mock/mock-small")
            oc.run("[task] while watched")
            calls = [e for e in mockmodel.read_log(log)[before:] if e["scenario"] != "title"]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                chats = [s for s in receiver.spans() if s.name.startswith("chat ")]
                if len(chats) >= len(calls):
                    break
                time.sleep(0.1)
            time.sleep(1.0)  # anything sent twice would arrive by now
            sidecar.stop()
            thread.join(15)
    finally:
        receiver.stop()
    spans = receiver.spans()
    chats = [s for s in spans if s.name.startswith("chat ")]
    assert len(chats) == len(calls)
    assert len({s.span_id for s in spans}) == len(spans)  # none twice
    assert any(s.name == "execute_tool bash" for s in spans) and any(s.name == "execute_tool task" for s in spans)
    tokens = sorted(next(kv.value.int_value for kv in s.attributes if kv.key == "gen_ai.usage.input_tokens")
                    for s in chats)
    assert tokens == sorted(e["usage"]["prompt_tokens"] for e in calls)  # cache included, as the conventions say
