"""`ocsight mcp`, driven by the official MCP client over stdio and streamable HTTP.

Every tool and resource is checked against the CLI's JSON (`stats`, `daily`, `weekly`, `session`)
on the recorded corpora; then completions, errors for bad input, freshness without
`refresh_index`, and that nothing is written into the data directory. The trees `top_sessions`
chooses in SQL are checked in-process against one run over everything.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio.from_thread
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.types import CallToolResult, PromptReference, ResourceTemplateReference

import storegen
from conftest import open_index, run_ocsight, stats, without_source
from corpus import NAMES, raw_store, store_dir
from ocsight.filters import Filters, make_filters
from ocsight.mcp import answers
from ocsight.reports.documents import session_trees

CORPUS = "opencode-1.18"
ALL_TIME = "2000-01-01"
TOOLS = {"usage_summary", "top_sessions", "provider_trends", "session_details", "refresh_index"}


# -- a synchronous face on the asynchronous client -------------------------------------------------------

class Session:
    """One connection of the official client, driven from the test's thread through an anyio portal."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, client: Client) -> None:
        self.portal, self.client = portal, client

    def run(self, fn, *args, **kwargs):
        return self.portal.call(functools.partial(fn, *args, **kwargs))

    def call(self, tool: str, **arguments) -> CallToolResult:
        return self.run(self.client.call_tool, tool, arguments)

    def doc(self, tool: str, **arguments) -> dict:
        result = self.call(tool, **arguments)
        assert not result.is_error, result.content[0].text
        assert json.loads(result.content[1].text) == result.structured_content
        return result.structured_content

    def error(self, tool: str, **arguments) -> str:
        result = self.call(tool, **arguments)
        assert result.is_error, result
        return result.content[0].text

    def read(self, uri: str) -> dict:
        result = self.run(self.client.read_resource, uri)
        assert result.contents[0].mime_type == "application/json"
        return json.loads(result.contents[0].text)

    def complete(self, ref, name: str, value: str) -> list[str]:
        return self.run(self.client.complete, ref, {"name": name, "value": value}).completion.values


@contextmanager
def connect(server, mode: str = "auto") -> Iterator[Session]:
    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(Client(server, cache=None, mode=mode)) as client:
        yield Session(portal, client)


def server_env(root: Path) -> dict[str, str]:
    """The isolated environment `conftest.isolated` gives tests, for a server outliving one test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCODE", "XDG_", "OCSIGHT_"))}
    for var, sub in (("HOME", "home"), ("XDG_DATA_HOME", "xdg-data"), ("XDG_CACHE_HOME", "xdg-cache"),
                     ("XDG_CONFIG_HOME", "xdg-config"), ("XDG_STATE_HOME", "xdg-state")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(root / sub)
    env["TZ"] = "UTC"
    return env


def stdio(store: Path, root: Path, *flags: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "ocsight", "mcp", "--data-dir", str(store),
                                                               *flags], env=server_env(root))


def copy_corpus(name: str, root: Path) -> Path:
    store = root / "store"
    shutil.copytree(store_dir(name), store)
    return store


@dataclass
class Served:
    session: Session
    store: Path
    corpus: str

    def cli(self, cli, *args: str) -> dict:
        return cli(*args, "--data-dir", str(self.store)).json()


@pytest.fixture(scope="module", params=NAMES)
def served(request, tmp_path_factory) -> Iterator[Served]:
    """A server over stdio on a copy of each recorded corpus, with the initialize handshake OpenCode uses."""
    root = tmp_path_factory.mktemp(f"mcp-{request.param}")
    store = copy_corpus(request.param, root)
    with connect(stdio(store, root), mode="legacy") as session:
        yield Served(session, store, request.param)


@dataclass
class Http:
    session: Session
    store: Path
    port: int
    pid: int


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def http(tmp_path_factory) -> Iterator[Http]:
    """`ocsight mcp --http` in a child process, on the 1.18 corpus, reached at its URL."""
    root = tmp_path_factory.mktemp("mcp-http")
    store = copy_corpus(CORPUS, root)
    port = free_port()
    log = (root / "stderr.txt").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "ocsight", "mcp", "--http", "--port", str(port), "--data-dir",
                             str(store)], env=server_env(root), stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while not listening(port):
            assert proc.poll() is None, (root / "stderr.txt").read_text()
            assert time.monotonic() < deadline, "ocsight mcp --http did not listen"
            time.sleep(0.1)
        with connect(f"http://127.0.0.1:{port}/mcp") as session:
            yield Http(session, store, port, proc.pid)
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
    # uvicorn shuts down gracefully, then re-raises SIGTERM to end as the signal asked
    assert proc.returncode in (0, -15) and "Traceback" not in (root / "stderr.txt").read_text()


def listen_addresses(port: int) -> set[str]:
    """The local addresses of sockets listening on `port` (from /proc, as hex)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def listening(port: int) -> bool:
    return bool(listen_addresses(port))


