"""A first read's work on another core (a database's second half of sessions read, normalised and
summed on a second connection; SQLite's memory statistics off so the two connections do not contend)
gives what one connection gives."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

import storegen
from conftest import stats, without_source, write_store
from ocsight import reader
from ocsight.sqlite_library import sqlite3
from ocsight.store import half_ahead
from ocsight.store.half_ahead import HalfAhead
from ocsight.store.sqlite import Database


@pytest.fixture
def split_store(tmp_path: Path) -> Path:
    # a database and a legacy tree holding some of the same sessions: ranks and de-duplication at work
    plan = storegen.plan_store(seed=19, sessions=40, eras=("1.18", "1.1"))
    root = write_store(plan, tmp_path / "s", "db")
    storegen.write_legacy(plan, root / "storage", {s["id"] for s in plan.sessions[::3]})
    return root


@pytest.fixture
def halves(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """How each first read's second half ended: "merged" or "failed" (the read then done again)."""
    ends: list[str] = []
    merge = HalfAhead.merge_into
    check = HalfAhead.check_parts

    def merge_into(self, con):
        merge(self, con)
        ends.append("merged")

    def check_parts(self, con, ours):
        try:
            return check(self, con, ours)
        except half_ahead.SplitFailed:
            ends.append("failed")
            raise

    monkeypatch.setattr(HalfAhead, "merge_into", merge_into)
    monkeypatch.setattr(HalfAhead, "check_parts", check_parts)
    return ends


def _stats(cli, root: Path) -> dict:
    return without_source(stats(cli, "--no-cache", "--data-dir", str(root)))


