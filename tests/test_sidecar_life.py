"""`ocsight watch` as it runs for weeks next to OpenCode: quiet when idle, abandoned turns reported,
a prompt stop, no orphan spans, a data directory that appears later, visible skips, private files.

Each test drives the real `ocsight watch` process against real SQLite stores and the real OTLP
receiver of `otlp_receiver`.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import storegen
from corpus import NAMES, store_dir
from storegen import Builder, tokens

NOW_MS = int(time.time() * 1000)


class Watch:
    """A running `ocsight watch -v` (without `-v`: as a user runs it), its stderr in a file (read as it
    grows)."""

    def __init__(self, tmp: Path, port: int, *args: str, env: dict[str, str] | None = None,
                 verbose: bool = True) -> None:
        self.log = tmp / f"watch-{time.monotonic_ns()}.log"
        self.err = self.log.open("w")
        self.env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                    "OTEL_EXPORTER_OTLP_TIMEOUT": "5", **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "ocsight", "watch", *(["-v"] if verbose else []),
                                      "--protocol", "grpc",
                                      "--interval", "0.5", *args], env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=self.err)

    def text(self) -> str:
        return self.log.read_text()

    def cycles(self) -> int:
        return sum(1 for line in self.text().splitlines() if line.startswith("ocsight watch: cycle "))

    def wait_for(self, what, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert self.proc.poll() is None, self.text()
            assert time.monotonic() < deadline, f"timed out; stderr:\n{self.text()}"
            time.sleep(0.05)

    def stop(self, timeout: float = 30, sig: int = signal.SIGTERM) -> float:
        """SIGTERM (or `sig`); the seconds until the process ended."""
        t = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(timeout)
        self.err.close()
        return time.monotonic() - t

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.err.close()


@pytest.fixture
def watches():
    started: list[Watch] = []
    yield started
    for w in started:
        w.kill()


def attrs(span) -> dict:
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value"))
    return out


def interrupted_store(root: Path, updated_ms: int, turns_before: int = 1) -> tuple[Path, dict]:
    """A database whose last turn was cut off mid-stream: its answer has no completion time and its
    last write at `updated_ms`, after `turns_before` finished turns; returns (store, that answer)."""
    b = Builder()
    project = b.project("/home/dev/shop")
    session = b.session(project, at=updated_ms - 60_000)
    at = updated_ms - 50_000
    for _ in range(turns_before):
        u = b.user(session, at)
        b.assistant(session, at + 10, tokens(input=100, output=20), cost=0.01, parentID=u["id"])
        at += 5_000
    u = b.user(session, at)
    cut = b.assistant(session, at + 10, tokens(input=300, output=7), cost=0.02, completed=False, step=False,
                      parentID=u["id"])
    store = root / "store"
    storegen.write_sqlite(b.plan, store / "opencode.db")
    con = sqlite3.connect(store / "opencode.db")
    with con:
        con.execute("UPDATE message SET time_updated = ? WHERE id = ?", (updated_ms, cut["id"]))
    con.close()
    return store, cut


def leave_wal_behind(db: Path) -> None:
    """A writer killed with its transaction committed but not checkpointed: `-wal` and `-shm` stay."""
    code = ("import os, signal, sqlite3, sys\n"
            "con = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "con.execute('PRAGMA journal_mode=WAL')\n"
            "con.execute('UPDATE project SET time_updated = time_updated + 1')\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", code, str(db)], timeout=30)
    assert Path(f"{db}-wal").exists() and Path(f"{db}-shm").exists()


# -- quiet when idle ------------------------------------------------------------------------------------


def assert_idle(w: Watch, receiver) -> None:
    """Once its first cycle sent the history, no cycle runs over eight watch intervals, and the
    watcher's own "changes detected" lines stay off stderr."""
    w.wait_for(lambda: w.cycles() >= 1 and receiver.spans())
    time.sleep(1.0)
    settled = w.cycles()
    time.sleep(4.0)
    assert w.cycles() == settled
    assert "changes detected" not in w.text()