def session_list(served: Served, cli, *args: str) -> list[dict]:
    return served.cli(cli, "session", "--json", "--limit", "100000", *args)["sessions"]


def walk(nodes: list[dict]) -> Iterator[dict]:
    for n in nodes:
        yield n
        yield from walk(n["children"])


def ranked(roots: list[dict], by: str = "cost") -> list[dict]:
    def key(n: dict) -> tuple:
        r = n["rollup"]
        first = (r["cost"]["usd"], r["tokens"]["total"]) if by == "cost" else (r["tokens"]["total"], r["cost"]["usd"])
        return (*first, n["time_created"] or 0, n["id"])

    return sorted(roots, key=key, reverse=True)


# -- tools ------------------------------------------------------------------------------------------------

def test_every_tool_is_listed_read_only_with_its_arguments(served):
    tools = {t.name: t for t in served.session.run(served.session.client.list_tools).tools}
    assert set(tools) == TOOLS
    for t in tools.values():
        assert t.annotations.read_only_hint and not t.annotations.destructive_hint and t.description
    assert set(tools["usage_summary"].input_schema["properties"]) == {"days", "since", "until", "provider", "model",
                                                                      "project", "agent"}
    assert tools["top_sessions"].input_schema["properties"]["by"]["enum"] == ["cost", "tokens"]
    assert tools["provider_trends"].input_schema["properties"]["interval"]["enum"] == ["day", "week"]
    assert tools["session_details"].input_schema["required"] == ["id"]


def test_usage_summary_is_stats_json(served, cli):
    doc = served.session.doc("usage_summary")
    expected = served.cli(cli, "stats", "--json")
    assert without_source(doc) == without_source(expected)
    for key in ("records", "skipped", "databases", "legacy_dirs"):
        assert doc["source"][key] == expected["source"][key]


def test_usage_summary_takes_the_filters_of_stats_json(served, cli):
    everything = served.cli(cli, "stats", "--json")
    cases = [{"provider": p["provider"]} for p in everything["by_provider"]]
    cases += [{"model": f"{m['provider']}/{m['model']}"} for m in everything["by_model"]]
    cases += [{"model": everything["by_model"][0]["model"], "agent": a["agent"]} for a in everything["by_agent"]]
    cases += [{"project": p["project"][-7:]} for p in everything["by_project"]]
    cases += [{"since": ALL_TIME, "until": "2100-12-31"}, {"days": 36500}, {"provider": "MOCK,freebie"}]
    for args in cases:
        flags = [x for k, v in args.items() for x in (f"--{k}", str(v))]
        expected = served.cli(cli, "stats", "--json", *flags)
        assert without_source(served.session.doc("usage_summary", **args)) == without_source(expected), args


def test_usage_summary_says_the_totals_in_its_text(served, cli):
    text = served.session.call("usage_summary").content[0].text
    t = served.cli(cli, "stats", "--json")["totals"]
    assert f"${t['cost']['usd']:,.4f}" in text and f"{t['tokens']['total']:,} tokens" in text
    assert f"{t['messages']['assistant']:,} model calls" in text and f"{t['sessions']:,} sessions" in text


def test_top_sessions_are_the_costliest_sessions_of_session_json(served, cli):
    roots = session_list(served, cli)
    doc = served.session.doc("top_sessions", limit=3)
    assert doc["sessions"] == ranked(roots)[:3]
    assert doc["total_sessions"] == len(roots) and doc["by"] == "cost"


