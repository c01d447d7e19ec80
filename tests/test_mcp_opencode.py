"""The real OpenCode asks `ocsight mcp` for usage: configured as a local MCP server, called by the model.

OpenCode 1.18.33 (from npm, sandboxed, offline) runs a turn against the mock model, whose `[mcp]`
scenario calls `ocsight_usage_summary`; OpenCode starts `ocsight mcp` over stdio, calls the tool
and stores its output in a tool part of its own database. That output must hold the totals that
`ocsight stats --json` gives for the same corpus.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest

import harness
import mockmodel
from conftest import stats
from corpus import store_dir

pytestmark = pytest.mark.e2e

VERSION = harness.VERSIONS["1.18"]
CORPUS = "opencode-1.18"


def tool_parts(db: Path, tool: str) -> list[dict]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT data FROM part").fetchall()
    finally:
        con.close()
    parts = [json.loads(r[0]) for r in rows]
    return [p for p in parts if p.get("type") == "tool" and p.get("tool") == tool]


def json_in(output: str) -> dict:
    """The JSON document after the text summary in a tool's output."""
    return json.loads(output[output.index("\n{") + 1:])


@pytest.fixture(scope="module")
def turn(tmp_path_factory) -> tuple[list[dict], list[dict], Path, Path]:
    root = tmp_path_factory.mktemp("mcp-opencode")
    corpus = root / "corpus"
    shutil.copytree(store_dir(CORPUS), corpus)
    log = root / "requests.jsonl"
    log.touch()
    server = {"type": "local", "enabled": True,
              "command": [sys.executable, "-m", "ocsight", "mcp", "--data-dir", str(corpus), "--timezone", "UTC"]}
    with mockmodel.MockModel(log) as mock:
        oc = harness.OpenCode(VERSION, root / "sandbox", mock.url, extra_config={"mcp": {"ocsight": server}})
        oc.run("[mcp] how much did I spend?")
    return tool_parts(oc.data_dir / "opencode.db", mockmodel.MCP_TOOL), mockmodel.read_log(log), corpus, oc.root


def test_opencode_calls_ocsight_usage_summary_and_stores_its_output(turn):
    parts, log, _corpus, _sandbox = turn
    assert [e["tool"] for e in log if e["scenario"] == "mcp"] == [mockmodel.MCP_TOOL, None]
    assert len(parts) == 1
    state = parts[0]["state"]
    assert state["status"] == "completed", state
    assert state["input"] == mockmodel.MCP_ARGUMENTS


def test_the_stored_tool_output_holds_the_totals_of_stats_json(turn, cli, monkeypatch):
    parts, _log, corpus, sandbox = turn
    # the server ran with OpenCode's environment, and priced the free provider from OpenCode's config
    monkeypatch.setenv("XDG_CONFIG_HOME", str(sandbox / "config"))
    output = parts[0]["state"]["output"]
    expected = stats(cli, "--data-dir", str(corpus), "--since", "2000-01-01", "-z", "UTC")
    doc = json_in(output)
    assert doc["totals"] == expected["totals"]
    assert {k: v for k, v in doc.items() if k != "source"} == {k: v for k, v in expected.items() if k != "source"}
    t = expected["totals"]
    assert f"${t['cost']['usd']:,.4f}" in output and f"{t['tokens']['total']:,} tokens" in output


def test_the_mcp_server_wrote_nothing_into_the_corpus(turn):
    _parts, _log, corpus, _sandbox = turn
    assert sorted(p.relative_to(corpus) for p in corpus.rglob("*")) == \
        sorted(p.relative_to(store_dir(CORPUS)) for p in store_dir(CORPUS).rglob("*"))
