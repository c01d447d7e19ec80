"""A mock model for OpenCode: an OpenAI-compatible streaming `/v1/chat/completions` on 127.0.0.1.

OpenCode talks to it through `@ai-sdk/openai-compatible` (built into its binary), so every request
OpenCode makes is answered here, offline. What the model does is picked by a keyword in the turn's
user message:

| keyword    | first answer                                        | then              |
|------------|-----------------------------------------------------|-------------------|
| (none)     | a short text                                        |                   |
| `[bash]`   | a `bash` tool call (`echo hello-from-mock`)         | a text            |
| `[fail]`   | a `read` tool call on a missing file (tool error)   | a text            |
| `[reason]` | reasoning deltas, then a text                       |                   |
| `[task]`   | a `task` tool call: a subagent session runs `[bash]`| a text            |
| `[todo]`   | a `todowrite` tool call                             | a text            |
| `[write]`  | a `write` tool call (a file edit: a patch part)     | a text            |
| `[error]`  | HTTP 400 (OpenCode stores an `APIError`)            |                   |
| `[long]`   | a long text in many chunks                          |                   |
| `[mcp]`    | an `ocsight_usage_summary` call (ocsight's MCP tool)| a text            |
| `[slow]`   | a text, one word every `slow_ms` (real durations)   |                   |
| `[stall]`  | a few words of a text, then nothing until released  | the rest of it    |
| `[500]`    | HTTP 500 with a JSON error body, on every attempt   |                   |
| `[429]`    | HTTP 429 with `Retry-After: retry_after` (seconds)  | a text, on retry  |

The last four misbehave, for tests of what OpenCode stores when a model is slow, hangs or fails:

- `[slow]` streams `SLOW_TEXT` one word a chunk, sleeping `MockModel(slow_ms=...)` (default 50) before
  each word, so a message lasts at least `len(SLOW_TEXT.split())` x `slow_ms`.
- `[stall]` streams the role chunk and `STALL_AFTER` words (OpenCode has then begun the assistant
  message's text), sets `MockModel.stalled` and sends nothing more, keeping the connection open, until
  `MockModel.release()` (or the server's shutdown, which releases every stall); the rest of the
  answer then follows as usual (written to nobody if OpenCode is gone).
- `[500]` refuses every attempt: OpenCode's retries can be counted in the log. With
  `MockModel(error_retry_after_ms=...)` the answer carries a `retry-after-ms` header.
- `[429]` refuses the first attempt of each prompt and step with a `Retry-After` header
  (`MockModel(retry_after=...)`, default 1 second) and answers the next attempt with a text.

An attempt is one request for the same user message and step: the mock counts them (per instance).
What OpenCode 1.18.33 makes of them is pinned in tests/test_mockmodel.py: it retries a 500 five times
(about 2, 4, 8, 16 and 32 s apart without a retry header) and then stores an `APIError`; it retries a
429 after its `Retry-After` and stores the answer as if nothing was refused; killed during a stall it
leaves an assistant message without `time.completed` (see harness.py's `interrupted_turn`).

Token counts vary from request to request but are a pure function of the user message and the step
(how many model answers the turn already has), so the same script gives the same counts whatever
OpenCode version sends it (a `[429]` retry reports what its refused attempt would have). Every request
is appended to a JSON-lines log with what was reported, so tests can compare what OpenCode stored with
what the model said. The entries of the four misbehaving scenarios also say when the request came
(`time`, epoch seconds), which `attempt` it was (0 first), whether the answer `stalled`, and the pace
or `retry_after` it was given; a `[stall]` entry is written when the stall begins.

Run alone: `python tests/mockmodel.py --port 4010 --log requests.jsonl`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SCENARIOS = ("bash", "fail", "reason", "task", "todo", "write", "error", "long", "mcp", "slow", "stall", "500", "429")
# The scenarios whose log entries say more (time, attempt, stalled, pace): the others' entries keep
# the keys the recorded corpora have.
MISBEHAVING = ("slow", "stall", "500", "429")
SLOW_MS = 50  # default pause before each word of a `[slow]` answer
RETRY_AFTER = 1  # default `Retry-After` (seconds) of a `[429]` answer
SLOW_TEXT = "Slowly, one word at a time, the mock model answers the question."
STALL_TEXT = "Starting an answer that will stall here, then carry on when released."
STALL_AFTER = 3  # words of a `[stall]` answer streamed before it stalls
# What `[mcp]` asks ocsight's MCP server (named `ocsight` in OpenCode's config) for: all history.
MCP_TOOL, MCP_ARGUMENTS = "ocsight_usage_summary", {"since": "2000-01-01"}
SUBAGENT_PROMPT = "[bash] from inside the subagent"
_KEYWORD = re.compile(r"\[(" + "|".join(SCENARIOS) + r")\]")


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int

    def openai(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }


@dataclass
class Reply:
    """One model answer: what is streamed, and the log record of it."""

    scenario: str
    step: int
    prompt: str = ""
    text: str = ""
    reasoning: str = ""
    tool: str | None = None
    arguments: dict = field(default_factory=dict)
    status: int = 200
    usage: Usage | None = None
    attempt: int = 0  # earlier requests of the same prompt and step (see MockModel)
    words_per_chunk: int = 8
    pace_ms: float = 0  # pause before each text chunk
    stall_after: int | None = None  # text chunks streamed before a stall
    retry_after: float | None = None  # seconds, a `Retry-After` header of a refusal
    retry_after_ms: float | None = None  # a `retry-after-ms` header of a refusal

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool else "stop"


def usage_for(seed: str, step: int, reasoning: bool, long: bool) -> Usage:
    """Counts that differ per request, reproducibly: hashed from the user message and the step."""
    h = hashlib.sha256(f"{seed}|{step}".encode()).digest()
    n = [int.from_bytes(h[i : i + 4], "big") for i in range(0, 16, 4)]
    prompt = 2_000 + n[0] % 6_000 + 700 * step
    cached = (n[1] % (prompt // 2)) if step or n[1] % 3 else 0
    reasoning_tokens = 20 + n[2] % 200 if reasoning else 0
    completion = (1_500 + n[3] % 1_000 if long else 15 + n[3] % 120) + reasoning_tokens
    return Usage(prompt, completion, cached, reasoning_tokens)


def _text_of(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def title_for(messages: list[dict]) -> str:
    """A session title from the prompt the title request quotes, without its scenario keyword."""
    users = [_text_of(m) for m in messages if m.get("role") == "user"]
    lines = [ln.strip().strip('"').strip() for ln in (users[-1] if users else "").splitlines() if ln.strip()]
    text = _KEYWORD.sub("", lines[-1] if lines else "").strip(" .\"'")
    return (text[:1].upper() + text[1:50]) if text else "Mock session"


def turn_of(body: dict) -> tuple[str, int] | None:
    """The user message (unquoted) and step a request is for; None for a title request."""
    messages = body.get("messages") or []
    if not body.get("tools"):
        return None
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    prompt = _text_of(messages[last_user]) if last_user >= 0 else ""
    step = sum(1 for m in messages[last_user + 1 :] if m.get("role") == "assistant")
    # OpenCode 1.15+ sends `opencode run`'s prompt in quotes, 1.1 without: the seed ignores them.
    return prompt.strip().strip('"').strip(), step


def plan_reply(body: dict, attempt: int = 0, *, slow_ms: float = SLOW_MS, retry_after: float = RETRY_AFTER,
               error_retry_after_ms: float | None = None) -> Reply:
    """What the model answers to one request, from the conversation OpenCode sent, the `attempt`
    (earlier requests of the same prompt and step) and the mock's settings for misbehaving."""
    turn = turn_of(body)
    if turn is None:
        return Reply("title", 0, text=title_for(body.get("messages") or []), usage=Usage(50, 3, 0, 0))
    prompt, step = turn
    found = _KEYWORD.search(prompt)
    scenario = found[1] if found else "plain"
    usage = usage_for(prompt, step, scenario == "reason", scenario == "long")
    reply = Reply(scenario, step, usage=usage, prompt=prompt, attempt=attempt)
    if scenario == "error":
        reply.status = 400
        reply.usage = None
    elif scenario == "500":
        reply.status, reply.usage, reply.retry_after_ms = 500, None, error_retry_after_ms
    elif scenario == "429" and attempt == 0:
        reply.status, reply.usage, reply.retry_after = 429, None, retry_after
    elif scenario == "429":
        reply.text = "Answered after a rate limit."
    elif scenario == "slow":
        reply.text, reply.words_per_chunk, reply.pace_ms = SLOW_TEXT, 1, slow_ms
    elif scenario == "stall":
        reply.text, reply.words_per_chunk, reply.stall_after = STALL_TEXT, 1, STALL_AFTER
    elif step > 0 or scenario == "plain":
        reply.text = "Done: the tool said what it said." if step else "Hello from the mock model."
    elif scenario == "bash":
        reply.tool, reply.arguments = "bash", {"command": "echo hello-from-mock", "description": "Print a greeting"}
    elif scenario == "fail":
        reply.tool, reply.arguments = "read", {"filePath": "missing-file.txt"}
    elif scenario == "reason":
        reply.reasoning, reply.text = "Thinking about the request, step by step.", "Reasoned answer."
    elif scenario == "task":
        reply.tool = "task"
        reply.arguments = {"description": "Mock subtask", "prompt": SUBAGENT_PROMPT, "subagent_type": "general"}
    elif scenario == "todo":
        reply.tool = "todowrite"
        reply.arguments = {"todos": [{"id": "1", "content": "write report", "status": "in_progress",
                                      "priority": "high"}]}
    elif scenario == "write":
        reply.tool, reply.arguments = "write", {"filePath": "hello.txt", "content": "hello from the mock\n"}
    elif scenario == "mcp":
        reply.tool, reply.arguments = MCP_TOOL, dict(MCP_ARGUMENTS)
    elif scenario == "long":
        reply.text = " ".join(f"Line {i} of a long answer about nothing in particular." for i in range(120))
    return reply