def test_an_idle_sidecar_runs_no_cycle_with_an_interrupted_turn_and_a_killed_writers_wal(tmp_path, receiver,
                                                                                         watches):
    store, _cut = interrupted_store(tmp_path, NOW_MS)  # in progress: re-read at every cycle
    leave_wal_behind(store / "opencode.db")
    w = Watch(tmp_path, receiver.start_grpc(), "--backfill", "--data-dir", str(store))
    watches.append(w)
    assert_idle(w, receiver)


def test_a_write_by_opencode_wakes_an_idle_sidecar(tmp_path, receiver, watches):
    store, cut = interrupted_store(tmp_path, NOW_MS)
    w = Watch(tmp_path, receiver.start_grpc(), "--backfill", "--data-dir", str(store))
    watches.append(w)
    w.wait_for(lambda: w.cycles() >= 1 and receiver.spans())
    time.sleep(1.0)
    settled = w.cycles()
    _complete(store / "opencode.db", cut["id"])
    w.wait_for(lambda: any(s.name == "chat claude-sonnet-4-5" and s.span_id == _span_id(cut["id"])
                           for s in receiver.spans()))
    w.wait_for(lambda: w.cycles() > settled)  # said once the cycle is over, after its spans went out


def test_a_write_to_a_database_opencode_db_names_wakes_the_sidecar(tmp_path, receiver, watches):
    store, cut = interrupted_store(tmp_path, NOW_MS)
    db = store / "work.db"
    (store / "opencode.db").rename(db)
    w = Watch(tmp_path, receiver.start_grpc(), "--backfill", "--data-dir", str(store), env={"OPENCODE_DB": "work.db"})
    watches.append(w)
    w.wait_for(lambda: w.cycles() >= 1 and receiver.spans())
    _complete(db, cut["id"])
    w.wait_for(lambda: _span_id(cut["id"]) in {s.span_id for s in receiver.spans()}, timeout=15)


def _complete(db: Path, message_id: str) -> None:
    """OpenCode finishing a cut-off answer: its completion time written, as a later write does."""
    con = sqlite3.connect(db)
    data = json.loads(con.execute("SELECT data FROM message WHERE id = ?", (message_id,)).fetchone()[0])
    data["time"]["completed"] = NOW_MS + 1
    with con:
        con.execute("UPDATE message SET data = ?, time_updated = ? WHERE id = ?",
                    (json.dumps(data), NOW_MS + 1, message_id))
    con.close()


def _span_id(record: str) -> bytes:
    from ocsight.telemetry.spans import span_id

    return span_id(record).to_bytes(8, "big")


# -- abandoned turns ------------------------------------------------------------------------------------


def test_an_answer_cut_off_long_ago_is_sent_as_an_interrupted_call_under_its_turn(tmp_path, receiver):
    store, cut = interrupted_store(tmp_path, NOW_MS - 3_600_000)
    w = Watch(tmp_path, receiver.start_grpc(), "--backfill", "--once", "--data-dir", str(store))
    assert w.proc.wait(60) == 0, w.text()
    spans = {s.span_id: s for s in receiver.spans()}
    chat = spans[_span_id(cut["id"])]
    turn = spans[chat.parent_span_id]
    assert (attrs(chat)["error.type"], attrs(turn)["error.type"]) == ("interrupted", "interrupted")
    assert turn.name == "invoke_agent build" and attrs(chat)["gen_ai.usage.input_tokens"] == 300


def test_an_answer_in_progress_is_sent_once_it_has_not_changed_for_the_abandon_time(tmp_path, receiver, watches):
    store, cut = interrupted_store(tmp_path, int(time.time() * 1000))
    w = Watch(tmp_path, receiver.start_grpc(), "--backfill", "--data-dir", str(store),
              env={"OCSIGHT_ABANDON_AFTER_SECONDS": "3"})
    watches.append(w)
    w.wait_for(lambda: w.cycles() >= 1 and receiver.spans())
    assert _span_id(cut["id"]) not in {s.span_id for s in receiver.spans()}  # still in progress
    w.wait_for(lambda: _span_id(cut["id"]) in {s.span_id for s in receiver.spans()}, timeout=15)


