"""The SQLite library: the bundled current one where a wheel exists, the same answers with Python's own."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import storegen
from conftest import run_ocsight, write_store
from ocsight.sqlite_library import sqlite3

BUNDLED = sys.platform == "linux" and platform.machine() == "x86_64"


def _library(env: dict[str, str] | None = None) -> str:
    code = "from ocsight.sqlite_library import sqlite3; print(sqlite3.__name__, sqlite3.sqlite_version)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, **(env or {})}).stdout.strip()


@pytest.mark.skipif(not BUNDLED, reason="pysqlite3-binary has wheels for x86-64 Linux only")
def test_a_current_sqlite_is_used_where_a_wheel_bundles_one():
    module, version = _library().split()
    assert module == "pysqlite3.dbapi2"
    assert tuple(map(int, version.split("."))) >= (3, 45)


def test_ocsight_sqlite_stdlib_chooses_pythons_own_module():
    import sqlite3 as stdlib

    assert _library({"OCSIGHT_SQLITE": "stdlib"}) == f"sqlite3 {stdlib.sqlite_version}"


def _stats(root: Path, cache: Path, library: str) -> dict:
    env = {"XDG_CACHE_HOME": str(cache), "OCSIGHT_SQLITE": library}
    return run_ocsight("stats", "--json", "--data-dir", str(root), env=env).json()


def test_both_libraries_give_the_same_stats_on_every_era(tmp_path: Path):
    plan = storegen.plan_store(seed=11, sessions=40, eras=tuple(storegen.ERAS))
    root = write_store(plan, tmp_path / "s", "both")
    bundled, stdlib = (_stats(root, tmp_path / f"cache-{lib}", lib) for lib in ("bundled", "stdlib"))
    assert bundled["totals"]["messages"]["assistant"] > 0
    for doc in (bundled, stdlib):
        del doc["source"]["index"]  # each in a cache of its own
    assert bundled == stdlib


def _json5(text: str) -> str:
    """The same object with a trailing comma: JSON5, which SQLite 3.42+ reads and `JSON.parse` refuses."""
    assert text.endswith("}")
    return text[:-1] + ",}"


@pytest.fixture
def small():
    plan = storegen.plan_store(seed=5, sessions=4, error_share=0)
    return plan


@pytest.mark.parametrize("library", ["bundled", "stdlib"])
def test_a_json5_message_row_is_skipped_as_malformed_by_either_library(tmp_path: Path, small, library: str):
    root = write_store(small, tmp_path / "s", "db")
    m = next(m for m in small.messages if m["role"] == "assistant")
    with sqlite3.connect(root / "opencode.db") as con:
        (data,) = con.execute("SELECT data FROM message WHERE id = ?", (m["id"],)).fetchone()
        con.execute("UPDATE message SET data = ? WHERE id = ?", (_json5(data), m["id"]))
    con.close()
    doc = _stats(root, tmp_path / "cache", library)
    expected = sum(small.truth[x["id"]]["tokens"]["input"] for x in small.messages if x["role"] == "assistant")
    assert doc["source"]["skipped"]["by_reason"] == {"malformed JSON": 1}
    assert doc["totals"]["tokens"]["input"] == expected - small.truth[m["id"]]["tokens"]["input"]


@pytest.mark.parametrize("library", ["bundled", "stdlib"])
def test_a_json5_tool_part_is_skipped_as_malformed_by_either_library(tmp_path: Path, small, library: str):
    root = write_store(small, tmp_path / "s", "db")
    calls = sum(1 for p in small.parts if p["type"] == "tool")
    with sqlite3.connect(root / "opencode.db") as con:
        pid, data = con.execute("SELECT id, data FROM part WHERE data LIKE '{\"type\":\"tool\",%' LIMIT 1").fetchone()
        con.execute("UPDATE part SET data = ? WHERE id = ?", (_json5(data), pid))
    con.close()
    doc = _stats(root, tmp_path / "cache", library)
    assert doc["source"]["skipped"]["by_reason"] == {"malformed JSON": 1}
    assert sum(t["calls"] for t in doc["by_tool"]) == calls - 1


@pytest.mark.parametrize("library", ["bundled", "stdlib"])
def test_a_json5_legacy_message_file_is_skipped_as_malformed_by_either_library(tmp_path: Path, small, library: str):
    root = write_store(small, tmp_path / "s", "json")
    m = next(m for m in small.messages if m["role"] == "assistant")
    path = root / "storage" / "message" / m["sessionID"] / f"{m['id']}.json"
    path.write_text(_json5(json.dumps(m)))
    doc = _stats(root, tmp_path / "cache", library)
    assert sum(doc["source"]["skipped"]["by_reason"].values()) == 1
    assistant = sum(1 for x in small.messages if x["role"] == "assistant")
    assert doc["totals"]["messages"]["assistant"] == assistant - 1


ENTRY_PROBE = """
import atexit, sys
def report():
    from ocsight.sqlite_library import sqlite3
    con = sqlite3.connect(":memory:")
    print(sqlite3.__name__, "TEMP_STORE=3" in {r[0] for r in con.execute("PRAGMA compile_options")})
atexit.register(report)
sys.argv = ["ocsight", *sys.argv[1:], "--help"]
from ocsight.cli import entry
entry()
"""


def _entry_library(*args: str) -> tuple[str, bool]:
    env = {k: v for k, v in os.environ.items() if k != "OCSIGHT_SQLITE"}
    out = subprocess.run([sys.executable, "-c", ENTRY_PROBE, *args], capture_output=True, text=True, env=env,
                         check=True)
    module, memory_only = out.stdout.strip().splitlines()[-1].split()
    return module, memory_only == "True"


@pytest.mark.parametrize("command", [["watch"], ["mcp"]])
def test_long_running_commands_use_a_sqlite_that_can_spill_temporary_tables_to_disk(command):
    # pysqlite3-binary's SQLite holds temporary tables in memory whatever `temp_store` says: a
    # sidecar following a large store would grow by a refresh's staging tables.
    module, memory_only = _entry_library(*command)
    assert module == "sqlite3" and not memory_only


@pytest.mark.skipif(not BUNDLED, reason="pysqlite3-binary has wheels for x86-64 Linux only")
@pytest.mark.parametrize("command", [["stats"], ["watch", "--once"]])
def test_one_shot_commands_use_the_current_sqlite(command):
    assert _entry_library(*command)[0] == "pysqlite3.dbapi2"