def _in_one_connection(cli, root: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    with monkeypatch.context() as m:
        m.setattr(Database, "stage_half_ahead", lambda self, *args, **kw: False)
        return _stats(cli, root)


def _bounds(db: Path) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return half_ahead.range_bounds(con, "main")
    finally:
        con.close()


def _half(db: Path, half: str) -> tuple[str, str]:
    """A condition on `session_id` (with its argument) that holds only in a half's own end range:
    the lowest sessions are always the index connection's, the highest always the thread's."""
    bounds = _bounds(db)
    return ("< ?", bounds[0]) if half == "first" else (">= ?", bounds[-1])


def test_a_database_read_in_two_halves_equals_one_read_on_one_connection(cli, split_store: Path, monkeypatch, halves):
    doc = _stats(cli, split_store)
    assert halves == ["merged"]
    assert doc["by_tool"] and doc == _in_one_connection(cli, split_store, monkeypatch)


@pytest.fixture
def late_sums(monkeypatch: pytest.MonkeyPatch) -> list[list]:
    """The pairs each `extract.sum_usage` call summed again, priced last (on either connection)."""
    from ocsight.store import extract

    calls: list[list] = []
    sum_usage = extract.sum_usage

    def spy(con, late=None):
        if late:
            calls.append(sorted(late))
        return sum_usage(con, late)

    monkeypatch.setattr(extract, "sum_usage", spy)
    return calls


def _all_priced_at_once(cli, root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> dict:
    from ocsight import index

    price = index._price_new_models
    with monkeypatch.context() as m:
        m.setattr(Database, "stage_half_ahead", lambda self, *args, **kw: False)
        m.setattr(index, "_price_new_models",
                  lambda con, catalogue, more=(), genai_late=False: price(con, catalogue, more))
        return without_source(stats(cli, "--no-cache", *args, "--data-dir", str(root)))


@pytest.mark.skipif(sys.version_info < (3, 11), reason="genai-prices needs Python 3.11")
def test_models_only_genai_prices_knows_are_priced_last_in_both_halves(cli, split_store: Path, monkeypatch, halves,
                                                                      late_sums):
    doc = without_source(stats(cli, "--no-cache", "--cost-mode", "calculate", "--data-dir", str(split_store)))
    assert halves == ["merged"]
    assert len(late_sums) == 2 and late_sums[0] == late_sums[1]  # the index connection and the thread
    assert late_sums[0] and storegen.UNPRICED not in late_sums[0]  # summed again: only what genai-prices priced
    assert {m["source"] for m in doc["pricing"]["models"]} == {"genai-prices", None}  # None: acme's, unpriced
    assert doc["totals"]["cost"]["estimated_usd"] > 0
    assert doc == _all_priced_at_once(cli, split_store, monkeypatch, "--cost-mode", "calculate")


def test_a_model_no_catalogue_knows_is_not_summed_again_and_stays_unpriced(cli, split_store: Path, monkeypatch,
                                                                           halves, late_sums, models_json):
    doc = without_source(stats(cli, "--no-cache", "--cost-mode", "calculate", "--data-dir", str(split_store)))
    assert halves == ["merged"] and late_sums == []
    acme = [r for r in doc["by_model"] if (r["provider"], r["model"]) == storegen.UNPRICED]
    assert acme and doc["totals"]["cost"]["unpriced_messages"] == acme[0]["cost"]["unpriced_messages"] > 0
    assert doc == _all_priced_at_once(cli, split_store, monkeypatch, "--cost-mode", "calculate")


def test_ranges_of_sessions_hold_about_equal_numbers_of_messages(tmp_path: Path):
    plan = storegen.plan_store(seed=41, sessions=400, eras=("1.18",))
    db = write_store(plan, tmp_path / "s", "db") / "opencode.db"
    bounds = _bounds(db)
    assert bounds == sorted(set(bounds)) and len(bounds) == half_ahead.RANGES - 1
    con = sqlite3.connect(db)
    largest_session = con.execute("SELECT max(n) FROM (SELECT count(*) AS n FROM message GROUP BY session_id)"
                                  ).fetchone()[0]
    edges = [None, *bounds, None]
    counts = [con.execute("SELECT count(*) FROM message WHERE (? IS NULL OR session_id >= ?) "
                          "AND (? IS NULL OR session_id < ?)", (lo, lo, hi, hi)).fetchone()[0]
              for lo, hi in itertools.pairwise(edges)]
    con.close()
    share = sum(counts) / half_ahead.RANGES
    assert all(abs(n - share) <= 0.5 * share + largest_session for n in counts), counts


def test_a_second_half_that_fails_is_read_again_on_one_connection(cli, split_store: Path, monkeypatch, halves):
    failed: list[bool] = []

    def fail(self, con):
        failed.append(True)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(HalfAhead, "_stage", fail)
    retried: list[int] = []
    stage = Database.stage
    monkeypatch.setattr(Database, "stage", lambda self, s, first: retried.append(self.half is None) or stage(
        self, s, first))
    doc = _stats(cli, split_store)
    # the failure is known before the index connection stages: it stages once, alone
    assert failed == [True] and retried == [True] and halves == []
    assert doc["by_tool"] and doc == _in_one_connection(cli, split_store, monkeypatch)


def test_a_database_written_during_the_read_is_read_again_on_one_connection(cli, split_store: Path, monkeypatch,
                                                                               halves):
    # The two connections may have read two snapshots: only a read on one connection is whole.
    from ocsight.store import sqlite as sqlite_store

    stamps = iter([[1], [2]])  # the stamp taken before the read, then the one checked after it
    monkeypatch.setattr(Database, "changed_under_us", lambda self: False)
    monkeypatch.setattr(sqlite_store, "file_stamp", lambda path: next(stamps, [2]))
    doc = _stats(cli, split_store)
    assert halves == [] and doc["by_tool"] and doc == _in_one_connection(cli, split_store, monkeypatch)


PART_OF_KIND = {"tool call": '%"type":"tool",%', "step": '%"type":"step-finish"%'}


@pytest.mark.parametrize("beside", ["alone", "beside a legacy tree"])
@pytest.mark.parametrize("kind", PART_OF_KIND)
@pytest.mark.parametrize("direction", ["first to second", "second to first"])
def test_a_part_filed_in_the_other_halfs_session_counts_with_its_message(
        cli, tmp_path: Path, monkeypatch, halves, direction: str, kind: str, beside: str):
    # OpenCode 0.x: several steps a message, each read (OpenCode >= 1.0 keeps a message's tokens on it)
    plan = storegen.plan_store(seed=29, sessions=30, eras=("0.x",))
    root = write_store(plan, tmp_path / "s", "db")
    if beside == "beside a legacy tree":  # the second half then reports no IDs (`Database.absent`)
        storegen.write_legacy(plan, root / "storage", {s["id"] for s in plan.sessions[::3]})
    db = root / "opencode.db"
    cond, arg = _half(db, "first" if direction == "first to second" else "second")
    con = sqlite3.connect(db)
    part, = con.execute(
        f"SELECT id FROM part WHERE session_id {cond} AND data LIKE ? LIMIT 1", (arg, PART_OF_KIND[kind])
    ).fetchone()
    other = "max" if direction == "first to second" else "min"
    con.execute(f"UPDATE part SET session_id = (SELECT {other}(id) FROM session) WHERE id = ?", (part,))
    con.commit()
    con.close()
    doc = _stats(cli, root)
    assert halves == ["failed"]
    assert doc["by_tool"] and doc == _in_one_connection(cli, root, monkeypatch)


@pytest.mark.parametrize("half", ["first", "second"])
def test_a_tool_call_without_its_message_in_either_half_is_counted_as_skipped(cli, split_store: Path, halves,
                                                                             half: str):
    db = split_store / "opencode.db"
    cond, arg = _half(db, half)
    con = sqlite3.connect(db)
    part, = con.execute(f"SELECT id FROM part WHERE session_id {cond} AND data LIKE ? LIMIT 1",
                        (arg, PART_OF_KIND["tool call"])).fetchone()
    con.execute("UPDATE part SET message_id = 'msg_gone' WHERE id = ?", (part,))
    con.commit()
    con.close()
    doc = stats(cli, "--no-cache", "--data-dir", str(split_store))
    assert halves == ["merged"]
    assert doc["source"]["skipped"]["by_reason"].get("tool call without its message") == 1


def test_legacy_messages_in_the_second_halfs_sessions_merge_into_one_cube_row_a_key(tmp_path: Path, halves):
    plan = storegen.plan_store(seed=31, sessions=30, eras=("1.1",))
    root = write_store(plan, tmp_path / "s", "both")
    db = root / "opencode.db"
    cond, arg = _half(db, "second")
    con = sqlite3.connect(db)
    # every other message of the second half's end range is left to the legacy tree
    gone = [r[0] for r in con.execute(f"SELECT id FROM message WHERE session_id {cond} ORDER BY id", (arg,))][::2]
    con.executemany("DELETE FROM part WHERE message_id = ?", [(m,) for m in gone])
    con.executemany("DELETE FROM message WHERE id = ?", [(m,) for m in gone])
    con.commit()
    con.close()
    idx = reader.open_index(reader.ReadOptions(data_dirs=(str(root),), use_cache=False))
    try:
        for cube, keys in (("usage_cube", half_ahead.USAGE_KEYS), ("tool_cube", half_ahead.TOOL_KEYS)):
            assert idx.con.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {cube} GROUP BY {keys} HAVING count(*) > 1)"
            ).fetchone()[0] == 0
        messages = idx.con.execute("SELECT sum(messages) FROM usage_cube").fetchone()[0]
    finally:
        idx.close()
    assert halves == ["merged"] and messages == len(plan.messages)