def test_top_sessions_by_tokens_in_a_window(served, cli):
    roots = session_list(served, cli, "--since", ALL_TIME, "--agent", "build")
    doc = served.session.doc("top_sessions", limit=100, by="tokens", since=ALL_TIME, agent="build")
    assert doc["sessions"] == ranked(roots, "tokens")


def test_provider_trends_are_daily_json_overall_and_per_provider(served, cli):
    doc = served.session.doc("provider_trends", since=ALL_TIME)
    assert doc["periods"] == served.cli(cli, "daily", "--json", "--since", ALL_TIME)["periods"]
    providers = [p["provider"] for p in served.cli(cli, "stats", "--json")["by_provider"]]
    assert sorted(e["provider"] for e in doc["by_provider"]) == sorted(providers)
    for e in doc["by_provider"]:
        assert e["periods"] == served.cli(cli, "daily", "--json", "--since", ALL_TIME, "--provider",
                                          e["provider"])["periods"]


def test_provider_trends_default_to_the_30_days_up_to_until(served, cli):
    import datetime as dt

    day = served.cli(cli, "daily", "--json")["periods"][-1]["period"]
    since = (dt.date.fromisoformat(day) - dt.timedelta(days=29)).isoformat()
    doc = served.session.doc("provider_trends", until=day)
    assert (doc["filters"]["since"], doc["filters"]["until"]) == (since, day)
    assert doc["periods"] == served.cli(cli, "daily", "--json", "--since", since, "--until", day)["periods"] != []


def test_provider_trends_by_week_are_weekly_json(served, cli):
    doc = served.session.doc("provider_trends", interval="week", days=36500)
    assert doc["period"] == "week"
    assert doc["periods"] == served.cli(cli, "weekly", "--json", "--days", "36500")["periods"]


def test_session_details_is_the_session_tree_of_session_json(served, cli):
    for node in walk(session_list(served, cli)):
        doc = served.session.doc("session_details", id=node["id"])
        assert doc["session"] == node
        assert doc["session"] == served.cli(cli, "session", node["id"], "--json")["sessions"][0]


def test_session_details_with_subagents_add_up_to_the_rollup(served, cli):
    for node in walk(session_list(served, cli)):
        doc = served.session.doc("session_details", id=node["id"])
        totals, rollup = doc["with_subagents"]["totals"], doc["session"]["rollup"]
        assert totals["tokens"] == rollup["tokens"]
        assert totals["messages"]["assistant"] == rollup["messages"]
        assert totals["cost"]["usd"] == pytest.approx(rollup["cost"]["usd"], abs=1e-9)
        assert sum(t["calls"] for t in doc["by_tool"]) == node["tool_calls"]


def test_session_details_counts_the_tool_calls_opencode_stored(served, cli):
    raw = raw_store(served.store)
    calls: dict[str, Counter] = {}
    for p in raw.parts.values():
        if p["type"] == "tool" and p["messageID"] in raw.messages:
            sid = raw.messages[p["messageID"]]["sessionID"]
            calls.setdefault(sid, Counter())[p["tool"], p["state"]["status"] == "error"] += 1
    assert calls
    for sid, counted in calls.items():
        by_tool = served.session.doc("session_details", id=sid)["by_tool"]
        got = Counter()
        for t in by_tool:
            got[t["tool"], True] += t["errors"]
            got[t["tool"], False] += t["calls"] - t["errors"]
        assert +got == counted, sid


def test_refresh_index_reports_what_the_index_holds(served, cli):
    served.session.doc("usage_summary")
    doc = served.session.doc("refresh_index")
    expected = served.cli(cli, "stats", "--json")["source"]
    assert doc["read"] == "unchanged" and doc["changed_sessions"] == 0
    assert doc["records"] == expected["records"]
    assert doc["skipped"] == {k: expected["skipped"][k] for k in ("total", "by_reason")}


# -- resources, prompt, completion --------------------------------------------------------------------------

def test_every_resource_is_listed(served):
    s = served.session
    assert {str(r.uri) for r in s.run(s.client.list_resources).resources} == {"ocsight://metrics/summary",
                                                                              "ocsight://providers"}
    assert {t.uri_template for t in s.run(s.client.list_resource_templates).resource_templates} == {
        "ocsight://providers/{provider}", "ocsight://sessions/{id}"}


