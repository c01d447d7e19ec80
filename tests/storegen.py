"""Writes OpenCode stores (SQLite in the real 1.18 schema, legacy JSON tree) from a seeded plan.

Records are shaped exactly as OpenCode writes them for the era that wrote them (see
`tests/fixtures/samples/`), and every generated message keeps the raw provider numbers it
was made from, so tests can work out the expected normalised totals on their own.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
SCHEMA_1_18 = FIXTURES / "schema-1.18.33.sql"

# USD per 1M tokens, in models.dev's shape; "acme" is deliberately missing from every catalogue.
PRICES: dict[str, dict[str, dict]] = {
    "anthropic": {
        "claude-sonnet-4-5": {
            "input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75,
            "context_over_200k": {"input": 6, "output": 22.5, "cache_read": 0.6, "cache_write": 7.5},
        },
        "claude-haiku-4-5": {"input": 1, "output": 5, "cache_read": 0.1, "cache_write": 1.25},
    },
    "openai": {"gpt-5": {"input": 1.25, "output": 10, "cache_read": 0.125}},
    "google": {
        "gemini-2.5-pro": {
            "input": 1.25, "output": 10, "cache_read": 0.31,
            "context_over_200k": {"input": 2.5, "output": 15, "cache_read": 0.625},
        }
    },
    "opencode": {"grok-code": {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}},
    "github-copilot": {"gpt-5-mini": {"input": 0, "output": 0}},
}
UNPRICED = ("acme", "mystery-1")
MODELS = [
    ("anthropic", "claude-sonnet-4-5", 30),
    ("anthropic", "claude-haiku-4-5", 10),
    ("openai", "gpt-5", 20),
    ("google", "gemini-2.5-pro", 10),
    ("opencode", "grok-code", 10),  # free: stored cost 0, priced 0
    ("github-copilot", "gpt-5-mini", 10),  # subscription: stored cost 0, catalogue price 0
    (*UNPRICED, 3),  # custom provider without a price: stored cost 0, unpriced
]
BUILTIN_TOOLS = ["bash", "read", "edit", "write", "grep", "glob", "list", "todowrite", "webfetch"]
MCP_TOOLS = ["github_create_issue", "context7_resolve-library-id"]
ERRORS = ["APIError", "MessageAbortedError", "ProviderAuthError", "UnknownError"]
AGENTS = ["build", "build", "build", "plan"]
# Sessions are written by these OpenCode versions; era names follow the token semantics.
ERAS = {"0.x": "0.15.31", "1.0": "1.0.40", "1.1-old": "1.1.40", "1.1": "1.1.65", "1.15": "1.15.13", "1.18": "1.18.33"}
MODERN = ("1.15", "1.18")
BASE_MS = 1_782_864_000_000  # 2026-07-01T00:00:00Z
DAY_MS = 86_400_000


def dumps(obj: object) -> str:
    """JSON exactly as OpenCode's JSON.stringify writes it into the database."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def step_cost(price: dict | None, t: dict, era: str) -> float:
    """The cost OpenCode stores for one step, from the tokens as that era stored them.

    Reasoning is billed at the output price (again, for eras whose output already includes it)
    except before 1.0.62; the long-context price applies above 200k prompt tokens, counted as
    input + cache read before 1.15 and input + cache read + cache write since.
    """
    if not price:
        return 0.0
    p = price
    prompt = t["input"] + t["cache_read"] + (t["cache_write"] if era in MODERN else 0)
    if "context_over_200k" in price and prompt > 200_000:
        p = {**price, **price["context_over_200k"]}
    out = t["output"] * p["output"]
    if era not in ("0.x", "1.0"):
        out += t["reasoning"] * p["output"]
    return (
        t["input"] * p["input"] + out + t["cache_read"] * p.get("cache_read", 0)
        + t["cache_write"] * p.get("cache_write", 0)
    ) / 1_000_000


