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

Token counts vary from request to request but are a pure function of the user message and the step
(how many model answers the turn already has), so the same script gives the same counts whatever
OpenCode version sends it. Every request is appended to a JSON-lines log with what was reported,
so tests can compare what OpenCode stored with what the model said.

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

SCENARIOS = ("bash", "fail", "reason", "task", "todo", "write", "error", "long", "mcp")
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


def plan_reply(body: dict) -> Reply:
    """What the model answers to one request, from the conversation OpenCode sent."""
    messages = body.get("messages") or []
    if not body.get("tools"):
        return Reply("title", 0, text=title_for(messages), usage=Usage(50, 3, 0, 0))
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    prompt = _text_of(messages[last_user]) if last_user >= 0 else ""
    step = sum(1 for m in messages[last_user + 1 :] if m.get("role") == "assistant")
    # OpenCode 1.15+ sends `opencode run`'s prompt in quotes, 1.1 without: the seed ignores them.
    prompt = prompt.strip().strip('"').strip()
    found = _KEYWORD.search(prompt)
    scenario = found[1] if found else "plain"
    usage = usage_for(prompt, step, scenario == "reason", scenario == "long")
    reply = Reply(scenario, step, usage=usage, prompt=prompt)
    if scenario == "error":
        reply.status = 400
        reply.usage = None
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
        words = reply.text.split(" ")
        out += [_chunk(model, {"content": " ".join(words[i : i + 8]) + " "}) for i in range(0, len(words), 8)]
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


class MockModel:
    """The server, on a free port of 127.0.0.1, in a background thread; a context manager."""

    def __init__(self, log: Path, port: int = 0) -> None:
        self.log = log
        self._lock = threading.Lock()
        self._n = 0
        self.tag = ""  # written into each log entry: which OpenCode version (or phase) was talking
        handler = type("Handler", (_Handler,), {"mock": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> MockModel:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def requests(self) -> int:
        return self._n

    def record(self, body: dict, reply: Reply) -> str:
        with self._lock:
            self._n += 1
            call_id = f"call_mock_{self._n}"
            entry = {"n": self._n, "tag": self.tag, "model": body.get("model"), "call_id": call_id if reply.tool else None,
                     **{k: v for k, v in asdict(reply).items() if k not in ("text", "reasoning", "arguments")},
                     "finish_reason": reply.finish_reason if reply.status == 200 else None}
            with self.log.open("a") as f:
                f.write(json.dumps(entry) + "\n")
        return call_id


class _Handler(BaseHTTPRequestHandler):
    mock: MockModel
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send_json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send_json(200, {"object": "list", "data": [{"id": "mock-model", "object": "model"}]})
        else:
            self._send_json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send_json(400, {"error": {"message": "bad JSON"}})
            return
        reply = plan_reply(body)
        call_id = self.mock.record(body, reply)
        if reply.status != 200:
            self._send_json(reply.status, {"error": {"message": "mock upstream refused the request",
                                                     "type": "invalid_request_error", "code": "mock_error"}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for piece in stream(reply, body.get("model", "mock"), call_id):
            self.wfile.write(piece)
            self.wfile.flush()
        self.close_connection = True


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=4010)
    ap.add_argument("--log", type=Path, default=Path("requests.jsonl"))
    a = ap.parse_args()
    with MockModel(a.log, a.port) as m:
        print(f"mock model on {m.url}, log {a.log}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
