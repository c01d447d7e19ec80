"""ocsight's index: incremental, equal to a fresh read, safe to delete, and never inside OpenCode's data."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

import storegen
from conftest import open_index, stats, without_source, write_store
from ocsight.filters import Filters


def fresh_and_cached(cli, root: Path) -> tuple[dict, dict]:
    cached = without_source(stats(cli, "--data-dir", str(root)))
    fresh = without_source(stats(cli, "--no-cache", "--data-dir", str(root)))
    return cached, fresh


def _now_ms() -> int:
    return int(time.time() * 1000)


def _turn_a_tool_call_into_an_error(con: sqlite3.Connection) -> None:
    """A completed tool call rewritten as ended with an error, as OpenCode rewrites a part in place."""
    pid, data = con.execute(
        "SELECT id, data FROM part WHERE data LIKE '%\"type\":\"tool\"%' AND data LIKE '%\"status\":\"completed\"%' "
        "LIMIT 1"
    ).fetchone()
    d = json.loads(data)
    d["state"]["status"] = "error"
    con.execute("UPDATE part SET data = ?, time_updated = ? WHERE id = ?", (json.dumps(d), _now_ms(), pid))
    con.commit()


def test_cached_runs_follow_every_kind_of_change_to_the_database(cli, tmp_path: Path):
    plan = storegen.plan_store(seed=41, sessions=30)
    ids = [s["id"] for s in plan.sessions]
    root = tmp_path / "s"
    storegen.write_sqlite(plan, root / "opencode.db", session_ids=set(ids[:20]))
    first = stats(cli, "--data-dir", str(root))

    # new sessions arrive (rowids beyond the last read, old time stamps)
    storegen.write_sqlite(plan, root / "opencode.db", session_ids=set(ids[20:]))
    cached, fresh = fresh_and_cached(cli, root)
    assert cached == fresh and cached["totals"] != first["totals"]

    con = sqlite3.connect(root / "opencode.db")
    # a message streams in: rewritten in place with more tokens
    mid, data = con.execute("SELECT id, data FROM message WHERE data LIKE '%\"assistant\"%' LIMIT 1").fetchone()
    d = json.loads(data)
    d["tokens"]["input"] += 1_000
    d["tokens"].pop("total", None)
    con.execute("UPDATE message SET data = ?, time_updated = ? WHERE id = ?", (json.dumps(d), _now_ms(), mid))
    con.commit()
    before = cached["totals"]["tokens"]["input"]
    cached, fresh = fresh_and_cached(cli, root)
    assert cached == fresh and cached["totals"]["tokens"]["input"] == before + 1_000

    # a session is deleted (OpenCode cascades to its messages and parts)
    sid = ids[3]
    for table, col in (("part", "session_id"), ("message", "session_id"), ("session", "id")):
        con.execute(f"DELETE FROM {table} WHERE {col} = ?", (sid,))
    con.commit()
    cached, fresh = fresh_and_cached(cli, root)
    assert cached == fresh and cached["totals"]["sessions"] == fresh["totals"]["sessions"]

    # a tool call finishes with an error after its message was read
    _turn_a_tool_call_into_an_error(con)
    con.close()
    cached, fresh = fresh_and_cached(cli, root)
    assert cached == fresh


def test_a_tool_call_that_finishes_after_a_read_is_counted_by_the_next(tmp_path: Path):
    root = write_store(storegen.plan_store(seed=41, sessions=12), tmp_path / "s", "db")

    def tool_errors() -> int:
        with open_index(root) as idx:
            return sum(t.errors for t in idx.reader.breakdown(Filters(), "auto").tools)

    before = tool_errors()
    con = sqlite3.connect(root / "opencode.db")
    _turn_a_tool_call_into_an_error(con)
    con.close()
    assert tool_errors() == before + 1


def test_a_database_replaced_by_a_bigger_one_is_read_afresh(cli, tmp_path: Path):
    # Row counts alone cannot tell: the new file holds the old one's row numbers and more.
    root = tmp_path / "s"
    small = storegen.plan_store(seed=5, sessions=4)
    storegen.write_sqlite(small, root / "opencode.db")
    stats(cli, "--data-dir", str(root))
    (root / "opencode.db").unlink()
    storegen.write_sqlite(storegen.plan_store(seed=6, sessions=9), root / "opencode.db")
    cached, fresh = fresh_and_cached(cli, root)
    assert cached == fresh and cached["totals"]["sessions"] == 9


def test_cached_runs_follow_every_kind_of_change_to_the_legacy_tree(cli, tmp_path: Path):
    plan = storegen.plan_store(seed=43, sessions=20, eras=("1.1",))
    ids = [s["id"] for s in plan.sessions]
    root = tmp_path / "s"
    storegen.write_legacy(plan, root / "storage", set(ids[:12]))
    stats(cli, "--data-dir", str(root))

    storegen.write_legacy(plan, root / "storage", set(ids[12:]))  # new sessions
    cached, fresh = fresh_and_cached(cli, root)
    assert cached == fresh

    msg_dir = root / "storage" / "message" / ids[0]
    victim = sorted(msg_dir.iterdir())[-1]
    victim.unlink()  # a message reverted away
    cached, fresh = fresh_and_cached(cli, root)
    assert cached == fresh


def test_a_message_still_streaming_in_the_legacy_tree_is_read_again(cli, tmp_path: Path):
    b = storegen.Builder()
    s = b.session(b.project(), version="1.1.65")
    m = b.assistant(s, storegen.BASE_MS, storegen.tokens(5, total=5), completed=False, step=False)
    root = write_store(b.plan, tmp_path / "s", "json")
    assert stats(cli, "--data-dir", str(root))["totals"]["tokens"]["input"] == 5
    m["tokens"] = storegen.tokens(500, 20, total=520)
    m["time"]["completed"] = storegen.BASE_MS + 10
    path = root / "storage" / "message" / s["id"] / f"{m['id']}.json"
    path.write_text(json.dumps(m))  # rewritten in place: the directory's mtime does not change
    assert stats(cli, "--data-dir", str(root))["totals"]["tokens"]["input"] == 500


def test_a_database_row_deleted_brings_back_its_legacy_copy(cli, tmp_path: Path):
    plan = storegen.plan_store(seed=47, sessions=6, eras=("1.1",))
    root = write_store(plan, tmp_path / "s", "both")
    full = stats(cli, "--data-dir", str(root))
    con = sqlite3.connect(root / "opencode.db")
    con.execute("DELETE FROM message WHERE id = (SELECT id FROM message LIMIT 1)")
    con.commit()
    con.close()
    cached, fresh = fresh_and_cached(cli, root)
    assert cached == fresh == without_source(full)


def test_the_index_lives_in_the_cache_directory_and_is_safe_to_delete(cli, tmp_path: Path):
    root = write_store(storegen.plan_store(seed=1, sessions=8), tmp_path / "s", "db")
    doc = stats(cli, "--data-dir", str(root))
    index = Path(doc["source"]["index"])
    assert index.parent == Path(os.environ["XDG_CACHE_HOME"]) / "ocsight"
    for f in index.parent.glob(index.name + "*"):
        f.unlink()
    assert without_source(stats(cli, "--data-dir", str(root))) == without_source(doc)


@pytest.fixture
def shared_umask():
    """The most common umask: files readable by everyone unless a program says otherwise."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_the_index_and_its_wal_are_private_to_the_user(cli, tmp_path: Path, shared_umask):
    root = write_store(storegen.plan_store(seed=1, sessions=8), tmp_path / "s", "db")
    index = Path(stats(cli, "--data-dir", str(root))["source"]["index"])
    with open_index(root):  # while it is open, its WAL and shared memory are there too
        modes = {f.name: f.stat().st_mode & 0o777 for f in index.parent.glob(index.name + "*")}
    assert modes == {index.name + suffix: 0o600 for suffix in ("", "-wal", "-shm")}
    assert index.parent.stat().st_mode & 0o777 == 0o700