@dataclass
class Plan:
    """What was generated, row by row, as OpenCode stores it."""

    projects: list[dict] = field(default_factory=list)
    sessions: list[dict] = field(default_factory=list)  # session info in JSON shape
    messages: list[dict] = field(default_factory=list)  # message info with id and sessionID
    parts: list[dict] = field(default_factory=list)  # part with id, sessionID, messageID
    truth: dict[str, dict] = field(default_factory=dict)  # message id -> era and normalised tokens


class _Ids:
    """OpenCode-looking, ascending, unique identifiers."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.n = rng, 0

    def __call__(self, prefix: str, ms: int) -> str:
        self.n += 1
        tail = "".join(self.rng.choice("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(10))
        return f"{prefix}_{ms:012x}{self.n:06d}{tail}"


def _text(rng: random.Random, n: int) -> str:
    words = ("the", "model", "reads", "file", "and", "writes", "tests", "for", "each", "change", "of", "code")
    return " ".join(rng.choice(words) for _ in range(n))


def plan_store(
    seed: int = 1,
    sessions: int = 30,
    turns: tuple[int, int] = (2, 6),
    eras: tuple[str, ...] = ("1.18",),
    projects: int = 3,
    subagent_share: float = 0.15,
    error_share: float = 0.03,
    text_scale: int = 1,
    days: int = 120,
    era_of: Callable[[int], str] | None = None,
    start_ms: int = BASE_MS,
    first_session: int = 0,
) -> Plan:
    """Plans a store; `eras` is cycled over root sessions, or `era_of(n)` names the n-th session's
    era (a subagent's session takes its parent's).

    `start_ms` and `first_session` let several plans make one store (`write_sqlite_in_chunks`):
    the first session starts after `start_ms`, and sessions are numbered (slug, title, `era_of`)
    from `first_session`. The projects are the same whatever they are.
    """
    rng = random.Random(seed)
    ids = _Ids(rng)
    plan = Plan()
    for i in range(projects):
        ms = BASE_MS + i * 1000
        plan.projects.append(
            {"id": f"{i:040x}", "worktree": f"/home/dev/project-{i}", "vcs": "git", "sandboxes": [],
             "time": {"created": ms, "updated": ms}}
        )
    weights = [w for *_, w in MODELS]
    clock = start_ms
    step_ms = max(1, (days * DAY_MS) // max(1, sessions))
    pending_children: list[tuple[dict, str]] = []  # (task tool part, era) waiting for a child session
    s = 0
    while s < sessions:
        clock += rng.randint(step_ms // 2, step_ms)
        child_of = pending_children.pop() if pending_children else None
        project = plan.projects[rng.randrange(projects)] if not child_of else None
        if child_of:
            task_part, era = child_of
            parent = next(x for x in plan.sessions if x["id"] == task_part["sessionID"])
            project = next(p for p in plan.projects if p["id"] == parent["projectID"])
        else:
            era = era_of(first_session + s) if era_of else eras[s % len(eras)]
        sid = ids("ses", clock)
        info = {
            "id": sid, "slug": f"slug-{first_session + s}", "version": ERAS[era], "projectID": project["id"],
            "directory": project["worktree"], "title": f"Session {first_session + s}",
            "time": {"created": clock, "updated": clock},
            "summary": {"additions": 0, "deletions": 0, "files": 0},
        }
        if child_of:
            info["parentID"] = task_part["sessionID"]
            task_part["state"]["metadata"]["sessionId"] = sid
        plan.sessions.append(info)
        s += 1
        provider, model, _ = rng.choices(MODELS, weights)[0]
        agent = "general" if child_of else rng.choice(AGENTS)
        for _turn in range(rng.randint(*turns) if not child_of else 1):
            clock += rng.randint(5_000, 60_000)
            uid = ids("msg", clock)
            plan.messages.append(
                {"id": uid, "sessionID": sid, "role": "user", "time": {"created": clock},
                 "summary": {"diffs": []}, "agent": agent, "model": {"providerID": provider, "modelID": model}}
            )
            plan.parts.append({"id": ids("prt", clock), "sessionID": sid, "messageID": uid, "type": "text",
                               "text": _text(rng, 12 * text_scale)})
            for k in range(rng.randint(1, 5)):
                last = k == 4 or rng.random() < 0.3
                clock += rng.randint(1_000, 20_000)
                _assistant(plan, rng, ids, sid, uid, era, provider, model, agent, project, clock, last,
                           error_share, text_scale, pending_children if subagent_share and not child_of
                           and rng.random() < subagent_share else None)
                if last:
                    break
        info["time"]["updated"] = clock
    return plan


def _assistant(plan, rng, ids, sid, uid, era, provider, model, agent, project, clock, last, error_share,
               text_scale, children) -> None:
    mid = ids("msg", clock)
    msg = {"id": mid, "sessionID": sid, "role": "assistant", "time": {"created": clock}, "parentID": uid,
           "modelID": model, "providerID": provider, "mode": agent, "agent": agent,
           "path": {"cwd": project["worktree"], "root": project["worktree"]}}
    price = PRICES.get(provider, {}).get(model)
    anthropic = provider == "anthropic"
    if rng.random() < error_share:
        msg |= {"cost": 0, "tokens": {"input": 0, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}}}
        msg["time"]["completed"] = clock + 500
        name = rng.choice(ERRORS)
        msg["error"] = {"name": name, "data": {"message": f"mock {name}"}}
        plan.messages.append(msg)
        plan.truth[mid] = {"era": era, "error": name, "tokens": dict.fromkeys(
            ("input", "output", "reasoning", "cache_read", "cache_write"), 0), "raw_cost": 0.0,
            "provider": provider, "model": model, "steps": 0}
        return
    # Raw provider numbers per LLM call, then stored the way this era stored them. OpenCode 0.x ran
    # several calls in one message: it kept the last call's tokens and added up the costs.
    calls = rng.randint(2, 3) if era == "0.x" else 1
    steps, norm = [], dict.fromkeys(("input", "output", "reasoning", "cache_read", "cache_write"), 0)
    cost = 0.0
    for _ in range(calls):
        big = rng.random() < 0.04 and price and "context_over_200k" in price
        cached = rng.randint(0, 60_000)
        prompt = cached + rng.randint(200, 30_000) + (210_000 if big else 0)
        cache_write = rng.randint(0, 4_000) if anthropic else 0
        reasoning = rng.choice([0, 0, rng.randint(1, 3_000)])
        completion = reasoning + rng.randint(1, 4_000)
        call = {"input": prompt - cached, "output": completion - reasoning, "reasoning": reasoning,
                "cache_read": cached, "cache_write": cache_write}
        if era in MODERN:
            stored = dict(call)
            total = sum(call.values())
        elif era in ("1.1", "1.1-old"):
            stored = {**call, "output": completion}
            total = stored["input"] + completion + cached + cache_write
        else:  # 0.x and 1.0 stored what the provider sent: OpenAI-style prompts include cached tokens
            stored = {**call, "input": prompt - cached if anthropic else prompt + cache_write, "output": completion}
            total = None
        tokens = {"input": stored["input"], "output": stored["output"], "reasoning": reasoning,
                  "cache": {"read": cached, "write": cache_write}}
        if total is not None and era != "1.1-old":
            tokens = {"total": total, **tokens}
        free = provider in ("opencode", "github-copilot", UNPRICED[0])
        step = step_cost(price, stored, era) if not free else 0
        steps.append((tokens, step))
        cost += step
        norm = {k: norm[k] + call[k] for k in norm}
    tokens = steps[-1][0]
    msg |= {"cost": cost, "tokens": tokens, "finish": "stop" if last else "tool-calls"}
    t = clock
    part = lambda data: plan.parts.append(  # noqa: E731
        {"id": ids("prt", t), "sessionID": sid, "messageID": mid, **data})
    tool = None
    for n, (step_tokens, step_cost_usd) in enumerate(steps):
        part({"type": "step-start", "snapshot": "0" * 40})
        if n == 0 and norm["reasoning"]:
            part({"type": "reasoning", "text": _text(rng, 40 * text_scale), "time": {"start": t, "end": t + 900}})
        reason = msg["finish"] if n == len(steps) - 1 else "tool-calls"
        if n == len(steps) - 1 and not last:
            tool = rng.choice(BUILTIN_TOOLS + MCP_TOOLS + (["task"] if children is not None else []))
            ok = rng.random() > 0.1
            state = {"status": "completed" if ok else "error", "input": {"command": _text(rng, 4)}}
            if ok:
                state |= {"output": _text(rng, 70 * text_scale), "metadata": {"truncated": False}, "title": tool}
            else:
                state |= {"error": f"Error: {tool} failed"}
            state["time"] = {"start": t + 1000, "end": t + 1000 + rng.randint(5, 9000)}
            tp = {"id": ids("prt", t), "sessionID": sid, "messageID": mid, "type": "tool", "tool": tool,
                  "callID": f"call_{rng.getrandbits(40):x}", "state": state}
            if tool == "task":
                state["status"] = "completed"
                state.pop("error", None)
                state |= {"output": "<task_result>done</task_result>", "title": "sub",
                          "metadata": {"parentSessionId": sid, "sessionId": None, "truncated": False}}
                children.append((tp, era))
            plan.parts.append(tp)
        elif n == len(steps) - 1:
            part({"type": "text", "text": _text(rng, 50 * text_scale), "time": {"start": t, "end": t + 2000}})
        if era in MODERN:
            finish = {"reason": reason, "snapshot": "0" * 40, "type": "step-finish", "tokens": step_tokens,
                      "cost": step_cost_usd}
        else:
            finish = {"type": "step-finish", "reason": reason, "snapshot": "0" * 40, "cost": step_cost_usd,
                      "tokens": step_tokens}
        part(finish)
    msg["time"]["completed"] = clock + 3000
    plan.messages.append(msg)
    plan.truth[mid] = {"era": era, "tokens": norm, "raw_cost": cost, "tool": tool, "provider": provider,
                       "model": model, "steps": len(steps)}


def _ms(obj: dict, key: str = "created") -> int:
    return obj.get("time", {}).get(key) or obj.get("time", {}).get("start") or BASE_MS


def write_sqlite(plan: Plan, db_path: Path, schema: Path = SCHEMA_1_18, session_ids: set[str] | None = None) -> None:
    """Writes the plan (or some of its sessions) into a database with OpenCode's own DDL.

    An existing database is appended to, as OpenCode does when new sessions arrive.
    """
    db_path.parent.mkdir(parents=True, exist_ok=True)
    fresh = not db_path.exists()
    con = sqlite3.connect(db_path)
    if fresh:
        con.execute("PRAGMA journal_mode=WAL")
        con.executescript(schema.read_text())
    keep = (lambda sid: True) if session_ids is None else (lambda sid: sid in session_ids)
    version_cols = {r[1] for r in con.execute("PRAGMA table_info(session)")}
    with con:
        for p in plan.projects:
            cols = {"id": p["id"], "worktree": p["worktree"], "vcs": p["vcs"], "time_created": p["time"]["created"],
                    "time_updated": p["time"]["updated"], "sandboxes": "[]"}
            _insert(con, "project", cols, ignore=not fresh)
        for s in plan.sessions:
            if not keep(s["id"]):
                continue
            cols = {"id": s["id"], "project_id": s["projectID"], "parent_id": s.get("parentID"), "slug": s["slug"],
                    "directory": s["directory"], "title": s["title"], "version": s["version"],
                    "time_created": s["time"]["created"], "time_updated": s["time"]["updated"]}
            _insert(con, "session", {k: v for k, v in cols.items() if k in version_cols})
        con.executemany(
            "INSERT INTO message (id, session_id, time_created, time_updated, data) VALUES (?,?,?,?,?)",
            ((m["id"], m["sessionID"], m["time"]["created"], m["time"].get("completed", m["time"]["created"]),
              dumps({k: v for k, v in m.items() if k not in ("id", "sessionID")}))
             for m in plan.messages if keep(m["sessionID"])),
        )
        con.executemany(
            "INSERT INTO part (id, message_id, session_id, time_created, time_updated, data) VALUES (?,?,?,?,?,?)",
            ((p["id"], p["messageID"], p["sessionID"], _ms(p, "start"), _ms(p, "end"),
              dumps({k: v for k, v in p.items() if k not in ("id", "sessionID", "messageID")}))
             for p in plan.parts if keep(p["sessionID"])),
        )
    con.close()


def write_sqlite_in_chunks(db_path: Path, sessions: int, chunk: int = 1000, seed: int = 1,
                           schema: Path = SCHEMA_1_18, **plan_args) -> dict[str, int]:
    """Writes a large store into one database, `chunk` sessions at a time (a whole plan of tens of
    thousands of sessions would hold millions of dicts), so memory stays that of one chunk.

    Chunk k is `plan_store(seed=seed + k, sessions=..., first_session=k * chunk, **plan_args)`,
    starting a second after the previous chunk's last record: IDs stay unique and ascending, and
    times ascend, as in one store written over time. `plan_args["days"]` is each chunk's span.
    Returns counts of what was written.
    """
    counts = dict.fromkeys(("sessions", "messages", "assistant_messages", "parts"), 0)
    start = BASE_MS
    for k, first in enumerate(range(0, sessions, chunk)):
        plan = plan_store(seed=seed + k, sessions=min(chunk, sessions - first), start_ms=start,
                          first_session=first, **plan_args)
        write_sqlite(plan, db_path, schema)
        last = max(max(s["time"]["updated"] for s in plan.sessions),
                   max(_ms(m, "completed") for m in plan.messages), max(_ms(p, "end") for p in plan.parts))
        start = last + 1000
        counts["sessions"] += len(plan.sessions)
        counts["messages"] += len(plan.messages)
        counts["assistant_messages"] += sum(m["role"] == "assistant" for m in plan.messages)
        counts["parts"] += len(plan.parts)
    return counts


def _insert(con: sqlite3.Connection, table: str, cols: dict, ignore: bool = False) -> None:
    verb = "INSERT OR IGNORE" if ignore else "INSERT"
    con.execute(f"{verb} INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", list(cols.values()))


def write_legacy(plan: Plan, storage: Path, session_ids: set[str] | None = None) -> int:
    """Writes the plan (or some of its sessions) as OpenCode <= 1.1 did: one pretty JSON file per object."""
    keep = (lambda sid: True) if session_ids is None else (lambda sid: sid in session_ids)
    n = 0

    def put(path: Path, obj: object) -> None:
        nonlocal n
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, indent=2, ensure_ascii=False))
        n += 1

    for p in plan.projects:
        put(storage / "project" / f"{p['id']}.json", p)
    for s in plan.sessions:
        if keep(s["id"]):
            put(storage / "session" / s["projectID"] / f"{s['id']}.json", s)
    for m in plan.messages:
        if keep(m["sessionID"]):
            put(storage / "message" / m["sessionID"] / f"{m['id']}.json", m)
    for p in plan.parts:
        if keep(p["sessionID"]):
            put(storage / "part" / p["messageID"] / f"{p['id']}.json", p)
    (storage / "migration").write_text("2")
    return n


def write_models_json(path: Path) -> None:
    """A models.dev-shaped price catalogue holding PRICES, like OpenCode's cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cat = {prov: {"id": prov, "name": prov, "models": {m: {"id": m, "name": m, "cost": c,
                                                             "limit": {"context": 400000, "output": 64000}}
                                                         for m, c in models.items()}}
           for prov, models in PRICES.items()}
    path.write_text(json.dumps(cat))