def test_metrics_summary_resource_is_stats_json(served, cli):
    assert without_source(served.session.read("ocsight://metrics/summary")) == \
        without_source(served.cli(cli, "stats", "--json"))


def test_provider_resources_are_stats_json_per_provider(served, cli):
    expected = served.cli(cli, "stats", "--json")
    listing = served.session.read("ocsight://providers")
    assert listing["by_provider"] == expected["by_provider"] and listing["by_model"] == expected["by_model"]
    assert listing["totals"] == expected["totals"]
    for p in expected["by_provider"]:
        doc = served.session.read(f"ocsight://providers/{p['provider']}")
        assert without_source(doc) == without_source(served.cli(cli, "stats", "--json", "--provider", p["provider"]))


def test_session_resources_are_session_details(served, cli):
    for node in walk(session_list(served, cli)):
        assert served.session.read(f"ocsight://sessions/{node['id']}") == \
            served.session.doc("session_details", id=node["id"])


def test_completion_names_providers_models_projects_agents_and_sessions(served, cli):
    s = served.session
    doc = served.cli(cli, "stats", "--json")
    prompt = PromptReference(name="usage_report")
    assert s.complete(prompt, "provider", "") == sorted(p["provider"] for p in doc["by_provider"])
    assert s.complete(prompt, "provider", "mo") == ["mock"]
    models = s.complete(prompt, "model", "mock/")
    assert models == sorted(f"mock/{m['model']}" for m in doc["by_model"] if m["provider"] == "mock")
    assert s.complete(prompt, "model", "free") == ["freebie/free-model", "free-model"]
    assert s.complete(prompt, "project", "webshop") == [p["project"] for p in doc["by_project"]
                                                        if "webshop" in p["project"]]
    assert s.complete(prompt, "agent", "") == sorted(a["agent"] for a in doc["by_agent"])
    ids = [n["id"] for n in walk(session_list(served, cli))]
    template = ResourceTemplateReference(uri="ocsight://sessions/{id}")
    assert sorted(s.complete(template, "id", "")) == sorted(ids)
    assert set(s.complete(template, "id", ids[0][:12])) == {i for i in ids if i.startswith(ids[0][:12])}
    assert s.complete(ResourceTemplateReference(uri="ocsight://providers/{provider}"), "provider", "f") == ["freebie"]
    assert s.complete(prompt, "days", "") == []


def test_usage_report_prompt_asks_for_the_tools(served):
    s = served.session
    prompts = s.run(s.client.list_prompts).prompts
    assert [p.name for p in prompts] == ["usage_report"]
    assert {a.name for a in prompts[0].arguments} == {"days", "provider", "model", "project", "agent"}
    text = s.run(s.client.get_prompt, "usage_report", {"days": "7", "provider": "mock"}).messages[0].content.text
    assert "usage_summary" in text and '{"provider": "mock", "days": 7}' in text


# -- over HTTP ----------------------------------------------------------------------------------------------

def test_http_serves_the_same_answers(http, cli):
    expected = stats(cli, "--data-dir", str(http.store))
    assert without_source(http.session.doc("usage_summary")) == without_source(expected)
    assert without_source(http.session.read("ocsight://metrics/summary")) == without_source(expected)
    roots = cli("session", "--json", "--limit", "1000", "--data-dir", str(http.store)).json()["sessions"]
    assert http.session.doc("top_sessions", limit=2)["sessions"] == ranked(roots)[:2]


def test_http_listens_on_127_0_0_1_only(http):
    assert listen_addresses(http.port) == {"0100007F"}