def test_an_index_an_older_release_left_readable_by_others_is_made_private(cli, tmp_path: Path, shared_umask):
    root = write_store(storegen.plan_store(seed=1, sessions=8), tmp_path / "s", "db")
    index = Path(stats(cli, "--data-dir", str(root))["source"]["index"])
    index.chmod(0o644)
    stats(cli, "--data-dir", str(root))
    assert index.stat().st_mode & 0o777 == 0o600


def test_a_corrupt_index_is_rebuilt(cli, tmp_path: Path):
    root = write_store(storegen.plan_store(seed=1, sessions=8), tmp_path / "s", "db")
    doc = stats(cli, "--data-dir", str(root))
    index = Path(doc["source"]["index"])
    for suffix in ("-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    index.write_bytes(b"garbage" * 1000)
    assert without_source(stats(cli, "--data-dir", str(root))) == without_source(doc)


def test_an_index_left_with_a_rollback_journal_is_used_and_turned_to_wal(cli, tmp_path: Path):
    root = write_store(storegen.plan_store(seed=1, sessions=8), tmp_path / "s", "db")
    doc = stats(cli, "--data-dir", str(root))
    index = Path(doc["source"]["index"])
    con = sqlite3.connect(index)
    assert con.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"  # as a build cut short leaves it
    con.close()
    assert without_source(stats(cli, "--data-dir", str(root))) == without_source(doc)
    con = sqlite3.connect(index)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_no_cache_writes_nothing(cli, tmp_path: Path):
    root = write_store(storegen.plan_store(seed=1, sessions=4), tmp_path / "s", "db")
    doc = stats(cli, "--no-cache", "--data-dir", str(root))
    assert doc["source"]["index"] is None
    assert not (Path(os.environ["XDG_CACHE_HOME"]) / "ocsight").exists()


def _tree_fingerprint(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(root))] = (
            st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
        )
    return out


