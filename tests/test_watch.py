"""`ocsight watch`: spans and metrics over real OTLP to a real receiver, nothing lost, nothing twice."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from corpus import expected_from_log, raw_store, read_log, store_dir
from metric_names import METRIC_NAMES
from ocsight import reading
from ocsight.telemetry import spans as mapping
from ocsight.telemetry.abandoned import abandoned
from ocsight.telemetry.watch import ExportFailed, Sidecar, WatchOptions
from otlp_receiver import Receiver

CORPUS = "opencode-1.18"


def sidecar(store: Path, receiver: Receiver, monkeypatch, proto: str = "grpc", **kw) -> Sidecar:
    port = receiver.grpc_port if proto == "grpc" else receiver.http_port
    scheme = "http://127.0.0.1"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"{scheme}:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
    opts = WatchOptions(read=reading.ReadOptions(data_dirs=(str(store),)), protocol=proto,
                        metric_interval=kw.pop("metric_interval", 3600), **kw)
    return Sidecar(opts)


def backfill_once(store: Path, receiver: Receiver, monkeypatch) -> int:
    """Sends the whole store over gRPC in one cycle and stops (metrics flushed); returns spans sent."""
    receiver.start_grpc()
    s = sidecar(store, receiver, monkeypatch, backfill=True)
    sent = s.cycle()
    s.close()
    return sent


def backfill_with_receiver_down(store: Path, receiver: Receiver, monkeypatch) -> tuple[Sidecar, int]:
    """A backfilling sidecar whose first cycle failed, the receiver being down; and the receiver's
    gRPC port, to start it again on."""
    port = receiver.start_grpc()
    receiver.stop_grpc()
    s = sidecar(store, receiver, monkeypatch, backfill=True)
    with pytest.raises(ExportFailed):
        s.cycle()
    return s, port


def labels(point) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in point.attributes}


def by_name(spans) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in spans:
        out.setdefault(s.name.split(" ")[0], []).append(s)
    return out


def attrs(span) -> dict:
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") != "array_value" else \
            [x.string_value for x in v.array_value.values]
    return out


@pytest.mark.parametrize("proto", ["grpc", "http/protobuf"])
def test_backfill_sends_a_span_per_finished_record(store, receiver, monkeypatch, proto: str):
    receiver.start_grpc() if proto == "grpc" else receiver.start_http()
    s = sidecar(store, receiver, monkeypatch, proto, backfill=True)
    n = s.cycle()
    s.close()
    raw = raw_store(store)
    expected = expected_from_log(read_log(CORPUS))
    got = by_name(receiver.spans())
    assert n == len(receiver.spans())
    assert len(got["chat"]) == len(raw.assistant()) == sum(expected.calls_by_model.values())
    assert len(got["execute_tool"]) == sum(1 for p in raw.parts.values() if p["type"] == "tool")
    assert len(got["invoke_agent"]) == sum(1 for m in raw.messages.values() if m["role"] == "user")


def test_spans_follow_the_genai_conventions(store, receiver, monkeypatch):
    backfill_once(store, receiver, monkeypatch)
    raw = raw_store(store)
    message_of_span = {mapping.span_id(mid).to_bytes(8, "big"): m for mid, m in raw.messages.items()}
    for span in by_name(receiver.spans())["chat"]:
        a = attrs(span)
        m = message_of_span[span.span_id]
        assert a["gen_ai.conversation.id"] == m["sessionID"]
        i, o, r, cr, cw = raw.tokens(m)
        assert span.name == f"chat {m['modelID']}" and span.kind == 3  # CLIENT
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == m["providerID"]
        assert a["gen_ai.usage.input_tokens"] == i + cr + cw  # the conventions count cache inside input
        assert a["gen_ai.usage.output_tokens"] == o + r  # and reasoning inside output
        assert a["gen_ai.usage.cache_read.input_tokens"] == cr
        assert a["gen_ai.usage.reasoning.output_tokens"] == r
        assert a["gen_ai.usage.cost"] == pytest.approx(m["cost"])
        assert span.start_time_unix_nano == m["time"]["created"] * 1_000_000
        if m.get("error"):
            assert a["error.type"] == m["error"]["name"] and span.status.code == 2
    for span in by_name(receiver.spans())["execute_tool"]:
        a = attrs(span)
        assert span.name == f"execute_tool {a['gen_ai.tool.name']}"
        assert a["gen_ai.operation.name"] == "execute_tool"
        assert ("error.type" in a) == (a["ocsight.tool.status"] == "error")
    resource = receiver.resources()[0]
    assert resource["service.name"].string_value == "ocsight" and "host.name" in resource


def test_a_subagent_session_hangs_under_the_task_call_in_its_parents_trace(store, receiver, monkeypatch):
    backfill_once(store, receiver, monkeypatch)
    spans = receiver.spans()
    task = next(sp for sp in spans if sp.name == "execute_tool task")
    child_turns = [sp for sp in spans if sp.name.startswith("invoke_agent") and sp.parent_span_id == task.span_id]
    assert len(child_turns) == 1
    assert child_turns[0].trace_id == task.trace_id
    assert len({sp.trace_id for sp in spans}) == len([x for x in raw_store(store).sessions.values()
                                                      if x["parent"] is None])


def test_a_restart_sends_nothing_twice(store, receiver, monkeypatch):
    sent = backfill_once(store, receiver, monkeypatch)
    again = sidecar(store, receiver, monkeypatch, backfill=True)
    assert again.cycle() == 0
    again.close()
    assert len(receiver.spans()) == sent


def test_the_checkpoint_is_private_to_the_user(store, receiver, monkeypatch):
    old = os.umask(0o022)  # the most common umask: files readable by everyone unless a program says otherwise
    try:
        backfill_once(store, receiver, monkeypatch)
    finally:
        os.umask(old)
    state = Path(os.environ["XDG_STATE_HOME"]) / "ocsight"
    files = list(state.glob("watch-*"))
    assert files and {f.name: f.stat().st_mode & 0o777 for f in files} == {f.name: 0o600 for f in files}
    assert state.stat().st_mode & 0o777 == 0o700


def test_nothing_is_lost_while_the_receiver_is_down(store, receiver, monkeypatch):
    s, port = backfill_with_receiver_down(store, receiver, monkeypatch)
    assert s.checkpoint.count() == 0 and s.failures == 1
    receiver.start_grpc(port)
    sent = s.cycle()
    s.close()
    assert sent == len(receiver.spans()) > 0


def test_without_backfill_only_what_is_new_is_sent(store, receiver, monkeypatch):
    receiver.start_grpc()
    s = sidecar(store, receiver, monkeypatch)
    assert s.cycle() == 0
    s.close()


def test_metrics_carry_the_totals_tagged_by_provider_and_model(store, receiver, monkeypatch, cli):
    receiver.start_grpc()
    s = sidecar(store, receiver, monkeypatch, backfill=True)
    s.baseline_ms = 0  # as if the sidecar had run all along: every call is live, and goes into the histograms
    s.cycle()
    s.close()  # flushes the metrics
    doc = cli("stats", "--json", "--data-dir", str(store)).json()
    (kind, points), *_ = receiver.metric_points("ocsight.tokens")[-1:]
    assert kind == "sum"
    sums: dict[str, int] = {}
    for p in points:
        a = labels(p)
        assert "gen_ai.request.model" in a and "gen_ai.provider.name" in a
        assert not any("session" in k for k in a)  # no unbounded label
        sums[a["gen_ai.token.type"]] = sums.get(a["gen_ai.token.type"], 0) + p.as_int
    assert sums == {k: v for k, v in doc["totals"]["tokens"].items() if k != "total"}
    (kind, points), *_ = receiver.metric_points("gen_ai.client.token.usage")[-1:]
    assert kind == "histogram" and sum(p.count for p in points) == 2 * (
        doc["totals"]["messages"]["assistant"])
    (kind, points), *_ = receiver.metric_points("ocsight.cost.usd")[-1:]
    assert sum(p.as_double for p in points) == pytest.approx(doc["totals"]["cost"]["usd"])


def test_watch_follows_new_records_as_they_arrive(tmp_path, receiver, monkeypatch):
    """OpenCode writing while the sidecar follows: here, a second store's sessions appear."""
    receiver.start_grpc()
    store = tmp_path / "live"
    store.mkdir()
    s = sidecar(store, receiver, monkeypatch, backfill=True, interval=0.2)
    thread = threading.Thread(target=s.follow, daemon=True)
    thread.start()
    time.sleep(0.5)
    shutil.copyfile(store_dir(CORPUS) / "opencode.db", store / "opencode.db")
    deadline = time.monotonic() + 20
    expected = len(raw_store(store_dir(CORPUS)).assistant())
    while time.monotonic() < deadline and len(by_name(receiver.spans()).get("chat", [])) < expected:
        time.sleep(0.1)
    s.stop()
    thread.join(10)
    assert len(by_name(receiver.spans())["chat"]) == expected


