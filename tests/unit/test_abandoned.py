"""When an unfinished record is final anyway (`telemetry.abandoned`), and the spans it then makes."""

from __future__ import annotations

import dataclasses

from ocsight.model import Message, Project, Records, Session, Tokens, ToolCall
from ocsight.telemetry import spans as mapping
from ocsight.telemetry.abandoned import INTERRUPTED, abandoned

T = 1_780_000_000_000  # epoch ms
AFTER = 600_000


def message(id: str, role: str, at: int, *, session: str = "ses_a", parent: str | None = None,
            done: int | None = None, finish: str | None = None, updated: int | None = None) -> Message:
    return Message(id=id, session_id=session, role=role, time_created=at, time_completed=done, parent_id=parent,
                   provider="anthropic", model="claude-sonnet-4-5", agent="build", finish=finish, error=None,
                   era="1.18", tokens=Tokens(input=10, output=2), cost_usd=0.01, estimated_usd=None, steps=1,
                   time_updated=updated)


def running(id: str, message_id: str, at: int, session: str = "ses_a", child: str | None = None) -> ToolCall:
    return ToolCall(id, message_id, session, f"call_{id}", "task" if child else "bash", "running", at, None, None,
                    None, child)


def records(*messages: Message, tools: tuple[ToolCall, ...] = (), child: bool = False) -> Records:
    sessions = [Session("ses_a", "p", None, "/w", "t", "1.18.33", T, T)]
    if child:
        sessions.append(Session("ses_b", "p", "ses_a", "/w", "t", "1.18.33", T, T))
    return Records([Project("p", "/w", "w")], sessions, list(messages), [], list(tools), [])


CUT = (message("u1", "user", T), message("a1", "assistant", T + 10, parent="u1", updated=T + 500))


def test_an_answer_never_completed_is_abandoned_once_unchanged_for_the_abandon_time():
    recs = records(*CUT)
    assert abandoned(recs, T + 500 + AFTER, AFTER).messages == {"a1"}


def test_an_answer_still_being_written_waits_and_says_when_it_would_be_abandoned():
    gone = abandoned(records(*CUT), T + 600, AFTER)
    assert (gone.messages, gone.waiting, gone.wake_at_ms) == (frozenset(), {"ses_a"}, T + 500 + AFTER)


def test_an_answer_never_completed_is_abandoned_at_once_when_a_later_message_follows_it():
    recs = records(*CUT, message("u2", "user", T + 1000))
    assert abandoned(recs, T + 1001, AFTER).messages == {"a1"}


def test_a_subagent_at_work_keeps_its_parents_unfinished_answer_alive():
    late = T + 2 * AFTER
    recs = records(message("u1", "user", T), message("a1", "assistant", T + 10, parent="u1", finish="tool-calls",
                                                     done=T + 20),
                   message("u9", "user", late, session="ses_b"),
                   message("a9", "assistant", late + 10, session="ses_b", parent="u9", updated=late + 10),
                   tools=(running("t1", "a1", T + 30, child="ses_b"),), child=True)
    gone = abandoned(recs, late + 100, AFTER)
    assert (gone.tools, gone.turns, gone.messages) == (frozenset(), frozenset(), frozenset())


def test_a_running_tool_call_of_an_abandoned_answer_is_abandoned_with_it():
    recs = records(*CUT, tools=(running("t1", "a1", T + 20),))
    assert abandoned(recs, T + 500 + AFTER, AFTER).tools == {"t1"}


def test_a_turn_left_waiting_after_its_tool_calls_ends_when_a_later_turn_begins():
    recs = records(message("u1", "user", T), message("a1", "assistant", T + 10, parent="u1", finish="tool-calls",
                                                     done=T + 20),
                   message("u2", "user", T + 100), message("a2", "assistant", T + 110, parent="u2", done=T + 120))
    assert abandoned(recs, T + 200, AFTER).turns == {"u1"}


def test_an_abandoned_answer_is_an_interrupted_chat_span_under_an_interrupted_turn():
    recs = records(*CUT)
    spans = {s.record: s for s in mapping.spans(recs, gone=abandoned(recs, T + 500 + AFTER, AFTER))}
    chat, turn = spans["a1"], spans["u1"]
    assert (chat.error, chat.attributes["error.type"], turn.error, chat.parent_id) == (
        INTERRUPTED, INTERRUPTED, INTERRUPTED, turn.span_id)
    assert chat.end_ns == (T + 500) * 1_000_000  # its last write


def test_an_unfinished_answer_not_yet_abandoned_makes_no_span():
    recs = records(*CUT)
    assert mapping.spans(recs, gone=abandoned(recs, T + 600, AFTER)) == []


def test_a_subagents_spans_carry_the_start_of_the_turn_that_started_it():
    recs = records(message("u1", "user", T), message("a1", "assistant", T + 10, parent="u1", finish="tool-calls",
                                                     done=T + 20),
                   message("u9", "user", T + 40, session="ses_b"),
                   message("a9", "assistant", T + 50, session="ses_b", parent="u9", done=T + 60),
                   tools=(dataclasses.replace(running("t1", "a1", T + 30, child="ses_b"), status="completed",
                                              time_end=T + 70),), child=True)
    starts = {s.record: s.turn_start_ns for s in mapping.spans(recs)}
    assert starts["a9"] == starts["u9"] == starts["t1"] == T * 1_000_000
