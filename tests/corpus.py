"""The recorded corpora, and what tests work out from them without ocsight.

`expected_from_log` reads the mock model's own request log; `raw_store` reads what OpenCode wrote
with plain `sqlite3` and `json`, normalising tokens by the rule in OpenCode's docs, not by
ocsight's code, and telling a fork's copies by its own rule: a message whose content (all but its
IDs and the answered message's ID) equals one in a session created earlier is a copy; the one in the
earliest session counts.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ocsight import paths

CORPORA = Path(__file__).parent / "fixtures" / "corpora"
NAMES = ("opencode-1.19", "opencode-1.18", "opencode-1.1", "upgrade-1.1-1.15")
FORKED = "opencode-1.19"  # the corpus with forks (a fork, and a fork of the fork)
# The upgraded store is also the demo store: recorded once, shipped in the package, tested here.
DEMO_CORPUS = "upgrade-1.1-1.15"
DEMO_DIR = paths.DEMO_DIR  # the package's own copy: the one the package under test ships


def store_dir(name: str) -> Path:
    return DEMO_DIR if name == DEMO_CORPUS else CORPORA / name / "store"


def provider_of(model: str) -> str:
    return "freebie" if model.startswith("free") else "mock"


@dataclass
class Expected:
    """What the model was asked and answered: one entry per model call OpenCode stored."""

    tokens: list[tuple[int, int, int, int, int]] = field(default_factory=list)  # normalised, per call
    by_model: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # summed tokens
    calls_by_model: Counter = field(default_factory=Counter)
    tool_calls: Counter = field(default_factory=Counter)  # tool -> calls the model made
    errors: int = 0  # requests refused (OpenCode stores an APIError message)
    subagents: int = 0  # `task` calls


def expected_from_log(entries: list[dict]) -> Expected:
    out = Expected()
    for e in entries:
        if e["scenario"] == "title":  # the title call: OpenCode does not store it
            continue
        key = (provider_of(e["model"]), e["model"])
        out.calls_by_model[key] += 1
        if e["status"] != 200:
            out.errors += 1
            continue
        u = e["usage"]
        t = (u["prompt_tokens"] - u["cached_tokens"], u["completion_tokens"] - u["reasoning_tokens"],
             u["reasoning_tokens"], u["cached_tokens"], 0)
        out.tokens.append(t)
        sums = out.by_model.setdefault(key, [0] * 5)
        for i, v in enumerate(t):
            sums[i] += v
        if e["tool"]:
            out.tool_calls[e["tool"]] += 1
            out.subagents += e["tool"] == "task"
    return out


def read_log(name: str) -> list[dict]:
    return [json.loads(line) for line in (CORPORA / name / "requests.jsonl").read_text().splitlines()]


@dataclass
class Raw:
    messages: dict[str, dict]
    parts: dict[str, dict]
    sessions: dict[str, dict]
    db_message_ids: set[str]
    json_message_ids: set[str]
    copies: set[str] = field(default_factory=set)  # messages a fork copied (left out of `messages`)

    def assistant(self) -> list[dict]:
        return [m for m in self.messages.values() if m["role"] == "assistant"]

    def tokens(self, m: dict) -> tuple[int, int, int, int, int]:
        """Normalised by the documented rule: `tokens.total` tells the era, else the session's version."""
        t = m["tokens"]
        i, o, r = t["input"], t["output"], t["reasoning"]
        cr, cw = t["cache"]["read"], t["cache"]["write"]
        if "total" in t:
            reasoning_inside = t["total"] != i + o + r + cr + cw
            assert not reasoning_inside or t["total"] == i + o + cr + cw
        else:
            major, minor = (int(x) for x in self.sessions[m["sessionID"]]["version"].split(".")[:2])
            reasoning_inside = (major, minor) < (1, 14)
        return (i, o - r if reasoning_inside else o, r, cr, cw)

    def tool_calls(self) -> Counter:
        """(tool, status) -> calls."""
        return Counter((p["tool"], p["state"]["status"]) for p in self.parts.values() if p["type"] == "tool")


def fork_copies(messages: dict[str, dict], session_created: dict[str, int]) -> set[str]:
    """The messages that are copies a fork made: alike in everything but their IDs and `parentID`
    to a message of a session created earlier."""
    alike: dict[str, list[str]] = {}
    for mid, m in messages.items():
        content = {k: v for k, v in m.items() if k not in ("id", "sessionID", "parentID")}
        alike.setdefault(json.dumps(content, sort_keys=True), []).append(mid)
    copies: set[str] = set()
    for ids in alike.values():
        if len(ids) > 1:
            first = min(ids, key=lambda i: (session_created.get(messages[i]["sessionID"], 0), i))
            copies.update(i for i in ids if i != first)
    return copies


def raw_store(store: Path, fork_copies_counted: bool = False) -> Raw:
    """What OpenCode wrote: database rows win over legacy files with the same ID; the copies a
    fork made are left out (`fork_copies`) unless `fork_copies_counted`."""
    messages: dict[str, dict] = {}
    parts: dict[str, dict] = {}
    sessions: dict[str, dict] = {}
    db_ids: set[str] = set()
    db = store / "opencode.db"
    if db.exists():
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        for mid, sid, data in con.execute("SELECT id, session_id, data FROM message"):
            messages[mid] = {**json.loads(data), "id": mid, "sessionID": sid}
        db_ids = set(messages)
        for pid, mid, data in con.execute("SELECT id, message_id, data FROM part"):
            parts[pid] = {**json.loads(data), "id": pid, "messageID": mid}
        for sid, parent, version, created in con.execute(
                "SELECT id, parent_id, version, time_created FROM session"):
            sessions[sid] = {"parent": parent, "version": version, "created": created}
        con.close()
    json_ids: set[str] = set()
    storage = store / "storage"
    for f in sorted(storage.glob("message/*/*.json")):
        m = json.loads(f.read_text())
        json_ids.add(m["id"])
        messages.setdefault(m["id"], m)
    for f in sorted(storage.glob("part/*/*.json")):
        p = json.loads(f.read_text())
        parts.setdefault(p["id"], p)
    for f in sorted(storage.glob("session/*/*.json")):
        s = json.loads(f.read_text())
        sessions.setdefault(s["id"], {"parent": s.get("parentID"), "version": s["version"],
                                      "created": s["time"]["created"]})
    copies = fork_copies(messages, {sid: s["created"] for sid, s in sessions.items()})
    if copies and not fork_copies_counted:
        messages = {k: m for k, m in messages.items() if k not in copies}
        parts = {k: p for k, p in parts.items() if p["messageID"] not in copies}
    return Raw(messages, parts, sessions, db_ids, json_ids, copies)