def test_a_second_database_skips_the_messages_the_second_half_staged(cli, split_store: Path, monkeypatch, halves):
    alone = _stats(cli, split_store)
    (split_store / "opencode-copy.db").write_bytes((split_store / "opencode.db").read_bytes())
    halves.clear()
    doc = _stats(cli, split_store)
    assert halves == ["merged"]
    assert doc == alone == _in_one_connection(cli, split_store, monkeypatch)


PROBE = """
import ctypes, sys
from ocsight import sqlite_tuning
from ocsight.sqlite_library import library_path, sqlite3
done = sqlite_tuning.tune_process() if sys.argv[1] == "tuned" else None
con = sqlite3.connect(":memory:")
con.execute("CREATE TABLE t (data)")
con.executemany("INSERT INTO t VALUES (?)", [('{"provider": "p%d"}' % (i % 7),) for i in range(2000)])
# a statement holding sixty text values at once, as staging holds a row's JSON fields
con.execute("CREATE TABLE s AS SELECT " + ", ".join(f"data->>'provider' || '{i}'" for i in range(60)) + " FROM t")
lib = ctypes.CDLL(library_path())
lib.sqlite3_memory_used.restype = ctypes.c_int64
db = ctypes.c_void_p.from_address(id(con) + object.__basicsize__)  # the connection's sqlite3 *
current, highest = ctypes.c_int(), ctypes.c_int()
SQLITE_DBSTATUS_LOOKASIDE_MISS_FULL = 6
lib.sqlite3_db_status(db, SQLITE_DBSTATUS_LOOKASIDE_MISS_FULL, ctypes.byref(current), ctypes.byref(highest), 0)
print(done, lib.sqlite3_memory_used(), highest.value)
"""