@pytest.mark.parametrize("name", [*NAMES, "generated"])
def test_chat_spans_and_metrics_agree_on_calls_tokens_and_cost(tmp_path, receiver, name: str):
    if name == "generated":
        store = tmp_path / "generated"
        storegen.write_sqlite(storegen.plan_store(seed=5, sessions=40), store / "opencode.db")
    else:
        store = store_dir(name)
    w = Watch(tmp_path, receiver.start_grpc(), "--backfill", "--once", "--data-dir", str(store))
    assert w.proc.wait(120) == 0, w.text()
    chats = [attrs(s) for s in receiver.spans() if s.name.startswith("chat ")]
    (_, calls), *_ = receiver.metric_points("ocsight.model.calls")[-1:]
    (_, toks), *_ = receiver.metric_points("ocsight.tokens")[-1:]
    (_, cost), *_ = receiver.metric_points("ocsight.cost.usd")[-1:]
    by_type: dict[str, int] = {}
    for p in toks:
        kind = next(kv.value.string_value for kv in p.attributes if kv.key == "gen_ai.token.type")
        by_type[kind] = by_type.get(kind, 0) + p.as_int
    assert len(chats) == sum(p.as_int for p in calls)
    assert sum(a["gen_ai.usage.input_tokens"] for a in chats) == sum(
        by_type.get(k, 0) for k in ("input", "cache_read", "cache_write"))
    assert sum(a["gen_ai.usage.output_tokens"] for a in chats) == by_type.get("output", 0) + by_type.get(
        "reasoning", 0)
    assert sum(a["gen_ai.usage.cost"] for a in chats) == pytest.approx(sum(p.as_double for p in cost), abs=1e-9)


# -- a prompt stop ------------------------------------------------------------------------------------


def _big_store(tmp_path: Path) -> Path:
    store = tmp_path / "big"
    storegen.write_sqlite(storegen.plan_store(seed=77, sessions=120), store / "opencode.db")
    return store


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_mid_backfill_with_the_receiver_down_ends_the_process_promptly(tmp_path, watches, sig):
    from harness import free_port

    w = Watch(tmp_path, free_port(), "--backfill", "--data-dir", str(_big_store(tmp_path)))
    watches.append(w)
    w.wait_for(lambda: "trying again" in w.text(), timeout=60)
    assert w.stop(sig=sig) < 4.0 and w.proc.returncode == 0
    assert "Traceback" not in w.text()


def test_sigterm_mid_backfill_ends_promptly_and_the_next_start_sends_the_rest(tmp_path, receiver, watches):
    store = _big_store(tmp_path)
    port = receiver.start_grpc()
    receiver.delay = 0.5  # a slow collector: each request takes half a second
    w = Watch(tmp_path, port, "--backfill", "--data-dir", str(store))
    watches.append(w)
    w.wait_for(lambda: len(receiver.traces) >= 1, timeout=60)
    assert w.stop() < 4.0 and w.proc.returncode == 0
    sent = {s.span_id for s in receiver.spans()}
    receiver.delay = 0.0
    again = Watch(tmp_path, port, "--backfill", "--once", "--data-dir", str(store))
    assert again.proc.wait(120) == 0, again.text()
    from conftest import records
    from ocsight.telemetry.abandoned import abandoned
    from ocsight.telemetry.spans import spans

    recs = records(store)
    expected = {s.span_id.to_bytes(8, "big") for s in spans(recs, gone=abandoned(recs, NOW_MS, 600_000))}
    got = [s.span_id for s in receiver.spans()]
    assert sent < expected and set(got) == expected
    assert len(got) - len(expected) <= 512  # at most the request in flight at the stop, sent again


# -- no orphans, a directory that appears later ---------------------------------------------------------