def _chunk(model: str, delta: dict | None, finish: str | None = None, usage: dict | None = None) -> bytes:
    record = {
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        record["usage"] = usage
    return b"data: " + json.dumps(record).encode() + b"\n\n"


def stream(reply: Reply, model: str, call_id: str) -> list[bytes]:
    out = [_chunk(model, {"role": "assistant", "content": ""})]
    if reply.reasoning:
        out += [_chunk(model, {"reasoning_content": w + " "}) for w in reply.reasoning.split()]
    if reply.text:
        words, n = reply.text.split(" "), reply.words_per_chunk
        out += [_chunk(model, {"content": " ".join(words[i : i + n]) + " "}) for i in range(0, len(words), n)]
    if reply.tool:
        args = json.dumps(reply.arguments)
        out.append(_chunk(model, {"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                                  "function": {"name": reply.tool, "arguments": ""}}]}))
        out += [_chunk(model, {"tool_calls": [{"index": 0, "function": {"arguments": args[i : i + 20]}}]})
                for i in range(0, len(args), 20)]
    out.append(_chunk(model, {}, reply.finish_reason))
    out.append(_chunk(model, None, usage=reply.usage.openai()))
    out.append(b"data: [DONE]\n\n")
    return out


# Reply fields only the misbehaving scenarios' log entries carry.
_EXTRA = ("attempt", "words_per_chunk", "pace_ms", "stall_after", "retry_after", "retry_after_ms")
_ERRORS = {
    400: {"message": "mock upstream refused the request", "type": "invalid_request_error", "code": "mock_error"},
    429: {"message": "mock rate limit: try again later", "type": "rate_limit_error", "code": "rate_limit_exceeded"},
    500: {"message": "mock upstream failed", "type": "server_error", "code": "mock_server_error"},
}


def text_chunks(reply: Reply) -> range:
    """The indices, in `stream(reply, ...)`, of the chunks carrying the answer's text."""
    first = 1 + (len(reply.reasoning.split()) if reply.reasoning else 0)
    words = len(reply.text.split(" ")) if reply.text else 0
    return range(first, first + -(-words // reply.words_per_chunk))


class MockModel:
    """The server, on a free port of 127.0.0.1, in a background thread; a context manager.

    `slow_ms`, `retry_after` and `error_retry_after_ms` set how `[slow]`, `[429]` and `[500]` misbehave.
    A `[stall]` sets `stalled` (and counts in `stalls`) when it begins; `release()` lets every stall
    begun so far go on; leaving the context releases them all, so a shutdown never waits on one.
    """

    def __init__(self, log: Path, port: int = 0, *, slow_ms: float = SLOW_MS, retry_after: float = RETRY_AFTER,
                 error_retry_after_ms: float | None = None) -> None:
        self.log = log
        self.slow_ms = slow_ms
        self.retry_after = retry_after
        self.error_retry_after_ms = error_retry_after_ms
        self._lock = threading.Lock()
        self._n = 0
        self._attempts: dict[tuple[str, int], int] = {}
        self.tag = ""  # written into each log entry: which OpenCode version (or phase) was talking
        self.stalled = threading.Event()  # set when a `[stall]` answer has stalled
        self.stalls = 0  # how many have
        self._released = threading.Condition()
        self._generation = 0  # release() calls so far
        self._closing = False
        handler = type("Handler", (_Handler,), {"mock": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> MockModel:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        with self._released:
            self._closing = True
            self._released.notify_all()
        self.server.shutdown()
        self.server.server_close()

    @property
    def requests(self) -> int:
        return self._n

    def plan(self, body: dict) -> Reply:
        """The reply to one request, counting the attempts at each prompt and step."""
        turn = turn_of(body)
        attempt = 0
        if turn is not None:
            with self._lock:
                attempt = self._attempts.get(turn, 0)
                self._attempts[turn] = attempt + 1
        return plan_reply(body, attempt, slow_ms=self.slow_ms, retry_after=self.retry_after,
                          error_retry_after_ms=self.error_retry_after_ms)

    def release(self) -> None:
        """Lets every `[stall]` answer stalled so far go on (later ones stall until the next release)."""
        with self._released:
            self._generation += 1
            self._released.notify_all()

    def stall(self) -> None:
        """Blocks a `[stall]` answer until `release()` or the server's shutdown."""
        with self._released:
            generation = self._generation
            self.stalls += 1
            self.stalled.set()
            while self._generation == generation and not self._closing:
                self._released.wait(0.5)

    def record(self, body: dict, reply: Reply, arrived: float | None = None, stalled: bool = False) -> str:
        with self._lock:
            self._n += 1
            call_id = f"call_mock_{self._n}"
            fields = {k: v for k, v in asdict(reply).items() if k not in ("text", "reasoning", "arguments", *_EXTRA)}
            entry = {"n": self._n, "tag": self.tag, "model": body.get("model"), "call_id": call_id if reply.tool else None,
                     **fields, "finish_reason": reply.finish_reason if reply.status == 200 else None}
            if reply.scenario in MISBEHAVING:
                entry.update({k: getattr(reply, k) for k in _EXTRA}, time=arrived or time.time(), stalled=stalled,
                             chunks=len(text_chunks(reply)) if reply.status == 200 else 0)
            with self.log.open("a") as f:
                f.write(json.dumps(entry) + "\n")
        return call_id


class _Handler(BaseHTTPRequestHandler):
    mock: MockModel
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send_json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send_json(200, {"object": "list", "data": [{"id": "mock-model", "object": "model"}]})
        else:
            self._send_json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        arrived = time.time()
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send_json(400, {"error": {"message": "bad JSON"}})
            return
        reply = self.mock.plan(body)
        stalling = reply.stall_after is not None
        # A stalling answer is logged when it stalls (or fails to), saying so.
        call_id = "" if stalling else self.mock.record(body, reply, arrived)
        if reply.status != 200:
            headers = {}
            if reply.retry_after is not None:
                headers["Retry-After"] = f"{reply.retry_after:g}"
            if reply.retry_after_ms is not None:
                headers["retry-after-ms"] = f"{reply.retry_after_ms:g}"
            self._send_json(reply.status, {"error": _ERRORS.get(reply.status, _ERRORS[500])}, headers)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        paced = text_chunks(reply) if reply.pace_ms else range(0)
        stall_at = text_chunks(reply).start + reply.stall_after if stalling else -1
        try:
            for i, piece in enumerate(stream(reply, body.get("model", "mock"), call_id)):
                if i == stall_at:
                    self.mock.record(body, reply, arrived, stalled=True)
                    stalling = False
                    self.mock.stall()
                if i in paced:
                    time.sleep(reply.pace_ms / 1000)
                self.wfile.write(piece)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client went away (or was killed)
            if stalling:
                self.mock.record(body, reply, arrived, stalled=False)
        self.close_connection = True


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=4010)
    ap.add_argument("--log", type=Path, default=Path("requests.jsonl"))
    ap.add_argument("--slow-ms", type=float, default=SLOW_MS, help="pause before each word of [slow]")
    ap.add_argument("--retry-after", type=float, default=RETRY_AFTER, help="Retry-After (s) of [429]")
    a = ap.parse_args()
    with MockModel(a.log, a.port, slow_ms=a.slow_ms, retry_after=a.retry_after) as m:
        print(f"mock model on {m.url}, log {a.log}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