def _probe(setting: str) -> tuple[str, int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, setting], capture_output=True, text=True, check=True).stdout
    done, used, misses = out.split()
    return done, int(used), int(misses)


def test_the_ocsight_process_turns_sqlites_memory_statistics_off():
    assert _probe("tuned")[:2] == ("True", 0)
    assert _probe("default")[1] > 100_000  # kept by default: the probe can tell


def test_the_ocsight_process_gives_each_connection_lookaside_for_a_whole_row():
    assert _probe("tuned")[2] == 0
    assert _probe("default")[2] > 1000  # 40 slots by default: the probe can tell


def test_long_running_consumers_read_on_one_connection(split_store: Path, monkeypatch):
    started: list[bool] = []
    ahead = Database.stage_half_ahead
    monkeypatch.setattr(Database, "stage_half_ahead",
                        lambda self, *args, **kw: started.append(True) or ahead(self, *args, **kw))
    reader.open_index(reader.ReadOptions(data_dirs=(str(split_store),), use_cache=False, lean_memory=True)).close()
    assert started == []
    reader.open_index(reader.ReadOptions(data_dirs=(str(split_store),), use_cache=False)).close()
    assert started == [True]


def test_a_legacy_tree_read_in_small_batches_ahead_equals_its_database_copy(cli, tmp_path: Path, monkeypatch):
    from ocsight.store import legacy

    plan = storegen.plan_store(seed=23, sessions=12, eras=("1.1", "0.x", "1.0"))
    docs = {k: _stats(cli, write_store(plan, tmp_path / k, k)) for k in ("db", "json")}
    monkeypatch.setattr(legacy, "BATCH_FILES", 3)  # many batches, each a message with all its parts
    assert _stats(cli, tmp_path / "json") == docs["json"] == docs["db"]


def test_an_error_while_reading_ahead_is_raised_in_the_reader():
    from ocsight.store.legacy import _Ahead

    def files():
        yield 1
        raise PermissionError("no")

    items = []
    with pytest.raises(PermissionError, match="no"):
        for item in _Ahead(files()):
            items.append(item)
    assert items == [1]


def test_a_reader_that_stops_early_stops_the_reading_thread():
    import itertools

    from ocsight.store.legacy import _Ahead

    ahead = _Ahead(itertools.count())
    assert ahead.first() == 0
    ahead.join(timeout=5)
    assert not ahead.is_alive()


