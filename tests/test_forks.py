"""Forked sessions (OpenCode 1.19's `run --fork`, the TUI's fork): the copies a fork made count once.

The `opencode-1.19` corpus holds a session, a fork of it with a turn of its own, and a fork of that
fork with a turn of its own, as the real OpenCode 1.19.5 wrote them. Independent accounts: the mock
model's log (each model call once, as the provider billed it), the raw store read with its own rule
for copies (`corpus.fork_copies`), and OpenCode's own per-session rollups (which count copies again).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

import harness
from conftest import stats
from corpus import CORPORA, FORKED, expected_from_log, raw_store, read_log, store_dir
from ocsight.model import PICO
from otlp_receiver import Receiver
from test_watch import by_name, labels, sidecar

TOKEN_KEYS = ("input", "output", "reasoning", "cache_read", "cache_write")
MANIFEST = json.loads((CORPORA / FORKED / "manifest.json").read_text())["forks"]
FORKED_PROMPT = MANIFEST["of"]  # what the session the first fork was made of asked
FORK_PROMPTS = tuple(prompt for prompt, _model in MANIFEST["turns"])  # the fork's turn, then its fork's


@pytest.fixture
def forked(tmp_path: Path) -> Path:
    """A copy of the store with forks, free to change."""
    target = tmp_path / "forked"
    shutil.copytree(store_dir(FORKED), target)
    return target


def sessions_asking(store: Path, prompt: str) -> list[str]:
    """The sessions holding a user message that asked `prompt` (copies too), oldest first."""
    with closing(sqlite3.connect(f"file:{store / 'opencode.db'}?mode=ro", uri=True)) as con:
        return [r[0] for r in con.execute(
            "SELECT DISTINCT p.session_id FROM part p JOIN session s ON s.id = p.session_id "
            "WHERE json_extract(p.data, '$.type') = 'text' AND json_extract(p.data, '$.text') IN (?1, json_quote(?1)) "
            "ORDER BY s.time_created", (prompt,))]


def the_source(store: Path) -> str:
    """The session the first fork was made of: the oldest holding the forked prompt."""
    return sessions_asking(store, FORKED_PROMPT)[0]


def opencode_rollups(store: Path) -> dict[str, float]:
    """OpenCode's own totals: its per-session cost and token columns, summed (they count copies again)."""
    with closing(sqlite3.connect(f"file:{store / 'opencode.db'}?mode=ro", uri=True)) as con:
        row = con.execute("SELECT sum(cost), sum(tokens_input), sum(tokens_output), sum(tokens_reasoning), "
                          "sum(tokens_cache_read), sum(tokens_cache_write) FROM session").fetchone()
    return dict(zip(("cost", *TOKEN_KEYS), row))


def totals_of(doc: dict) -> dict[str, float]:
    t = doc["totals"]
    return {"cost": t["cost"]["stored_usd"], **{k: t["tokens"][k] for k in TOKEN_KEYS}}


def raw_totals(store: Path, counted: bool = False) -> dict[str, float]:
    raw = raw_store(store, fork_copies_counted=counted)
    out: dict[str, float] = {"cost": sum(m["cost"] for m in raw.assistant())}
    for i, k in enumerate(TOKEN_KEYS):
        out[k] = sum(raw.tokens(m)[i] for m in raw.assistant())
    return out