def test_a_turn_in_progress_at_the_first_start_is_never_sent_in_part(tmp_path, receiver, watches):
    b = Builder()
    project = b.project("/home/dev/shop")
    session = b.session(project, at=NOW_MS - 20_000)
    u = b.user(session, NOW_MS - 10_000)
    first = b.assistant(session, NOW_MS - 9_000, tokens(input=50, output=5), parentID=u["id"], finish="tool-calls")
    b.tool(first, "bash", status="running")
    store = tmp_path / "store"
    storegen.write_sqlite(b.plan, store / "opencode.db")
    w = Watch(tmp_path, receiver.start_grpc(), "--data-dir", str(store))  # no backfill: only what is new
    watches.append(w)
    w.wait_for(lambda: w.cycles() >= 1)
    later = Builder(storegen.Plan(projects=[project], sessions=[]))
    later.ids = b.ids
    at = int(time.time() * 1000)
    second = later.assistant(session, at, tokens(input=80, output=9), parentID=u["id"])  # the turn ends
    u2 = later.user(session, at + 100)
    third = later.assistant(session, at + 200, tokens(input=90, output=9), parentID=u2["id"])  # a new turn
    storegen.write_sqlite(later.plan, store / "opencode.db")
    w.wait_for(lambda: _span_id(third["id"]) in {s.span_id for s in receiver.spans()})
    time.sleep(1.0)
    got = {s.span_id: s for s in receiver.spans()}
    assert _span_id(second["id"]) not in got and _span_id(u["id"]) not in got and _span_id(u2["id"]) in got
    assert all(not s.parent_span_id or s.parent_span_id in got for s in got.values())  # no orphan


def test_a_data_directory_that_appears_later_is_watched_from_then_on(tmp_path, receiver, watches):
    data = tmp_path / "not-yet"
    w = Watch(tmp_path, receiver.start_grpc(), "--backfill", "--data-dir", str(data))
    watches.append(w)
    w.wait_for(lambda: w.cycles() >= 1)
    time.sleep(1.0)
    data.mkdir()
    import shutil

    shutil.copyfile(store_dir("opencode-1.18") / "opencode.db", data / "opencode.db")
    w.wait_for(lambda: any(s.name.startswith("chat ") for s in receiver.spans()), timeout=20)


# -- visible skips, private files ---------------------------------------------------------------------


def test_each_new_kind_of_skip_is_one_stderr_line_with_an_example(tmp_path, receiver):
    b = Builder()
    project = b.project("/home/dev/shop")
    session = b.session(project)
    u = b.user(session, storegen.BASE_MS + 1000)
    m = b.assistant(session, storegen.BASE_MS + 2000, tokens(input=10, output=1), parentID=u["id"])
    for _ in range(2):
        b.part(m, {"type": "tool", "tool": 42, "state": {"status": "completed"}})
    store = tmp_path / "store"
    storegen.write_sqlite(b.plan, store / "opencode.db")
    w = Watch(tmp_path, receiver.start_grpc(), "--backfill", "--once", "--data-dir", str(store))
    assert w.proc.wait(60) == 0
    lines = [ln for ln in w.text().splitlines() if "skipped" in ln]
    assert len(lines) == 1 and "2 records: tool part of the wrong shape (for example index tool_call:prt_" in lines[0]


def test_files_ocsight_wrote_before_are_made_private_at_start(tmp_path, receiver):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "state")}
    old = tmp_path / "cache" / "ocsight" / "index-0000.sqlite"
    old.parent.mkdir(parents=True)
    old.write_text("")
    for p in (old.parent, old):
        p.chmod(0o755 if p.is_dir() else 0o644)
    w = Watch(tmp_path, receiver.start_grpc(), "--backfill", "--once", "--data-dir", str(store_dir("opencode-1.18")),
              env=env)
    assert w.proc.wait(60) == 0, w.text()
    modes = {p: p.stat().st_mode & 0o777 for root in (tmp_path / "cache" / "ocsight", tmp_path / "state" / "ocsight")
             for p in [root, *root.rglob("*")]}
    assert modes[old] == 0o600 and {m for p, m in modes.items() if p.is_dir()} == {0o700}
    assert {m for p, m in modes.items() if p.is_file()} == {0o600}


# -- against the real OpenCode, killed mid-stream ---------------------------------------------------------