# -- errors -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("tool", "arguments", "says"), [
    ("session_details", {"id": "ses_nope"}, "unknown session 'ses_nope'"),
    ("session_details", {"id": " "}, "id must be a session ID"),
    ("session_details", {}, "bad argument id: Field required"),
    ("usage_summary", {"provider": "nope"}, "unknown provider 'nope' (known: freebie, mock)"),
    ("usage_summary", {"model": "mock/nope"}, "unknown model 'mock/nope'"),
    ("usage_summary", {"agent": "nope"}, "unknown agent 'nope'"),
    ("usage_summary", {"project": "no-such-project"}, "no project path contains 'no-such-project'"),
    ("usage_summary", {"since": "yesterday"}, "since: expected a date like"),
    ("usage_summary", {"since": "2026-02-01", "until": "2026-01-01"}, "until is before since"),
    ("usage_summary", {"days": 0}, "bad argument days: Input should be greater than or equal to 1"),
    ("usage_summary", {"days": "many"}, "bad argument days"),
    ("usage_summary", {"dayz": 3}, "unknown argument 'dayz'"),
    ("top_sessions", {"limit": -1}, "bad argument limit: Input should be greater than or equal to 1"),
    ("top_sessions", {"limit": 101}, "bad argument limit"),
    ("top_sessions", {"by": "speed"}, "bad argument by"),
    ("provider_trends", {"interval": "month"}, "bad argument interval: Input should be 'day' or 'week'"),
    ("provider_trends", {"until": "2026-13-01"}, "until: expected a date like"),
    ("no_such_tool", {}, "Unknown tool: no_such_tool"),
])
def test_bad_input_is_a_one_line_tool_error(http, tool, arguments, says):
    text = http.session.error(tool, **arguments)
    assert says in text and "\n" not in text, text


@pytest.mark.parametrize(("uri", "says"), [
    ("ocsight://sessions/ses_nope", "unknown session 'ses_nope'"),
    ("ocsight://providers/nope", "unknown provider 'nope'"),
    ("ocsight://nothing/here", "Unknown resource"),
])
def test_an_unknown_resource_is_an_invalid_params_error(http, uri, says):
    with pytest.raises(MCPError) as e:
        http.session.read(uri)
    assert e.value.code == -32602 and says in e.value.message and "\n" not in e.value.message


def test_the_server_survives_bad_input(http):
    http.session.error("usage_summary", since="nope")
    assert http.session.doc("refresh_index")["records"]["sessions"] > 0
    assert os.waitpid(http.pid, os.WNOHANG) == (0, 0)


# -- freshness and read-only ------------------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, tuple]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            if p.is_file() else ("dir",) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("name", NAMES)
def test_nothing_is_written_into_the_data_dir(tmp_path, name):
    store = copy_corpus(name, tmp_path)
    before = snapshot(store)
    with connect(stdio(store, tmp_path)) as s:
        ids = [n["id"] for n in s.doc("top_sessions", limit=100)["sessions"]]
        for tool, args in [("usage_summary", {}), ("provider_trends", {"since": ALL_TIME}), ("refresh_index", {}),
                           ("session_details", {"id": ids[0]}), ("usage_summary", {"provider": "nope"})]:
            s.call(tool, **args)
        for uri in ("ocsight://metrics/summary", "ocsight://providers", "ocsight://providers/mock",
                    f"ocsight://sessions/{ids[0]}"):
            s.read(uri)
    assert snapshot(store) == before


def test_an_answer_reads_what_opencode_wrote_since_the_last_one(tmp_path, cli):
    store = copy_corpus(CORPUS, tmp_path)
    with connect(stdio(store, tmp_path)) as s:
        before = s.doc("usage_summary")
        con = sqlite3.connect(store / "opencode.db")
        _mid, sid, data = con.execute("SELECT id, session_id, data FROM message WHERE data LIKE '%\"assistant\"%' "
                                      "ORDER BY time_created DESC LIMIT 1").fetchone()
        message = json.loads(data)
        now = int(time.time() * 1000)
        message["time"] = {"created": now - 500, "completed": now}
        con.execute("INSERT INTO message (id, session_id, time_created, time_updated, data) VALUES (?, ?, ?, ?, ?)",
                    ("msg_zz_written_later", sid, now - 500, now, json.dumps(message)))
        con.commit()
        con.close()
        after = s.doc("usage_summary")
        refreshed = s.doc("refresh_index")
    assert after["totals"]["messages"]["assistant"] == before["totals"]["messages"]["assistant"] + 1
    assert after["totals"]["tokens"]["total"] > before["totals"]["tokens"]["total"]
    assert without_source(after) == without_source(stats(cli, "--data-dir", str(store)))
    assert refreshed["read"] == "unchanged"