def delete_session_with_opencode(store: Path, session_id: str, root: Path) -> None:
    """`opencode session delete` of the real OpenCode 1.19.5 on the store (its database in a sandbox)."""
    oc = harness.OpenCode(harness.VERSIONS["1.19"], root, "http://127.0.0.1:9/v1")
    oc.data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(store / "opencode.db", oc.database)
    cwd = oc.workdir()
    p = subprocess.run([str(oc.binary), "session", "delete", session_id], cwd=cwd, env={**oc.env, "PWD": str(cwd)},
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    oc.copy_store(store)  # the database with its WAL folded in, over the old one


def test_stats_counts_fork_copies_once_and_reports_how_many_were_set_aside(cli, forked):
    doc = stats(cli, "--data-dir", str(forked))
    raw, expected = raw_store(forked), expected_from_log(read_log(FORKED))
    # the fork copied the source's three messages; the fork of the fork those three and the fork's two
    assert doc["source"]["fork_copies"] == len(raw.copies) == 8
    assert doc["source"]["fork_copies_counted"] is False
    assert [doc["totals"]["tokens"][k] for k in TOKEN_KEYS] == [sum(t[i] for t in expected.tokens) for i in range(5)]
    assert totals_of(doc) == pytest.approx(raw_totals(forked), abs=1e-9)
    assert doc["totals"]["messages"]["user"] == sum(m["role"] == "user" for m in raw.messages.values())
    assert doc["totals"]["messages"]["assistant"] == sum(expected.calls_by_model.values())


def test_include_fork_copies_counts_them_again_as_opencode_does(cli, forked):
    doc = stats(cli, "--data-dir", str(forked), "--include-fork-copies")
    assert doc["source"]["fork_copies"] == 8 and doc["source"]["fork_copies_counted"] is True
    assert totals_of(doc) == pytest.approx(opencode_rollups(forked), abs=1e-9)
    assert totals_of(doc) == pytest.approx(raw_totals(forked, counted=True), abs=1e-9)
    assert totals_of(doc)["cost"] > totals_of(stats(cli, "--data-dir", str(forked)))["cost"]


def test_the_include_fork_copies_setting_counts_them_as_the_flag_does(cli, forked, monkeypatch):
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "ocsight" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("include_fork_copies = true\n")
    by_file = stats(cli, "--data-dir", str(forked))
    config.unlink()
    monkeypatch.setenv("OCSIGHT_INCLUDE_FORK_COPIES", "true")
    by_env = stats(cli, "--data-dir", str(forked))
    monkeypatch.delenv("OCSIGHT_INCLUDE_FORK_COPIES")
    by_flag = stats(cli, "--data-dir", str(forked), "--include-fork-copies")
    assert by_file["source"]["fork_copies_counted"] is by_env["source"]["fork_copies_counted"] is True
    assert totals_of(by_file) == totals_of(by_env) == totals_of(by_flag)


def test_a_fork_shows_its_own_spend_and_its_source_keeps_the_copied_spend(cli, forked):
    doc = cli("session", "--json", "--limit", "100", "--data-dir", str(forked)).json()
    by_id = {s["id"]: s for s in doc["sessions"]}
    log = read_log(FORKED)
    for prompt in FORK_PROMPTS:
        own = [e for e in log if e.get("prompt") == prompt and e["scenario"] != "title"]
        fork = sessions_asking(forked, prompt)[0]  # the fork that asked it (the fork of the fork copies it)
        assert by_id[fork]["messages"] == len(own)
        assert by_id[fork]["tokens"]["input"] == sum(e["usage"]["prompt_tokens"] - e["usage"]["cached_tokens"]
                                                     for e in own)
    source = the_source(forked)
    asked = [e for e in log if e.get("prompt") == FORKED_PROMPT and e["scenario"] != "title"]
    assert by_id[source]["messages"] == len(asked)


def test_session_json_says_how_many_of_each_forks_messages_are_copies(cli, forked):
    doc = cli("session", "--json", "--limit", "100", "--data-dir", str(forked)).json()
    by_id = {s["id"]: s for s in doc["sessions"]}
    fork, fork_of_fork = (sessions_asking(forked, prompt)[0] for prompt in FORK_PROMPTS)
    # the fork copied the source's three messages; the fork of the fork those three and the fork's two
    assert (by_id[fork]["fork_copies"], by_id[fork_of_fork]["fork_copies"]) == (3, 5)
    assert by_id[the_source(forked)]["fork_copies"] == 0
    assert sum(s["fork_copies"] for s in doc["sessions"]) == stats(cli, "--data-dir", str(forked))["source"]["fork_copies"]
    assert doc["fork_copies_counted"] is False
    again = cli("session", "--json", "--limit", "100", "--include-fork-copies", "--data-dir", str(forked)).json()
    assert again["fork_copies_counted"] is True
    assert {s["id"]: s["fork_copies"] for s in again["sessions"]} == {s["id"]: s["fork_copies"] for s in doc["sessions"]}


def test_the_session_tree_says_a_forks_copies_were_set_aside_or_counted_again(cli, forked):
    fork = sessions_asking(forked, FORK_PROMPTS[0])[0]
    aside = " ".join(cli("session", fork, "--data-dir", str(forked)).out.split())
    assert "1 call," in aside and "fork copies: 3 messages, set aside" in aside
    again = " ".join(cli("session", fork, "--include-fork-copies", "--data-dir", str(forked)).out.split())
    assert "fork copies: 3 messages, counted again" in again
    assert "fork copies" not in cli("session", "--data-dir", str(store_dir("opencode-1.18"))).out


def test_a_fork_with_no_call_of_its_own_says_its_messages_are_copies(cli, forked):
    fork = sessions_asking(forked, FORK_PROMPTS[0])[0]
    copies = raw_store(forked).copies
    with closing(sqlite3.connect(forked / "opencode.db")) as con, con:
        own = [r[0] for r in con.execute("SELECT id FROM message WHERE session_id = ?", (fork,)) if r[0] not in copies]
        con.executemany("DELETE FROM part WHERE message_id = ?", [(m,) for m in own])
        con.executemany("DELETE FROM message WHERE id = ?", [(m,) for m in own])
    r = cli("session", fork, "--data-dir", str(forked))
    assert r.code == 1
    assert r.err.strip() == (f"ocsight: error: session {fork!r} has no model calls of its own: its 3 messages are "
                             "copies a fork made of another session's, counted there (--include-fork-copies counts "
                             "them here too)")
    assert cli("session", fork, "--include-fork-copies", "--data-dir", str(forked)).code == 0


def test_the_live_picker_lists_each_session_with_the_spend_session_gives_it(cli, forked):
    from conftest import open_index

    def walk(nodes: list[dict]) -> list[dict]:
        return [x for n in nodes for x in (n, *walk(n["children"]))]

    for flags, counted in (((), False), (("--include-fork-copies",), True)):
        doc = cli("session", "--json", "--limit", "100", "--data-dir", str(forked), *flags).json()
        spend = {s["id"]: (s["messages"], s["cost"]["usd"]) for s in walk(doc["sessions"])}
        with open_index(forked, fork_copies=counted) as idx:
            listed = {r.id: (r.usage.messages, (r.usage.stored_pico + r.usage.estimated_pico) / PICO)
                      for r in idx.reader.recent_sessions("auto", 100)}
        assert listed == spend, flags
        assert all(sessions_asking(forked, prompt)[0] in listed for prompt in FORK_PROMPTS)


def test_the_copies_of_a_deleted_source_are_the_only_record_and_count(cli, forked, tmp_path):
    before = stats(cli, "--data-dir", str(forked))
    source = the_source(forked)
    delete_session_with_opencode(forked, source, tmp_path / "opencode")
    doc = stats(cli, "--data-dir", str(forked))
    raw = raw_store(forked)
    assert source not in raw.sessions
    # the fork's three copies now count; the fork of the fork still copies the fork's five
    assert doc["source"]["fork_copies"] == len(raw.copies) == 5
    assert totals_of(doc) == pytest.approx(raw_totals(forked), abs=1e-9)
    assert totals_of(doc) == pytest.approx(totals_of(before), abs=1e-9)  # the spend was billed all the same


def test_the_index_follows_a_fork_made_later_and_a_source_deleted_later(cli, forked, tmp_path):
    """The index kept between runs: the forks appear after it was built, then their source goes."""
    forks = [s for p in FORK_PROMPTS for s in sessions_asking(forked, p)[:1]]
    full = tmp_path / "full.db"
    shutil.copyfile(forked / "opencode.db", full)
    db = forked / "opencode.db"
    with closing(sqlite3.connect(db)) as con, con:
        for table in ("part", "message", "session"):
            column = "id" if table == "session" else "session_id"
            con.executemany(f"DELETE FROM {table} WHERE {column} = ?", [(s,) for s in forks])
    assert stats(cli, "--data-dir", str(forked))["source"]["fork_copies"] == 0
    with closing(sqlite3.connect(db)) as con, con:
        con.execute("ATTACH DATABASE ? AS full", (str(full),))
        for table in ("session", "message", "part"):
            column = "id" if table == "session" else "session_id"
            con.executemany(f"INSERT INTO {table} SELECT * FROM full.{table} WHERE {column} = ?",
                            [(s,) for s in forks])
    later = stats(cli, "--data-dir", str(forked))
    assert later["source"]["fork_copies"] == 8
    assert totals_of(later) == pytest.approx(raw_totals(forked), abs=1e-9)
    source = the_source(forked)
    with closing(sqlite3.connect(db)) as con, con:
        for table in ("part", "message", "session"):
            column = "id" if table == "session" else "session_id"
            con.execute(f"DELETE FROM {table} WHERE {column} = ?", (source,))
    gone = stats(cli, "--data-dir", str(forked))
    assert gone["source"]["fork_copies"] == 5
    assert totals_of(gone) == pytest.approx(raw_totals(forked), abs=1e-9)
    assert gone["totals"] == stats(cli, "--data-dir", str(forked), "--no-cache")["totals"]


def test_the_sidecar_sends_no_chat_span_and_no_metric_for_a_copy(forked, receiver: Receiver, monkeypatch, cli):
    receiver.start_grpc()
    s = sidecar(forked, receiver, monkeypatch, backfill=True)
    s.baseline_ms = 0  # every call live: in the histograms too
    s.cycle()
    s.close()
    raw, expected = raw_store(forked), expected_from_log(read_log(FORKED))
    got = by_name(receiver.spans())
    assert len(got["chat"]) == len(raw.assistant()) == sum(expected.calls_by_model.values())
    assert len(got["invoke_agent"]) == sum(1 for m in raw.messages.values() if m["role"] == "user")
    assert len(got["execute_tool"]) == sum(1 for p in raw.parts.values() if p["type"] == "tool")
    doc = stats(cli, "--data-dir", str(forked))
    (_kind, points), *_ = receiver.metric_points("ocsight.tokens")[-1:]
    sums: dict[str, int] = {}
    for p in points:
        kind = labels(p)["gen_ai.token.type"]
        sums[kind] = sums.get(kind, 0) + p.as_int
    assert sums == {k: doc["totals"]["tokens"][k] for k in TOKEN_KEYS}
    (_kind, points), *_ = receiver.metric_points("gen_ai.client.token.usage")[-1:]
    assert sum(p.count for p in points) == 2 * doc["totals"]["messages"]["assistant"]


def test_a_store_without_forks_is_unchanged_by_include_fork_copies(cli):
    for name in ("opencode-1.18", "opencode-1.1", "upgrade-1.1-1.15"):
        plain = stats(cli, "--data-dir", str(store_dir(name)))
        assert plain["source"]["fork_copies"] == 0
        assert stats(cli, "--data-dir", str(store_dir(name)), "--include-fork-copies")["totals"] == plain["totals"]


def test_a_message_export_leaves_the_copies_out_unless_asked(cli, forked):
    def exported(*flags: str) -> list[str]:
        doc = cli("export", "--format", "json", "--level", "message", "--data-dir", str(forked), *flags).json()
        return sorted(r["id"] for r in doc["rows"])

    assert exported() == sorted(raw_store(forked).messages)
    assert exported("--include-fork-copies") == sorted(raw_store(forked, fork_copies_counted=True).messages)


def test_mcp_answers_count_fork_copies_once_unless_asked(forked, tmp_path):
    from test_mcp import connect, stdio

    for flags, counted in (((), False), (("--include-fork-copies",), True)):
        with connect(stdio(forked, tmp_path, *flags), mode="legacy") as session:
            doc = session.doc("usage_summary")
        assert totals_of(doc) == pytest.approx(raw_totals(forked, counted), abs=1e-9)
        assert doc["source"]["fork_copies"] == 8


def test_analyze_says_how_many_copies_were_set_aside(cli, forked):
    line = next(x for x in cli("analyze", "--data-dir", str(forked)).out.splitlines() if "Fork copies" in x)
    assert "8 messages, set aside" in line
    again = cli("analyze", "--data-dir", str(forked), "--include-fork-copies").out
    assert "8 messages, counted again" in again
    assert "Fork copies" not in cli("analyze", "--data-dir", str(store_dir("opencode-1.18"))).out


def test_the_sidecar_with_include_fork_copies_counts_them_in_the_metrics_but_sends_no_span(
        forked, receiver: Receiver, monkeypatch):
    from ocsight import reading
    from ocsight.telemetry.watch import Sidecar, WatchOptions

    receiver.start_grpc()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.grpc_port}")
    read = reading.ReadOptions(data_dirs=(str(forked),), fork_copies=True)
    s = Sidecar(WatchOptions(read=read, protocol="grpc", backfill=True, metric_interval=3600))
    s.baseline_ms = 0  # every call live: a copy sent as a span would be in the histograms too
    s.cycle()
    s.close()
    raw = raw_store(forked)
    got = by_name(receiver.spans())
    assert len(got["chat"]) == len(raw.assistant()) < len(raw_store(forked, fork_copies_counted=True).assistant())
    assert len(got["invoke_agent"]) == sum(1 for m in raw.messages.values() if m["role"] == "user")
    (_kind, points), *_ = receiver.metric_points("ocsight.cost.usd")[-1:]
    assert sum(p.as_double for p in points) == pytest.approx(opencode_rollups(forked)["cost"])