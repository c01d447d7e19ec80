"""Bad input: a clear one-line error and a non-zero exit, or a counted skip; never a traceback or a wrong total."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

import storegen
from conftest import run_ocsight, stats, write_store


def one_line_error(r, code: int = 1, *fragments: str) -> None:
    assert r.code == code, r
    assert r.out == ""
    assert "Traceback" not in r.err
    assert r.err.startswith("ocsight: error: ") and r.err.count("\n") == 1, r.err
    for f in fragments:
        assert f in r.err, (f, r.err)


@pytest.fixture
def small(tmp_path: Path):
    """A five-session store and its expected input-token total."""
    plan = storegen.plan_store(seed=2, sessions=5, error_share=0)
    expected = sum(plan.truth[m["id"]]["tokens"]["input"] for m in plan.messages if m["role"] == "assistant")
    return plan, expected


def _message_file(root: Path, plan: storegen.Plan) -> tuple[Path, dict]:
    m = next(m for m in plan.messages if m["role"] == "assistant")
    return root / "storage" / "message" / m["sessionID"] / f"{m['id']}.json", m


def test_missing_data_directory(cli, tmp_path: Path):
    one_line_error(cli("stats", "--json", "--data-dir", str(tmp_path / "nope")), 1, "not found", "nope")


def test_a_missing_data_directory_named_by_the_variable_names_the_variable(cli, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("OCSIGHT_DATA_DIRS", f"{tmp_path / 'a'},{tmp_path / 'b'}")
    r = cli("stats")
    one_line_error(r, 1, f"not found: {tmp_path / 'a'} (given by OCSIGHT_DATA_DIRS)")
    assert "--data-dir" not in r.err


def test_a_missing_data_directory_named_by_the_config_file_names_the_file(cli, tmp_path: Path):
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "ocsight" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'data_dirs = ["{tmp_path / "gone"}"]\n')
    r = cli("stats")
    one_line_error(r, 1, f"not found: {tmp_path / 'gone'} (given by data_dirs in {config})")
    assert "--data-dir" not in r.err


@pytest.mark.parametrize(("env", "file", "says"), [
    ({"OCSIGHT_BUDGET_DAILY_USD": "-5"}, "", "OCSIGHT_BUDGET_DAILY_USD"),
    ({"OCSIGHT_BUDGET_MONTHLY_USD": "0"}, "", "OCSIGHT_BUDGET_MONTHLY_USD"),
    ({"OCSIGHT_PROJECT_BUDGETS_MONTHLY_USD": '{"/home/dev/app": -3}'}, "",
     "OCSIGHT_PROJECT_BUDGETS_MONTHLY_USD, entry '/home/dev/app'"),
    ({}, "budget_daily_usd = -1\n", "budget_daily_usd in "),
    ({}, '[project_budgets_monthly_usd]\n"/home/dev/app" = 0\n', "project_budgets_monthly_usd in "),
])
def test_a_budget_of_zero_or_less_is_a_one_line_usage_error_naming_its_setting(cli, monkeypatch, env, file, says):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if file:
        config = Path(os.environ["XDG_CONFIG_HOME"]) / "ocsight" / "config.toml"
        config.parent.mkdir(parents=True)
        config.write_text(file)
    one_line_error(cli("stats", "--demo"), 2, says, "greater than 0")


def test_empty_data_directory(cli, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    one_line_error(cli("stats", "--json", "--data-dir", str(tmp_path / "empty")), 1, "no OpenCode data")


def test_missing_default_data_directory_says_where_it_looked(cli):
    r = cli("stats", "--json")
    one_line_error(r, 1, os.environ["XDG_DATA_HOME"])


def test_opencode_db_pointing_at_a_missing_file(cli, tmp_path: Path, monkeypatch, small):
    root = write_store(small[0], tmp_path / "s", "db")
    monkeypatch.setenv("OPENCODE_DB", "other.db")
    one_line_error(cli("stats", "--json", "--data-dir", str(root)), 1, "OPENCODE_DB", "other.db")


def test_opencode_db_selects_the_database_to_read(cli, tmp_path: Path, monkeypatch, small):
    root = tmp_path / "s"
    storegen.write_sqlite(small[0], root / "opencode-beta.db")
    monkeypatch.setenv("OPENCODE_DB", "opencode-beta.db")
    assert stats(cli, "--data-dir", str(root))["totals"]["tokens"]["input"] == small[1]


def test_corrupt_json_file_is_skipped_and_counted(cli, tmp_path: Path, small):
    plan, expected = small
    root = write_store(plan, tmp_path / "s", "json")
    path, m = _message_file(root, plan)
    path.write_text("\x00\x01 not json at all")
    doc = stats(cli, "--data-dir", str(root))
    assert doc["totals"]["tokens"]["input"] == expected - plan.truth[m["id"]]["tokens"]["input"]
    assert doc["source"]["skipped"]["by_reason"] == {"malformed JSON (half-written?)": 1}
    assert doc["source"]["skipped"]["items"][0]["ref"] == str(path)


def test_half_written_json_is_retried_and_counted_once_complete(cli, tmp_path: Path, small):
    plan, expected = small
    root = write_store(plan, tmp_path / "s", "json")
    path, _m = _message_file(root, plan)
    whole = path.read_text()
    path.write_text(whole[: len(whole) // 2])
    first = stats(cli, "--data-dir", str(root))
    assert first["source"]["skipped"]["total"] == 1
    path.write_text(whole)  # OpenCode finished writing it
    second = stats(cli, "--data-dir", str(root))
    assert second["source"]["skipped"]["total"] == 0
    assert second["totals"]["tokens"]["input"] == expected


def test_foreign_files_are_counted_and_stay_counted_on_a_cached_run(cli, tmp_path: Path, small):
    plan, expected = small
    root = write_store(plan, tmp_path / "s", "json")
    path, _m = _message_file(root, plan)
    (path.parent / "notes.txt").write_text("hello")
    (root / "storage" / "message" / ".DS_Store").write_bytes(b"\x00")
    for _ in range(2):
        doc = stats(cli, "--data-dir", str(root))
        assert doc["source"]["skipped"]["by_reason"] == {"foreign file": 2}
        assert doc["totals"]["tokens"]["input"] == expected


def test_foreign_files_beside_messages_a_database_holds_are_counted(cli, tmp_path: Path, small):
    # the tree's message files are skipped unread (the database has them); the rest is still looked at
    plan, expected = small
    root = write_store(plan, tmp_path / "s", "both")
    path, _m = _message_file(root, plan)
    (path.parent / "notes.txt").write_text("hello")
    doc = stats(cli, "--no-cache", "--data-dir", str(root))
    assert doc["source"]["skipped"]["by_reason"] == {"foreign file": 1}
    assert doc["totals"]["tokens"]["input"] == expected


def test_a_directory_named_like_a_message_file_is_counted_as_unreadable(cli, tmp_path: Path, small):
    plan, expected = small
    root = write_store(plan, tmp_path / "s", "json")
    path, _m = _message_file(root, plan)
    (path.parent / "msg_zzzz.json").mkdir()
    (path.parent / "subdir").mkdir()  # any other directory is no record: not counted
    doc = stats(cli, "--data-dir", str(root))
    assert doc["source"]["skipped"]["by_reason"] == {"unreadable file (Is a directory)": 1}
    assert doc["totals"]["tokens"]["input"] == expected


def test_a_file_larger_than_one_read_is_read_whole(cli, tmp_path: Path, small):
    plan, expected = small
    tool = next(p for p in plan.parts if p["type"] == "tool" and p["state"]["status"] == "completed")
    tool["state"]["output"] = "x" * 300_000  # several reads of the file
    docs = [stats(cli, "--data-dir", str(write_store(plan, tmp_path / k, k))) for k in ("db", "json")]
    assert docs[1]["by_tool"] == docs[0]["by_tool"]
    assert docs[1]["totals"]["tokens"]["input"] == expected
    assert docs[1]["source"]["skipped"]["total"] == 0


def test_a_legacy_file_that_cannot_be_used_says_why(tmp_path: Path):
    from ocsight.sources.legacy import read_file as _read

    (tmp_path / "dir.json").mkdir()
    (tmp_path / "latin1.json").write_bytes('{"title": "caf\xe9"}'.encode("latin-1"))
    (tmp_path / "ok.json").write_text('{"title": "café"}')
    assert _read(str(tmp_path / "dir.json")) == (None, "unreadable file (Is a directory)")
    assert _read(str(tmp_path / "latin1.json")) == (None, "not UTF-8 text")
    assert _read(str(tmp_path / "gone.json")) == (None, None)  # deleted since listed: nothing to count
    assert _read(str(tmp_path / "ok.json")) == ('{"title": "café"}', None)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("[]", "not a user or assistant message"),
        ('{"role": "narrator", "time": {"created": 1}}', "not a user or assistant message"),
        ('{"role": "assistant", "tokens": {"input": "12"}, "cost": 0}', "token counts are not numbers"),
        ('{"role": "assistant", "tokens": {"input": -5}, "cost": 0}', "token counts are not numbers"),
        ('{"role": "assistant", "tokens": {"input": 5}, "cost": "free"}', "cost is not a number"),
    ],
)
def test_json_of_the_wrong_shape_is_skipped_with_a_reason(cli, tmp_path: Path, small, content, reason):
    plan, expected = small
    root = write_store(plan, tmp_path / "s", "json")
    path, m = _message_file(root, plan)
    path.write_text(content)
    doc = stats(cli, "--data-dir", str(root))
    assert doc["source"]["skipped"]["by_reason"] == {reason: 1}
    assert doc["totals"]["tokens"]["input"] == expected - plan.truth[m["id"]]["tokens"]["input"]


def test_unknown_part_types_and_fields_change_nothing(cli, tmp_path: Path, small):
    plan, expected = small
    m = next(m for m in plan.messages if m["role"] == "assistant")
    m["hologram"] = {"depth": 3}
    m["tokens"]["cache"]["quantum"] = 99
    plan.parts.append({"id": "prt_zzzz", "sessionID": m["sessionID"], "messageID": m["id"], "type": "hologram",
                       "frames": [1, 2]})
    docs = [stats(cli, "--data-dir", str(write_store(plan, tmp_path / k, k))) for k in ("db", "json")]
    for doc in docs:
        assert doc["totals"]["tokens"]["input"] == expected
        assert doc["source"]["skipped"]["total"] == 0


def test_malformed_json_row_in_the_database_is_skipped_and_counted(cli, tmp_path: Path, small):
    plan, expected = small
    root = write_store(plan, tmp_path / "s", "db")
    m = next(m for m in plan.messages if m["role"] == "assistant")
    con = sqlite3.connect(root / "opencode.db")
    con.execute("UPDATE message SET data = '{\"role\": \"assist' WHERE id = ?", (m["id"],))
    con.commit()
    con.close()
    doc = stats(cli, "--data-dir", str(root))
    assert doc["source"]["skipped"]["by_reason"] == {"malformed JSON": 1}
    assert doc["totals"]["tokens"]["input"] == expected - plan.truth[m["id"]]["tokens"]["input"]


def test_malformed_part_row_that_does_not_open_with_its_type_is_skipped_and_counted(cli, tmp_path: Path, small):
    """OpenCode writes a step's parts with `type` after other keys: such a row is parsed to be told,
    so a malformed one is counted, not passed over as no tool call."""
    plan, expected = small
    root = write_store(plan, tmp_path / "s", "db")
    calls = stats(cli, "--data-dir", str(root))["by_tool"]
    con = sqlite3.connect(root / "opencode.db")
    part = con.execute("SELECT id FROM part WHERE json_extract(data, '$.type') = 'text' LIMIT 1").fetchone()[0]
    con.execute("UPDATE part SET data = '{\"reason\": \"tool-calls\", \"snaps' WHERE id = ?", (part,))
    con.commit()
    con.close()
    doc = stats(cli, "--data-dir", str(tmp_path / "s"), "--no-cache")
    assert doc["source"]["skipped"]["by_reason"] == {"malformed JSON": 1}
    assert doc["by_tool"] == calls
    assert doc["totals"]["tokens"]["input"] == expected


def test_truncated_database_is_a_one_line_error(cli, tmp_path: Path, small):
    root = write_store(small[0], tmp_path / "s", "db")
    db = root / "opencode.db"
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])
    one_line_error(cli("stats", "--json", "--data-dir", str(root)), 1, "cannot read", "opencode.db")


def test_foreign_file_named_like_a_database_is_a_one_line_error(cli, tmp_path: Path):
    root = tmp_path / "s"
    root.mkdir()
    (root / "opencode.db").write_text("these are my notes, not a database" * 10)
    one_line_error(cli("stats", "--json", "--data-dir", str(root)), 1, "not an SQLite database")


def test_empty_database_file_gives_zeros_and_a_note(cli, tmp_path: Path):
    root = tmp_path / "s"
    root.mkdir()
    (root / "opencode.db").write_bytes(b"")
    doc = stats(cli, "--data-dir", str(root))
    assert doc["totals"]["messages"] == {"user": 0, "assistant": 0, "errors": 0}
    assert any("empty" in n for n in doc["source"]["notes"])


def test_database_of_another_program_is_skipped_and_counted(cli, tmp_path: Path):
    root = tmp_path / "s"
    root.mkdir()
    con = sqlite3.connect(root / "opencode.db")
    con.execute("CREATE TABLE recipes (name TEXT)")
    con.commit()
    con.close()
    doc = stats(cli, "--data-dir", str(root))
    assert doc["totals"]["sessions"] == 0
    assert list(doc["source"]["skipped"]["by_reason"]) == ["not an OpenCode 1.x database (no table message, part, project, session)"]


def test_rows_with_usage_in_opencode_2_tables_are_counted_as_skipped(cli, tmp_path: Path, small):
    plan, expected = small
    root = write_store(plan, tmp_path / "s", "db")
    con = sqlite3.connect(root / "opencode.db")
    sid = plan.sessions[0]["id"]
    con.executemany(
        "INSERT INTO session_message (id, session_id, type, seq, time_created, time_updated, data) VALUES (?,?,?,?,?,?,?)",
        [(f"sm_{i}", sid, "assistant", i, 1, 1, '{"tokens": {"input": 5}, "cost": 0.1}') for i in range(3)]
        # switches of agent or model, as OpenCode 1.15 writes them, carry no usage
        + [("sm_a", sid, "agent-switched", 3, 1, 1, '{"agent": "build"}')],
    )
    con.commit()
    con.close()
    doc = stats(cli, "--data-dir", str(root))
    assert doc["totals"]["tokens"]["input"] == expected
    (reason,) = doc["source"]["skipped"]["by_reason"]
    assert "3 rows with usage in OpenCode 2.x tables" in reason


def _rollback_journal_store(plan: storegen.Plan, root: Path) -> Path:
    root = write_store(plan, root, "db")
    con = sqlite3.connect(root / "opencode.db")
    con.execute("PRAGMA journal_mode = DELETE")
    con.close()
    return root


def test_locked_database_is_waited_for(cli, tmp_path: Path, small):
    plan, expected = small
    root = _rollback_journal_store(plan, tmp_path / "s")
    writer = sqlite3.connect(root / "opencode.db", isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN EXCLUSIVE")
    threading.Timer(0.6, lambda: writer.execute("COMMIT")).start()
    started = time.monotonic()
    doc = stats(cli, "--data-dir", str(root))
    assert time.monotonic() - started >= 0.5
    assert doc["totals"]["tokens"]["input"] == expected


def test_database_locked_for_too_long_is_a_one_line_error(cli, tmp_path: Path, small, monkeypatch):
    from ocsight.sources import database, staging

    monkeypatch.setattr(database, "BUSY_RETRY_SECONDS", 0.5)
    monkeypatch.setattr(staging, "BUSY_RETRY_SECONDS", 0.5)
    root = _rollback_journal_store(small[0], tmp_path / "s")
    writer = sqlite3.connect(root / "opencode.db", isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        one_line_error(cli("stats", "--json", "--data-dir", str(root)), 1, "locked")
    finally:
        writer.execute("COMMIT")


def test_reading_while_opencode_writes_gives_consistent_totals(cli, tmp_path: Path):
    # OpenCode keeps its database in WAL mode and writes while we read: every read sees a
    # transaction-consistent store, never a half-applied one.
    b = storegen.Builder()
    s = b.session(b.project())
    b.assistant(s, storegen.BASE_MS, storegen.tokens(1, total=1))
    root = write_store(b.plan, tmp_path / "live", "db")
    stop = threading.Event()

    def opencode() -> None:
        con = sqlite3.connect(root / "opencode.db", isolation_level=None)
        n = 0
        while not stop.is_set():
            n += 1
            mid = f"msg_live_{n:06d}"
            data = json.dumps({"role": "assistant", "providerID": "p", "modelID": "m", "cost": 0,
                               "tokens": {"input": 1, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}}})
            con.execute("BEGIN IMMEDIATE")
            con.execute("INSERT INTO message VALUES (?, ?, ?, ?, ?)", (mid, s["id"], n, int(time.time() * 1000), data))
            con.execute("COMMIT")
        con.close()

    t = threading.Thread(target=opencode)
    t.start()
    try:
        seen = [stats(cli, "--data-dir", str(root))["totals"] for _ in range(5)]
    finally:
        stop.set()
        t.join()
    for totals in seen:
        assert totals["tokens"]["input"] == totals["messages"]["assistant"]
    final = sqlite3.connect(root / "opencode.db").execute("SELECT count(*) FROM message").fetchone()[0]
    assert stats(cli, "--data-dir", str(root))["totals"]["messages"]["assistant"] == final


def test_an_internal_failure_is_one_line_without_a_traceback(cli, tmp_path: Path, small, monkeypatch):
    from ocsight.index import IndexReader

    def broken(*_a, **_k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(IndexReader, "breakdown", broken)
    r = cli("stats", "--json", "--data-dir", str(write_store(small[0], tmp_path / "s", "db")))
    assert r.code == 70 and "Traceback" not in r.err and r.err.count("\n") == 1 and "simulated bug" in r.err


def test_the_installed_command_reports_bad_input_without_a_traceback(tmp_path: Path):
    r = run_ocsight("stats", "--json", "--data-dir", str(tmp_path / "missing"))
    one_line_error(r, 1, "not found")


def test_corrupt_json_file_in_a_later_batch_keeps_the_earlier_batches(cli, tmp_path: Path, small, monkeypatch):
    from ocsight.sources import legacy

    plan, expected = small
    root = write_store(plan, tmp_path / "s", "json")
    m = [m for m in plan.messages if m["role"] == "assistant"][-1]
    path = root / "storage" / "message" / m["sessionID"] / f"{m['id']}.json"
    path.write_text('{"role": "assist')
    monkeypatch.setattr(legacy, "BATCH_FILES", 3)  # the bad file is read in a batch after others
    doc = stats(cli, "--data-dir", str(root))
    assert doc["source"]["skipped"]["by_reason"] == {"malformed JSON (half-written?)": 1}
    assert doc["totals"]["tokens"]["input"] == expected - plan.truth[m["id"]]["tokens"]["input"]
