"""The extraction's shortcuts give what full JSON parsing gives."""

from __future__ import annotations

import json

import pytest

from ocsight.sqlite_library import sqlite3
from ocsight.store import extract

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


def _staged_tools(con: sqlite3.Connection) -> list[tuple]:
    return con.execute("SELECT id, tool, status FROM temp.stage_tool ORDER BY id").fetchall()


@pytest.mark.parametrize("n", range(len(TOOL_PARTS)))
def test_tool_parts_are_told_from_other_parts_as_json_parsing_tells_them(n: int):
    data = TOOL_PARTS[n]
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE session (id TEXT, version TEXT, era TEXT)")
    con.execute("CREATE TEMP VIEW src_part AS SELECT 'p' AS id, 'm' AS message_id, 's' AS session_id, ? AS data"
                .replace("?", "'" + data.replace("'", "''") + "'"))
    con.execute("CREATE TEMP VIEW src_message AS SELECT NULL AS id, NULL AS session_id, NULL AS time_created, "
                "NULL AS data WHERE 0")
    extract.create_staging(con)
    extract.stage(con, 0)
    part = json.loads(data)
    expected = [("p", part.get("tool"), part.get("state", {}).get("status"))] if part["type"] == "tool" else []
    assert _staged_tools(con) == expected


# JSON values a token count or a cost can hold, with what OpenCode's own numbers would make of them:
# (JSON text, as a count, as a cost in picodollars); None: not a number of that kind (the record is skipped);
# ANY: beyond any real cost, not pinned.
ANY = object()
STORED_VALUES = [
    ("null", 0, 0),
    ("0", 0, 0),
    ("12", 12, 12_000_000_000_000),
    ("12.0", 12, 12_000_000_000_000),
    ("12.5", None, 12_500_000_000_000),
    ("0.0000015", None, 1_500_000),
    ("-5", None, None),
    ("-0.5", None, None),
    ('"12"', None, None),
    ('""', None, None),
    ('"abc"', None, None),
    ("true", 1, 1_000_000_000_000),  # SQLite reads JSON true as 1, as it always has here
    ("[1]", None, None),
    ('{"a": 1}', None, None),
    ("1e300", None, ANY),
    ("9007199254740993", 9007199254740993, ANY),
]


@pytest.mark.parametrize(("text", "count", "pico"), STORED_VALUES)
def test_a_stored_value_is_a_count_or_a_cost_only_when_it_is_a_non_negative_number(text, count, pico):
    from ocsight import normalise

    con = sqlite3.connect(":memory:")
    value = "(SELECT json_extract(?, '$.v') AS v) AS x"
    got_count = con.execute(f"SELECT {normalise.count_sql('x.v')} FROM {value}", (f'{{"v": {text}}}',)).fetchone()[0]
    got_pico = con.execute(f"SELECT {normalise.cost_pico_sql('x.v')} FROM {value}", (f'{{"v": {text}}}',)).fetchone()[0]
    assert (got_count, type(got_count)) == (count, type(count))
    if pico is not ANY:
        assert (got_pico, type(got_pico)) == (pico, type(pico))
