"""Staging's shortcuts give what full JSON parsing gives: tool parts are told from other parts by
their first bytes where OpenCode's own shape allows, and by parsing otherwise."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from ocsight.sources import staging

TOOL_PARTS = [
    # OpenCode 1.2+'s own shape: told by the first bytes
    '{"type":"tool","tool":"bash","callID":"call_1","state":{"status":"completed","input":{},"output":"x"}}',
    '{"type":"tool","tool":"context7_resolve-library-id","callID":"c","state":{"status":"error","error":"E"}}',
    '{"type":"tool","tool":"read","callID":"c","state":{"status":"running","input":{"a":"\\"q\\""}}}',
    # other shapes: parsed
    '{"type":"tool","callID":"c","tool":"edit","state":{"status":"pending"}}',
    '{"type":"tool","tool":"we\\"ird","callID":"c","state":{"status":"completed"}}',
    '{"type":"tool","tool":"x","callID":"c\\u0041","state":{"status":"completed"}}',
    '{"type":"tool","tool":"x","callID":"c","state":{"status":"compl\\u0065ted"}}',
    '{"type":"tool","tool":"x","callID":"c","meta":{"a":"\\",\\"state\\":{\\"status\\":\\"no"},'
    '"state":{"status":"completed"}}',
    '{"type":"tool","tool":"x","callID":"c","state":{"input":{},"status":"error"}}',
    '{"type":"tool","tool":"x","state":{"status":"completed"}}',
    '{"type":"tool"}',
    '{"type":"tool" ,"tool":"x","state":{"status":"completed"}}',
    '{\n  "type": "tool",\n  "tool": "glob",\n  "callID": "c",\n  "state": {\n    "status": "completed"\n  }\n}',
    '{"id":"prt_1","type":"tool","tool":"grep","callID":"c","state":{"status":"error"}}',
    '{"tool":"bash","type":"tool","state":{"status":"completed"}}',
    # not tool parts
    '{"type":"text","text":"{\\"type\\":\\"tool\\",\\"tool\\":\\"bash\\"}"}',
    '{"type":"toolish","tool":"x","callID":"c","state":{"status":"completed"}}',
    '{"type":"tool-call","tool":"x","callID":"c","state":{"status":"completed"}}',
    '{"type":"tool\\u0022,"}',
    '{"snapshot":"abc","type":"step-start"}',
    '{"reason":"tool-calls","snapshot":"abc","type":"step-finish","tokens":{"input":1}}',
    '{"text":"\\"tool\\"","type":"text"}',
]


def _database(path: Path, parts: list[str]) -> staging.Database:
    con = sqlite3.connect(path)
    con.executescript("""CREATE TABLE project (id TEXT PRIMARY KEY, worktree TEXT);
        CREATE TABLE session (id TEXT PRIMARY KEY, project_id TEXT, version TEXT);
        CREATE TABLE message (id TEXT PRIMARY KEY, session_id TEXT, time_created INTEGER, time_updated INTEGER,
                              data TEXT);
        CREATE TABLE part (id TEXT PRIMARY KEY, message_id TEXT, session_id TEXT, time_created INTEGER,
                           time_updated INTEGER, data TEXT);""")
    con.executemany("INSERT INTO part VALUES (?, 'm', 's', 0, 0, ?)", [(f"p{i}", d) for i, d in enumerate(parts)])
    con.commit()
    con.close()
    return staging.Database(str(path), f"file:{path}?mode=ro", 0)


@pytest.mark.parametrize("n", range(len(TOOL_PARTS)))
def test_tool_parts_are_told_from_other_parts_as_json_parsing_tells_them(tmp_path: Path, n: int):
    data = TOOL_PARTS[n]
    job = staging.ReadJob((_database(tmp_path / "db", [data]),), (), staging.Scope(), detail=True)
    read = staging.stage(job)
    try:
        _messages, _steps, tools, _skipped = read.records([])
    finally:
        read.close()
    part = json.loads(data)
    shaped = isinstance(part.get("tool"), str) and isinstance(part.get("state", {}).get("status"), str)
    expected = [(part["tool"], part["state"]["status"])] if part["type"] == "tool" and shaped else []
    assert [(t.tool, t.status) for t in tools] == expected


@pytest.mark.parametrize("data", ['{"type":"tool"}', '{"type":"tool","tool":["bash"],"state":{"status":"completed"}}',
                                  '{"type":"tool","tool":"bash","state":"completed"}'])
def test_a_tool_part_of_the_wrong_shape_is_a_skipped_record_not_an_unknown_tool(tmp_path: Path, data: str):
    read = staging.stage(staging.ReadJob((_database(tmp_path / "db", [data]),), (), staging.Scope(), detail=True))
    try:
        _messages, _steps, tools, skipped = read.records([])
        read.summarise([])
        counted = read.con.execute("SELECT count(*) FROM cube_tool").fetchone()[0]
    finally:
        read.close()
    assert (tools, counted, skipped) == ([], 0, [("index", "tool_call:p0", staging.TOOL_SHAPE)])


def test_a_malformed_part_that_does_not_open_with_its_type_is_skipped_not_counted(tmp_path: Path):
    parts = ['{"type":"tool","tool":"bash","state":{"status":"completed"}}', '{"tool":"bash","type":"tool",']
    read = staging.stage(staging.ReadJob((_database(tmp_path / "db", parts),), (), staging.Scope()))
    try:
        read.summarise([])
        skipped = read.con.execute("SELECT * FROM skipped_record").fetchall()
    finally:
        read.close()
    assert [(s[1], s[2]) for s in skipped if s[0] != "index"] == [("part:p1", "malformed JSON")]
    # the valid tool call has no message here: it is counted as such, not lost
    assert [(s[1], s[2]) for s in skipped if s[0] == "index"] == [("tool_call:p0", "tool call without its message")]


def _messages(path: Path, rows: list[str]) -> staging.Database:
    db = _database(path, [])
    con = sqlite3.connect(path)
    con.executemany("INSERT INTO message VALUES (?, 's', 0, 0, ?)", [(f"m{i}", d) for i, d in enumerate(rows)])
    con.commit()
    con.close()
    return db


def test_a_message_in_json5_is_malformed_as_opencode_would_find_it_whatever_the_sqlite(tmp_path: Path):
    ok = '{"role":"assistant","cost":0.5,"tokens":{"input":1,"output":2,"reasoning":0,"cache":{"read":0,"write":0}}}'
    json5 = '{"role":"assistant", /* JSON5 */ "cost":0.5,}'
    read = staging.stage(staging.ReadJob((_messages(tmp_path / "db", [ok, json5]),), (), staging.Scope()))
    try:
        read.summarise([])
        skipped = read.con.execute("SELECT ref, reason FROM skipped_record").fetchall()
        messages = read.con.execute("SELECT sum(messages) FROM cube_usage").fetchone()[0]
    finally:
        read.close()
    assert skipped == [("message:m1", "malformed JSON")] and messages == 1