@pytest.fixture
def killed_opencode(tmp_path: Path):
    """The data directory of the real OpenCode 1.18.33 after one finished turn and one killed while the
    model streamed (`mockmodel`'s `[stall]`): an answer without completion time, its `-wal` and
    `-shm` left beside the database; and the interrupted session's ID."""
    import harness
    import mockmodel

    log = tmp_path / "requests.jsonl"
    log.touch()
    with mockmodel.MockModel(log) as mock:
        oc = harness.OpenCode(harness.VERSIONS["1.18"], tmp_path / "sandbox", mock.url)
        oc.run("say hello")
        session = oc.interrupted_turn(mock, "[stall] write a long story")
    db = oc.data_dir / "opencode.db"
    assert Path(f"{db}-wal").exists() and Path(f"{db}-shm").exists()
    return oc.data_dir, session


@pytest.mark.e2e
def test_an_idle_sidecar_next_to_an_opencode_killed_mid_stream_runs_no_cycle(tmp_path, receiver, watches,
                                                                            killed_opencode):
    data, _session = killed_opencode
    w = Watch(tmp_path, receiver.start_grpc(), "--backfill", "--data-dir", str(data))
    watches.append(w)
    assert_idle(w, receiver)


@pytest.mark.e2e
def test_a_turn_opencode_was_killed_in_is_sent_as_interrupted_once_abandoned(tmp_path, receiver, watches,
                                                                             killed_opencode):
    data, session = killed_opencode
    w = Watch(tmp_path, receiver.start_grpc(), "--backfill", "--data-dir", str(data),
              env={"OCSIGHT_ABANDON_AFTER_SECONDS": "2"})
    watches.append(w)

    def interrupted() -> list:
        return [s for s in receiver.spans() if attrs(s).get("error.type") == "interrupted"
                and attrs(s).get("gen_ai.conversation.id") == session]

    w.wait_for(lambda: len(interrupted()) == 2, timeout=20)  # its model call and its turn
    by_id = {s.span_id: s for s in receiver.spans()}
    chat = next(s for s in interrupted() if s.name.startswith("chat "))
    assert by_id[chat.parent_span_id].name.startswith("invoke_agent ")
    traces = {s.trace_id for s in receiver.spans()}
    assert len(traces) == 2  # both sessions have their trace


# -- what it says -----------------------------------------------------------------------------------------


def test_at_start_the_sidecar_says_what_it_follows_and_where_it_sends(tmp_path, receiver, watches):
    store = store_dir("opencode-1.18")
    port = receiver.start_grpc()
    w = Watch(tmp_path, port, "--data-dir", str(store))
    watches.append(w)
    w.wait_for(lambda: "following" in w.text())
    first = w.text().splitlines()[0]
    assert str(store.resolve()) in first and f"http://127.0.0.1:{port}" in first and "grpc" in first


def test_a_repeated_once_backfill_says_the_history_was_sent_before(tmp_path, receiver):
    port = receiver.start_grpc()
    args = ("--backfill", "--once", "--data-dir", str(store_dir("opencode-1.18")))
    first = Watch(tmp_path, port, *args)
    assert first.proc.wait(60) == 0
    sent = len(receiver.spans())
    again = Watch(tmp_path, port, *args)
    assert again.proc.wait(60) == 0
    assert again.text().strip().splitlines()[-1] == (
        f"sent 0 spans to http://127.0.0.1:{port} ({sent:,} sent before)")


def test_with_the_collector_down_the_error_names_the_endpoint_in_one_line(tmp_path):
    from harness import free_port

    port = free_port()
    w = Watch(tmp_path, port, "--backfill", "--once", "--data-dir", str(store_dir("opencode-1.18")),
              env={"OTEL_EXPORTER_OTLP_TIMEOUT": "1"}, verbose=False)
    assert w.proc.wait(60) == 1
    lines = w.text().strip().splitlines()
    assert len(lines) <= 2 and f"http://127.0.0.1:{port} did not acknowledge" in lines[-1]
    assert "Traceback" not in w.text() and "Transient error" not in w.text()