def test_watch_once_with_the_collector_down_is_a_one_line_error(store, tmp_path):
    from conftest import run_ocsight
    from harness import free_port

    r = run_ocsight("watch", "--once", "--backfill", "--protocol", "grpc", "--data-dir", str(store),
                    env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
                         "OTEL_EXPORTER_OTLP_TIMEOUT": "1"}, timeout=120)
    assert r.code == 1 and "collector" in r.err.splitlines()[-1] and "Traceback" not in r.err


def test_watch_prices_what_the_prices_file_names_as_reports_do(store, receiver, monkeypatch, tmp_path, cli):
    prices = tmp_path / "prices.toml"
    prices.write_text('[freebie."free-model"]\ninput = 2.0\noutput = 8.0\n')
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.start_grpc()}")
    r = cli("watch", "--once", "--backfill", "--protocol", "grpc", "--prices", str(prices), "--data-dir", str(store))
    assert r.code == 0, r.err
    doc = cli("stats", "--json", "--prices", str(prices), "--data-dir", str(store)).json()
    freebie = next(p["cost"] for p in doc["by_provider"] if p["provider"] == "freebie")
    sent = [attrs(s)["gen_ai.usage.cost"] for s in by_name(receiver.spans())["chat"]
            if attrs(s)["gen_ai.provider.name"] == "freebie"]
    assert freebie["unpriced_messages"] == 0 and freebie["usd"] > 0
    assert sum(sent) == pytest.approx(freebie["usd"])