def set_mtime_tree(root: Path, ms: int) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(dirpath, f), ns=(ms * 1_000_000, ms * 1_000_000))


# -- hand-made records, for tests that need exact values ---------------------------------------------

class Builder:
    """Adds records one by one to a plan, in OpenCode's shapes, with ascending IDs and times."""

    def __init__(self, plan: Plan | None = None) -> None:
        self.plan = plan or Plan()
        self.ids = _Ids(random.Random(0))

    def project(self, worktree: str = "/home/dev/app") -> dict:
        p = {"id": f"{len(self.plan.projects):040x}", "worktree": worktree, "vcs": "git", "sandboxes": [],
             "time": {"created": BASE_MS, "updated": BASE_MS}}
        self.plan.projects.append(p)
        return p

    def session(self, project: dict, version: str = "1.18.33", at: int = BASE_MS, parent: dict | None = None) -> dict:
        s = {"id": self.ids("ses", at), "slug": "s", "version": version, "projectID": project["id"],
             "directory": project["worktree"], "title": "t", "time": {"created": at, "updated": at},
             "summary": {"additions": 0, "deletions": 0, "files": 0}}
        if parent:
            s["parentID"] = parent["id"]
        self.plan.sessions.append(s)
        return s

    def user(self, session: dict, at: int, provider: str = "anthropic", model: str = "claude-sonnet-4-5",
             agent: str = "build") -> dict:
        m = {"id": self.ids("msg", at), "sessionID": session["id"], "role": "user", "time": {"created": at},
             "agent": agent, "model": {"providerID": provider, "modelID": model}}
        self.plan.messages.append(m)
        return m

    def assistant(self, session: dict, at: int, tokens: dict, cost: float = 0.0, provider: str = "anthropic",
                  model: str = "claude-sonnet-4-5", agent: str = "build", error: str | None = None,
                  completed: bool = True, step: bool = True, **extra) -> dict:
        """`tokens` as OpenCode stores them: input, output, reasoning, cache {read, write}, optional total."""
        m = {"id": self.ids("msg", at), "sessionID": session["id"], "role": "assistant", "time": {"created": at},
             "parentID": "msg_parent", "modelID": model, "providerID": provider, "mode": agent, "agent": agent,
             "path": {"cwd": "/", "root": "/"}, "cost": cost, "tokens": tokens, **extra}
        if completed:
            m["time"]["completed"] = at + 1000
        if error:
            m["error"] = {"name": error, "data": {"message": "boom"}}
        self.plan.messages.append(m)
        if step:
            self.part(m, {"type": "step-start"})
            self.part(m, {"type": "step-finish", "reason": "stop", "cost": cost, "tokens": tokens})
        return m

    def part(self, message: dict, data: dict) -> dict:
        p = {"id": self.ids("prt", message["time"]["created"]), "sessionID": message["sessionID"],
             "messageID": message["id"], **data}
        self.plan.parts.append(p)
        return p

    def tool(self, message: dict, name: str, status: str = "completed", child: dict | None = None) -> dict:
        state: dict = {"status": status, "input": {}, "time": {"start": message["time"]["created"],
                                                               "end": message["time"]["created"] + 5}}
        if status == "error":
            state["error"] = "Error: failed"
        if child:
            state["metadata"] = {"sessionId": child["id"]}
        return self.part(message, {"type": "tool", "tool": name, "callID": "call_1", "state": state})


def tokens(input: int = 0, output: int = 0, reasoning: int = 0, cache_read: int = 0, cache_write: int = 0,
           total: int | None = None) -> dict:
    t = {"input": input, "output": output, "reasoning": reasoning, "cache": {"read": cache_read, "write": cache_write}}
    return t if total is None else {"total": total, **t}