def test_beside_the_only_database_a_legacy_tree_reads_only_the_messages_it_lacks(cli, split_store: Path,
                                                                                   monkeypatch, halves):
    from ocsight.store import legacy

    # a message the legacy tree holds, gone from the database (with its parts)
    gone = min((split_store / "storage" / "message").rglob("msg_*.json")).stem
    con = sqlite3.connect(split_store / "opencode.db")
    with con:
        con.execute("DELETE FROM part WHERE message_id = ?", (gone,))
        con.execute("DELETE FROM message WHERE id = ?", (gone,))
    con.close()
    read: list[str] = []
    real = legacy._read
    monkeypatch.setattr(legacy, "_read", lambda path: read.append(path) or real(path))
    doc = _stats(cli, split_store)
    assert halves == ["merged"]
    assert {Path(p).stem for p in read if "/message/" in p} == {gone}
    assert doc == _in_one_connection(cli, split_store, monkeypatch)


def test_a_first_build_starts_the_second_half_before_checking_any_source(cli, split_store: Path, monkeypatch, halves):
    from ocsight.store.legacy import LegacyTree

    events: list[str] = []
    ahead, legacy_detect, db_detect = Database.stage_half_ahead, LegacyTree.detect, Database.detect
    monkeypatch.setattr(Database, "stage_half_ahead",
                        lambda self, *a, **kw: events.append("second half") or ahead(self, *a, **kw))
    monkeypatch.setattr(Database, "detect", lambda self, state: events.append("database checked") or db_detect(
        self, state))
    monkeypatch.setattr(LegacyTree, "detect", lambda self: events.append("legacy checked") or legacy_detect(self))
    doc = _stats(cli, split_store)
    assert events == ["second half", "database checked", "legacy checked"] and halves == ["merged"]
    assert doc == _in_one_connection(cli, split_store, monkeypatch)


def test_a_database_with_nothing_to_cut_is_read_on_one_connection(cli, tmp_path: Path, monkeypatch, halves):
    import threading

    # sessions without a message: no ranges to share, the second half ends by itself
    plan = storegen.plan_store(seed=5, sessions=3, eras=("1.18",))
    root = write_store(plan, tmp_path / "s", "db")
    con = sqlite3.connect(root / "opencode.db")
    with con:
        con.execute("DELETE FROM part")
        con.execute("DELETE FROM message")
    con.close()
    cut: list[object] = []
    wait = HalfAhead.wait_ranges
    monkeypatch.setattr(HalfAhead, "wait_ranges", lambda self: cut.append(wait(self)) or cut[-1])
    doc = _stats(cli, root)
    assert cut and all(r is None for r in cut) and halves == []
    assert doc["totals"]["sessions"] == 0 and doc["totals"]["messages"] == {"user": 0, "assistant": 0, "errors": 0}
    for t in (t for t in threading.enumerate() if isinstance(t, HalfAhead)):
        t.join(timeout=10)
        assert not t.is_alive()


def test_a_second_half_started_early_ends_when_checking_a_legacy_tree_fails(cli, split_store: Path, monkeypatch):
    import threading

    from ocsight.store.legacy import LegacyTree

    def fail(self):
        raise OSError("disk gone")

    monkeypatch.setattr(LegacyTree, "detect", fail)
    started = []
    ahead = Database.stage_half_ahead
    monkeypatch.setattr(Database, "stage_half_ahead", lambda self, *a, **kw: started.append(1) or ahead(self, *a, **kw))
    assert cli("stats", "--json", "--no-cache", "--data-dir", str(split_store)).code != 0
    halves = [t for t in threading.enumerate() if isinstance(t, HalfAhead)]
    for t in halves:
        t.join(timeout=10)  # a second half never told to end would wait for prices forever
    assert started and not [t for t in halves if t.is_alive()]