@pytest.mark.parametrize("kind", ["db", "json", "both"])
def test_opencodes_data_directory_is_never_written(cli, tmp_path: Path, kind: str):
    root = write_store(storegen.plan_store(seed=5, sessions=10), tmp_path / kind, kind)
    before = _tree_fingerprint(root)
    stats(cli, "--data-dir", str(root))
    stats(cli, "--data-dir", str(root))
    stats(cli, "--no-cache", "--data-dir", str(root))
    assert _tree_fingerprint(root) == before


def test_the_index_is_never_kept_inside_the_data_directory(cli, tmp_path: Path, monkeypatch):
    root = write_store(storegen.plan_store(seed=5, sessions=2), tmp_path / "s", "db")
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "cache"))
    r = cli("stats", "--json", "--data-dir", str(root))
    assert r.code == 1 and "inside OpenCode's data directory" in r.err
    assert not (root / "cache").exists()


def test_an_unchanged_store_does_not_rewrite_the_index(cli, tmp_path: Path):
    root = write_store(storegen.plan_store(seed=5, sessions=10), tmp_path / "s", "both")
    index = Path(stats(cli, "--data-dir", str(root))["source"]["index"])
    stamps = {f.name: (f.stat().st_size, f.stat().st_mtime_ns) for f in index.parent.glob(index.name + "*")}
    stats(cli, "--data-dir", str(root))
    assert {f.name: (f.stat().st_size, f.stat().st_mtime_ns) for f in index.parent.glob(index.name + "*")} == stamps


def test_each_set_of_sources_has_its_own_index(cli, tmp_path: Path):
    a = write_store(storegen.plan_store(seed=1, sessions=3), tmp_path / "a", "db")
    b = write_store(storegen.plan_store(seed=2, sessions=5), tmp_path / "b", "db")
    da, db = stats(cli, "--data-dir", str(a)), stats(cli, "--data-dir", str(b))
    assert da["source"]["index"] != db["source"]["index"]
    assert da["totals"]["sessions"] == 3 and db["totals"]["sessions"] == 5


@pytest.mark.parametrize(("lean", "temp_store"), [(False, 2), (True, 1)])  # 2: MEMORY, 1: FILE
def test_a_refresh_stages_in_memory_unless_its_consumer_runs_long(lean: bool, temp_store: int):
    from ocsight import reading

    with reading.open_index(reading.ReadOptions(demo=True, lean_memory=lean)) as idx:
        assert idx.con.execute("PRAGMA temp_store").fetchone()[0] == temp_store


def test_one_index_refreshes_again_after_more_changes(tmp_path: Path):
    """A long-running consumer may keep its index open across refreshes: the second one rebuilds
    its temporary tables over those of the first."""
    from ocsight.index import Index
    from ocsight.pricing.catalogue import Catalogue
    from ocsight.sources import locate

    plan = storegen.plan_store(seed=43, sessions=12)
    ids = [s["id"] for s in plan.sessions]
    root = tmp_path / "s"
    storegen.write_sqlite(plan, root / "opencode.db", session_ids=set(ids[:6]))
    with Index.open(locate.locate((str(root),)), use_cache=False) as idx:
        idx.refresh(Catalogue())
        storegen.write_sqlite(plan, root / "opencode.db", session_ids=set(ids[6:]))
        idx.refresh(Catalogue())
        assert idx.touched == set(ids[6:])
        totals = idx.reader.breakdown(Filters(), "auto").totals
    expected = sum(plan.truth[m["id"]]["tokens"]["input"] for m in plan.messages if m["role"] == "assistant")
    assert totals.sessions == 12 and totals.usage.tokens.input == expected


def test_a_new_index_is_written_in_16_kb_pages(cli, tmp_path: Path):
    root = write_store(storegen.plan_store(seed=1, sessions=8), tmp_path / "s", "db")
    doc = stats(cli, "--data-dir", str(root))
    con = sqlite3.connect(doc["source"]["index"])
    assert con.execute("PRAGMA page_size").fetchone()[0] == 16384
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    assert without_source(stats(cli, "--data-dir", str(root))) == without_source(doc)