def test_sigterm_stops_the_sidecar_cleanly_and_a_restart_resends_nothing(store, receiver):
    import os
    import signal
    import subprocess
    import sys

    port = receiver.start_grpc()
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
    cmd = [sys.executable, "-m", "ocsight", "watch", "--backfill", "--protocol", "grpc", "--data-dir", str(store)]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not receiver.spans():
        time.sleep(0.1)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    _out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    sent = len(receiver.spans())
    assert sent > 0 and receiver.metric_points("ocsight.tokens")  # metrics flushed on the way out
    r = subprocess.run([*cmd, "--once"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "sent 0 spans" in r.stderr
    assert len(receiver.spans()) == sent


def test_budgets_from_the_settings_are_sent_as_a_gauge(store, receiver, monkeypatch):
    receiver.start_grpc()
    monkeypatch.setenv("OCSIGHT_BUDGET_DAILY_USD", "5")
    monkeypatch.setenv("OCSIGHT_PROJECT_BUDGETS_MONTHLY_USD", '{"/work/app": 40}')
    from ocsight import settings

    s = sidecar(store, receiver, monkeypatch, budgets=settings.load().budgets())
    s.close()
    (kind, points), *_ = receiver.metric_points("ocsight.budget.usd")[-1:]
    got = {(labels(p)["ocsight.budget.period"], labels(p)["ocsight.project"]): p.as_double for p in points}
    assert kind == "gauge" and got == {("daily", "*"): 5.0, ("monthly", "/work/app"): 40.0}


def test_every_span_hangs_under_the_span_of_the_record_that_caused_it(store, receiver, monkeypatch):
    backfill_once(store, receiver, monkeypatch)
    raw = raw_store(store)
    spans = {int.from_bytes(sp.span_id, "big"): sp for sp in receiver.spans()}
    sid = mapping.span_id
    for m in raw.messages.values():
        if m["role"] == "assistant":
            assert spans[sid(m["id"])].parent_span_id == sid(m["parentID"]).to_bytes(8, "big")
    for p in raw.parts.values():
        if p["type"] == "tool":
            assert spans[sid(p["id"])].parent_span_id == sid(p["messageID"]).to_bytes(8, "big")
    roots = [sp for sp in spans.values() if not sp.parent_span_id]
    assert {sp.name.split()[0] for sp in roots} == {"invoke_agent"}
    assert len(roots) == sum(1 for m in raw.messages.values() if m["role"] == "user"
                             and raw.sessions[m["sessionID"]]["parent"] is None)


def test_a_locked_database_while_following_is_retried_not_fatal(store, receiver, monkeypatch):
    import sqlite3

    receiver.start_grpc()
    monkeypatch.setenv("OCSIGHT_BUSY_TIMEOUT", "0.2")
    s = sidecar(store, receiver, monkeypatch, backfill=True, interval=0.2)
    lock = sqlite3.connect(store / "opencode.db")
    lock.execute("BEGIN EXCLUSIVE")
    thread = threading.Thread(target=s.follow, daemon=True)
    thread.start()
    time.sleep(1.5)
    assert thread.is_alive() and not receiver.spans()
    lock.rollback()
    lock.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(receiver.spans()) < 30:
        time.sleep(0.1)
    s.stop()
    thread.join(10)
    assert len(receiver.spans()) == len({sp.span_id for sp in receiver.spans()}) > 30


def test_sigkill_mid_backfill_then_restart_misses_no_span_and_duplicates_none(tmp_path, receiver):
    import os
    import signal
    import subprocess
    import sys

    import storegen
    from conftest import records, write_store

    store = write_store(storegen.plan_store(seed=77, sessions=120), tmp_path / "big", "db")
    recs = records(store)
    gone = abandoned(recs, int(time.time() * 1000), 600_000)  # the store's history is long over
    expected = {mapping.span_id(s.record) for s in mapping.spans(recs, gone=gone)}
    assert len(expected) > 3 * 512  # several batches
    port = receiver.start_grpc()
    receiver.delay = 0.3
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
    cmd = [sys.executable, "-m", "ocsight", "watch", "--backfill", "--protocol", "grpc", "--data-dir", str(store)]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(receiver.traces) < 2:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    before = {int.from_bytes(s.span_id, "big") for s in receiver.spans()}
    assert 0 < len(before) < len(expected)  # killed mid-backfill
    receiver.delay = 0.0
    r = subprocess.run([*cmd, "--once"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = [int.from_bytes(s.span_id, "big") for s in receiver.spans()]
    assert set(got) == expected  # none missing, none under another ID
    assert len(got) - len(expected) <= 512  # at most the batch in flight at the kill is sent again


@pytest.mark.parametrize("proto", ["grpc", "http/protobuf"])
def test_spans_and_metrics_pass_through_the_real_collector_rotel(store, receiver, rotel, monkeypatch, proto: str):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{rotel[proto]}")
    s = Sidecar(WatchOptions(read=reading.ReadOptions(data_dirs=(str(store),)), protocol=proto, backfill=True,
                             metric_interval=3600))
    sent = s.cycle()
    s.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (len(receiver.spans()) < sent
                                           or not receiver.metric_points("ocsight.tokens")):
        time.sleep(0.1)
    ids = {sp.span_id for sp in receiver.spans()}
    assert len(ids) == sent == len(raw_store(store).assistant()) + sum(
        1 for p in raw_store(store).parts.values() if p["type"] == "tool") + sum(
        1 for m in raw_store(store).messages.values() if m["role"] == "user")
    assert receiver.metric_points("ocsight.tokens")


def test_the_prometheus_endpoint_serves_the_pinned_metric_names_on_localhost(store, receiver, monkeypatch, cli):
    import urllib.request

    from harness import free_port

    receiver.start_grpc()
    port = free_port()
    s = sidecar(store, receiver, monkeypatch, backfill=True, prometheus_port=port, budgets=(("daily", None, 5.0),))
    s.baseline_ms = 0  # every call live, so the histograms have data too
    try:
        s.cycle()
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        s.close()
    assert s.prometheus_server.server_address[0] == "127.0.0.1"
    served = {line.split("{", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert METRIC_NAMES <= served, METRIC_NAMES - served
    doc = cli("stats", "--json", "--data-dir", str(store)).json()
    total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("ocsight_tokens_total{"))
    assert total == doc["totals"]["tokens"]["total"]


def test_a_report_run_between_cycles_does_not_hide_changes_from_the_sidecar(tmp_path, receiver, monkeypatch, cli):
    """The CLI and the sidecar keep separate indexes: one consuming a change cannot hide it from the other."""
    import storegen

    plan = storegen.plan_store(seed=9, sessions=6)
    ids = [s["id"] for s in plan.sessions]
    store = tmp_path / "s"
    storegen.write_sqlite(plan, store / "opencode.db", session_ids=set(ids[:3]))
    receiver.start_grpc()
    s = sidecar(store, receiver, monkeypatch, backfill=True)
    s.cycle()
    first = len(receiver.spans())
    storegen.write_sqlite(plan, store / "opencode.db", session_ids=set(ids[3:]))
    cli("stats", "--json", "--data-dir", str(store)).json()  # a report refreshes its own index
    s.cycle()
    s.close()
    assert len(receiver.spans()) > first
    assert len({sp.span_id for sp in receiver.spans()}) == len(receiver.spans())


def test_backfilled_history_is_counted_but_not_put_in_the_histograms(store, receiver, monkeypatch):
    backfill_once(store, receiver, monkeypatch)
    assert receiver.metric_points("ocsight.tokens")
    assert all(sum(p.count for p in points) == 0
               for _kind, points in receiver.metric_points("gen_ai.client.token.usage"))


def test_a_half_written_record_is_skipped_then_sent_once_complete(tmp_path, receiver, monkeypatch):
    """OpenCode 1.1 writes JSON files: one caught mid-write is counted as skipped, not sent, and
    sent once whole; a corrupt file beside it never stops the sidecar."""
    import json

    store = tmp_path / "legacy"
    shutil.copytree(store_dir("opencode-1.1"), store)
    receiver.start_grpc()
    s = sidecar(store, receiver, monkeypatch, backfill=True)
    s.cycle()
    before = len(receiver.spans())
    source = next(p for p in sorted((store / "storage" / "message").glob("*/*.json"))
                  if json.loads(p.read_text())["role"] == "assistant" and json.loads(p.read_text()).get("time", {})
                  .get("completed"))
    message = json.loads(source.read_text())
    message["id"] = "msg_zzz_half_written"
    target = source.with_name("msg_zzz_half_written.json")
    text = json.dumps(message, indent=2)
    target.write_text(text[: len(text) // 2])
    (source.parent / "junk.json").write_text("{not json")
    assert s.cycle() == 0
    assert s.skipped >= 2 and len(receiver.spans()) == before
    target.write_text(text)
    assert s.cycle() == 1
    s.close()
    names = [sp.name for sp in receiver.spans()[before:]]
    assert names == [f"chat {message['modelID']}"]


def test_the_sidecar_caps_sqlites_memory_while_it_runs_and_gives_the_cap_back(store, receiver, monkeypatch):
    import sqlite3

    from ocsight.telemetry.watch import SQLITE_SOFT_HEAP

    def soft_heap_limit() -> int:
        con = sqlite3.connect(":memory:")
        try:
            return con.execute("PRAGMA soft_heap_limit").fetchone()[0]
        finally:
            con.close()

    before = soft_heap_limit()
    receiver.start_grpc()
    s = sidecar(store, receiver, monkeypatch, backfill=True)
    assert soft_heap_limit() == SQLITE_SOFT_HEAP
    s.cycle()
    s.close()
    assert soft_heap_limit() == before


def test_the_sidecar_keeps_its_memory_flat_by_staging_through_files(store, receiver, monkeypatch):
    s = sidecar(store, receiver, monkeypatch)
    try:
        with reading.open_index(s.opts.read) as idx:
            assert idx.con.execute("PRAGMA temp_store").fetchone()[0] == 1  # FILE
    finally:
        s.close()