def test_the_two_connections_claim_ranges_from_either_end_until_they_meet():
    import threading

    ranges = half_ahead.SessionRanges(["b", "c", "d", "e"])  # five ranges: 0 .. 4
    low, high = ranges.low_claims(), ranges.high_claims()
    assert (next(low), next(high)) == (0, 4)  # each end is its connection's from the start
    assert (next(high), next(high), next(low)) == (3, 2, 1)
    assert next(high, None) is None and next(low, None) is None
    assert ranges.split == "c"  # the thread's half: ranges 2 .. 4, sessions from "c" on
    ranges = half_ahead.SessionRanges(["b", "c", "d", "e"])
    low, high = ranges.low_claims(), ranges.high_claims()
    assert (next(low), next(high), next(high), next(high)) == (0, 4, 3, 2)
    # the last range is left to the index connection, which sums less of its own (`LEFT_TO_THE_INDEX`)
    assert next(high, None) is None and (next(low), next(low, None)) == (1, None) and ranges.split == "c"
    crowd = half_ahead.SessionRanges([f"s{i:03}" for i in range(1, 200)])
    claimed: list[list[int]] = [[], []]
    workers = [threading.Thread(target=lambda out, it: out.extend(it), args=(claimed[0], crowd.low_claims())),
               threading.Thread(target=lambda out, it: out.extend(it), args=(claimed[1], crowd.high_claims()))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(claimed[0] + claimed[1]) == list(range(200))  # every range once
    assert max(claimed[0]) < min(claimed[1]) and crowd.split == crowd.bounds[max(claimed[0])]


@pytest.mark.parametrize("slow", ["index connection", "thread"])
def test_the_slower_connection_stages_fewer_ranges_and_the_totals_stand(cli, tmp_path: Path, monkeypatch, halves,
                                                                          slow: str):
    import threading
    import time

    from ocsight.store import extract

    plan = storegen.plan_store(seed=43, sessions=80, eras=("1.18", "1.1"))
    root = write_store(plan, tmp_path / "s", "db")
    stage = extract.stage

    def staging(con, rank, scope="1", first=True, params=None, **kwargs):
        on_main = threading.current_thread() is threading.main_thread()
        if params and on_main == (slow == "index connection"):
            time.sleep(0.05)
        return stage(con, rank, scope, first, params, **kwargs)

    claims = {"index connection": 0, "thread": 0}
    low, high = half_ahead.SessionRanges.low_claims, half_ahead.SessionRanges.high_claims

    def counted(claim, who):
        def claiming(self):
            for i in claim(self):
                claims[who] += 1
                yield i
        return claiming

    monkeypatch.setattr(half_ahead.SessionRanges, "low_claims", counted(low, "index connection"))
    monkeypatch.setattr(half_ahead.SessionRanges, "high_claims", counted(high, "thread"))
    monkeypatch.setattr(extract, "stage", staging)
    doc = _stats(cli, root)
    fast = "thread" if slow == "index connection" else "index connection"
    assert halves == ["merged"] and claims[fast] > 2 * claims[slow], claims
    assert claims[fast] + claims[slow] == half_ahead.RANGES
    monkeypatch.setattr(extract, "stage", stage)
    assert doc == _in_one_connection(cli, root, monkeypatch)


@pytest.mark.parametrize("half", ["first", "second"])
def test_a_malformed_database_message_with_a_legacy_copy_counts_from_the_copy(cli, tmp_path: Path, half: str):
    # A legacy tree read beside the second half skips every message the database holds: one the
    # database could not give must still come from the tree, on whichever connection it was met.
    plan = storegen.plan_store(seed=47, sessions=30, eras=("1.1",))
    whole = _stats(cli, write_store(plan, tmp_path / "whole", "both"))
    root = write_store(plan, tmp_path / "s", "both")
    db = root / "opencode.db"
    cond, arg = _half(db, half)
    con = sqlite3.connect(db)
    con.execute(f"UPDATE message SET data = '{{\"role\": \"assist' WHERE id = (SELECT id FROM message "
                f"WHERE session_id {cond} AND data LIKE '%\"assistant\"%' LIMIT 1)", (arg,))
    con.commit()
    con.close()
    doc = stats(cli, "--no-cache", "--data-dir", str(root))
    assert doc["source"]["skipped"]["by_reason"] == {"malformed JSON": 1}
    assert without_source(doc) == whole
