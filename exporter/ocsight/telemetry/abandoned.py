"""When an unfinished record is final anyway: OpenCode was killed, or a turn was cut off mid-stream.

Such an answer keeps no completion time, a tool call stays `running`, or a turn waits for an answer
after its tool calls that never comes. Each is *abandoned*, and then final, once

- OpenCode wrote a later message in its session (an answer, a tool call) or a later user message
  (a turn), or
- nothing in its session's family (the root session and its subagents' sessions) changed for
  `after_ms`: a subagent at work keeps its parent's turn alive.

Abandoned answers and tool calls become spans with `error.type` = `interrupted`, and so do turns
that end with them. `now_ms` is passed in: the rule is a pure function of the records and the time.
"""

from __future__ import annotations

from dataclasses import dataclass

from ocsight.model import Message, Records, ToolCall

INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class Abandoned:
    messages: frozenset[str] = frozenset()  # unfinished answers, final as interrupted
    tools: frozenset[str] = frozenset()  # unfinished tool calls, final as interrupted
    turns: frozenset[str] = frozenset()  # user messages whose turn waits after tool calls, ended
    waiting: frozenset[str] = frozenset()  # sessions with unfinished records not abandoned (yet)
    wake_at_ms: int | None = None  # when the next unfinished record is abandoned if nothing changes


def is_final(m: Message) -> bool:
    return m.role != "assistant" or m.time_completed is not None or m.error is not None


def tool_is_final(t: ToolCall) -> bool:
    return t.status in ("completed", "error")


def asks_for_tools(m: Message) -> bool:
    """An answer that ends in tool calls: its turn goes on with another answer."""
    return m.error is None and m.finish in ("tool-calls", "tool_calls")


def root_of(sid: str, parent_of: dict[str, str | None]) -> str:
    """The root of a session's subagent chain (as far as `parent_of` knows it)."""
    seen: set[str] = set()
    parent = parent_of.get(sid)
    while parent and sid not in seen:
        seen.add(sid)
        sid, parent = parent, parent_of.get(parent)
    return sid


def _key(m: Message) -> tuple[int, str]:
    return (m.time_created or 0, m.id)


def abandoned(recs: Records, now_ms: int, after_ms: int) -> Abandoned:
    """The unfinished answers, tool calls and turns of `recs` that are abandoned at `now_ms`."""
    parent_of = {s.id: s.parent_id for s in recs.sessions}
    last_write: dict[str, int] = {}  # root session -> OpenCode's last write in its family
    latest: dict[str, Message] = {}  # session -> its latest message
    latest_user: dict[str, Message] = {}  # session -> its latest user message (its latest turn)
    answers: dict[str, list[Message]] = {}  # user message -> its answers
    by_id: dict[str, Message] = {}
    for m in recs.messages:
        by_id[m.id] = m
        root = root_of(m.session_id, parent_of)
        wrote = max(m.time_updated or 0, m.time_completed or 0, m.time_created or 0)
        last_write[root] = max(last_write.get(root, 0), wrote)
        if m.session_id not in latest or _key(m) > _key(latest[m.session_id]):
            latest[m.session_id] = m
        if m.role == "user" and (m.session_id not in latest_user or _key(m) > _key(latest_user[m.session_id])):
            latest_user[m.session_id] = m
        if m.role == "assistant" and m.parent_id:
            answers.setdefault(m.parent_id, []).append(m)
    for t in recs.tool_calls:
        sid = _session_of(t, by_id)
        root = root_of(sid, parent_of)
        last_write[root] = max(last_write.get(root, 0), t.time_end or 0, t.time_start or 0)

    def stale(sid: str) -> bool:
        return now_ms - last_write.get(root_of(sid, parent_of), 0) >= after_ms

    waiting: list[str] = []  # sessions with something unfinished, not yet abandoned
    messages = set()
    for m in recs.messages:
        if is_final(m):
            continue
        if latest[m.session_id].id != m.id or stale(m.session_id):
            messages.add(m.id)
        else:
            waiting.append(m.session_id)
    tools = set()
    for t in recs.tool_calls:
        if tool_is_final(t):
            continue
        own, sid = by_id.get(t.message_id), _session_of(t, by_id)
        later = own is not None and sid in latest and latest[sid].id != own.id
        if later or t.message_id in messages or stale(sid):
            tools.add(t.id)
        else:
            waiting.append(sid)
    turns = set()
    for uid, replies in answers.items():
        last = max(replies, key=_key)
        user = by_id.get(uid)
        if user is None or not asks_for_tools(last):
            continue
        sid = user.session_id
        if latest_user[sid].id != uid or (latest[sid].id == last.id and stale(sid)):
            turns.add(uid)  # a later turn began, or nothing came after the tool calls
        elif latest[sid].id == last.id:
            waiting.append(sid)
    wake = [last_write.get(root_of(sid, parent_of), 0) + after_ms for sid in waiting]
    return Abandoned(frozenset(messages), frozenset(tools), frozenset(turns), frozenset(waiting),
                     min(wake) if wake else None)


def _session_of(t: ToolCall, by_id: dict[str, Message]) -> str:
    own = by_id.get(t.message_id)
    return t.session_id or (own.session_id if own else "")