# -- the command line ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "code", "says"), [
    (["--cost-mode", "nope"], 2, "Invalid value for '--cost-mode'"),
    (["--timezone", "Mars/Olympus"], 2, "unknown time zone 'Mars/Olympus'"),
    (["--data-dir", "/nonexistent/opencode"], 1, "OpenCode data directory not found"),
    (["--http", "--port", "0"], 2, "Invalid value for '--port'"),
    (["--bogus"], 2, "No such option '--bogus'"),
])
def test_bad_flags_are_one_line_errors(args, code, says):
    r = run_ocsight("mcp", *args)
    assert r.code == code and says in r.err, r.err
    assert "Traceback" not in r.err and len([ln for ln in r.err.splitlines() if "rror" in ln]) == 1


def test_a_busy_port_is_a_one_line_error(tmp_path):
    import socket

    store = copy_corpus(CORPUS, tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = run_ocsight("mcp", "--http", "--port", str(s.getsockname()[1]), "--data-dir", str(store))
    assert r.code == 1 and "cannot listen on 127.0.0.1" in r.err and len(r.err.strip().splitlines()) == 1


def test_the_cli_imports_the_mcp_sdk_only_for_ocsight_mcp():
    code = ("import sys; from ocsight.cli import main\n"
            "try: main(['--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith(('mcp.', 'ocsight.mcp'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


# -- answers, in-process: the trees top_sessions chooses ------------------------------------------------------

def tree_store(root: Path) -> Path:
    """Nested subagents, a subagent whose parent has no usage, a parent cycle and a session without a record."""
    b = storegen.Builder()
    project = b.project()
    t = storegen.BASE_MS
    for i in range(6):
        top = b.session(project, at=t + i * 10_000)
        b.user(top, t + i * 10_000 + 1)
        b.assistant(top, t + i * 10_000 + 2, storegen.tokens(100 * (i + 1), 10), cost=0.01 * (6 - i))
        child = b.session(project, at=t + i * 10_000 + 3, parent=top)
        m = b.assistant(child, t + i * 10_000 + 4, storegen.tokens(50, 5 * i), cost=0.002 * i, agent="general")
        b.tool(m, "bash", "error" if i % 2 else "completed")
        grandchild = b.session(project, at=t + i * 10_000 + 5, parent=child)
        b.assistant(grandchild, t + i * 10_000 + 6 + storegen.DAY_MS * (i % 2), storegen.tokens(20, 2), cost=0.001)
    a = b.session(project, at=t + 90_000)
    c = b.session(project, at=t + 90_001, parent=a)
    a["parentID"] = c["id"]  # a cycle, as no OpenCode writes but a damaged store may hold
    for s in (a, c):
        b.assistant(s, t + 90_002, storegen.tokens(7, 7), cost=0.5)
    ghost = {"id": "ses_zz_no_record", "projectID": project["id"]}
    b.assistant(ghost, t + 90_003, storegen.tokens(9, 9), cost=0.3)
    store = root / "store"
    storegen.write_sqlite(b.plan, store / "opencode.db")
    return store


@pytest.mark.parametrize("since", [None, "2026-07-02"])
@pytest.mark.parametrize("by", ["cost", "tokens"])
def test_top_sessions_are_the_first_of_one_run_over_everything(tmp_path, since, by):
    store = tree_store(tmp_path)
    generated = tmp_path / "generated"
    storegen.write_sqlite(storegen.plan_store(seed=7, sessions=120, subagent_share=0.4), generated / "opencode.db")
    for data in (store, generated):
        with open_index(data) as idx:
            f = make_filters(since=since, timezone="UTC")
            everything = ranked(session_trees(idx.reader.sessions(f, "auto")), by)
            for limit in (1, 2, 5, answers.MAX_LIMIT):
                got = answers.top_sessions(idx, f, "auto", limit, by).doc
                assert got["sessions"] == everything[:limit], (data, limit)
                assert got["total_sessions"] == len(everything)
            left = ("SELECT name FROM sqlite_temp_master "
                    "WHERE name IN ('usage_cube', 'tool_cube', 'ocsight_scope', 'ocsight_node', 'ocsight_tree')")
            assert idx.con.execute(left).fetchall() == []


def test_session_details_of_a_subagent_holds_its_own_subtree(tmp_path):
    store = tree_store(tmp_path)
    with open_index(store) as idx:
        roots = session_trees(idx.reader.sessions(Filters(), "auto"))
        child = next(n for n in roots if n["children"] and n["children"][0]["children"])["children"][0]
        doc = answers.session_details(idx, child["id"], "auto", "UTC").doc
    assert doc["session"] == child
    assert doc["with_subagents"]["totals"]["sessions"] == 2
    assert [(t["tool"], t["calls"]) for t in doc["by_tool"]] == [("bash", 1)] and child["tool_calls"] == 1


def test_refresh_index_says_what_the_refresh_read(tmp_path):
    store = copy_corpus(CORPUS, tmp_path)
    with open_index(store) as idx:
        first = answers.refresh(idx, 0.5)
    with open_index(store) as idx:
        again = answers.refresh(idx, 0.01)
    assert (first.doc["read"], first.doc["changed_sessions"]) == ("full", None)
    assert "read everything afresh" in first.text
    assert (again.doc["read"], again.doc["changed_sessions"]) == ("unchanged", 0)
    assert "found nothing new" in again.text and f"{again.doc['records']['sessions']} sessions" in again.text


def test_a_project_name_matches_in_any_case_as_on_the_command_line(tmp_path: Path):
    b = storegen.Builder()
    billing, web = b.session(b.project("/home/dev/Billing")), b.session(b.project("/home/dev/web"))
    b.assistant(billing, storegen.BASE_MS, storegen.tokens(7, total=7))
    b.assistant(web, storegen.BASE_MS + 1, storegen.tokens(100, total=100))
    root = tmp_path / "store"
    root.mkdir()
    storegen.write_sqlite(b.plan, root / "opencode.db")
    with open_index(root) as idx:
        f = answers.filters(idx.reader, answers.Window(project="BILLING"), "UTC")
        assert answers.usage_summary(idx, f, "auto").doc["totals"]["tokens"]["input"] == 7


# -- answers, in-process: what the text says of usage no price covers ---------------------------------------

UNPRICED = "freebie/free-model"  # no price source knows it in the isolated environment


def unpriced_text(tmp_path: Path, answer) -> str:
    with open_index(copy_corpus("opencode-1.19", tmp_path)) as idx:
        return answer(idx).text


def test_usage_summary_says_the_cost_no_price_covers_is_unknown(tmp_path):
    text = unpriced_text(tmp_path, lambda idx: answers.usage_summary(idx, make_filters(timezone="UTC"), "auto"))
    assert f"freebie cost unknown (no price for {UNPRICED})" in text
    assert f"{UNPRICED} cost unknown (no price for {UNPRICED})" in text
    assert "$0.0000" not in text


def test_usage_summary_says_a_partly_priced_cost_is_at_least_the_priced_part(tmp_path):
    with open_index(copy_corpus("opencode-1.19", tmp_path)) as idx:
        a = answers.usage_summary(idx, make_filters(timezone="UTC"), "auto")
    cost = a.doc["totals"]["cost"]
    assert cost["unpriced_messages"] == 2 and cost["usd"] > 0
    assert a.text.startswith(f"OpenCode usage, all history (UTC): at least ${cost['usd']:,.4f} (2 calls unpriced) ")


def test_provider_trends_say_the_cost_no_price_covers_is_unknown(tmp_path):
    f = make_filters(timezone="UTC", since=ALL_TIME, providers=("freebie",))
    text = unpriced_text(tmp_path, lambda idx: answers.provider_trends(idx, f, "auto", "day", None))
    assert f"freebie: cost unknown (no price for {UNPRICED})" in text
    assert "$0" not in text


def test_top_sessions_say_the_cost_no_price_covers_is_unknown(tmp_path):
    f = make_filters(timezone="UTC", providers=("freebie",))
    text = unpriced_text(tmp_path, lambda idx: answers.top_sessions(idx, f, "auto", 5, "cost"))
    assert text.count(": cost unknown (1 call unpriced), ") == 2 and "$0" not in text


def test_a_summary_without_subagent_sessions_counts_none(tmp_path):
    f = make_filters(timezone="UTC", providers=("freebie",))
    text = unpriced_text(tmp_path, lambda idx: answers.usage_summary(idx, f, "auto"))
    assert " over 2 sessions, 2 model calls" in text and "subagent" not in text
