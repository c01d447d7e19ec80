"""The real OpenCode, installed from npm and run offline against the mock model.

`install(version)` puts `opencode-linux-x64@VERSION` into a cache outside the repository
(`$OCSIGHT_TEST_CACHE`, default `~/.cache/ocsight-tests`). `OpenCode` runs one version in a
sandbox: HOME and every XDG directory inside one temporary root, network features off, a git
repository to work in, and a config with two providers (one free, like a subscription) and three
models, all answered by the mock. `run()` drives `opencode run`; `serve()` starts `opencode serve`
and drives its HTTP API; `interrupted_turn()` kills `opencode run` in the middle of a model's answer.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Protocol

CACHE = Path(os.environ.get("OCSIGHT_TEST_CACHE", Path.home() / ".cache" / "ocsight-tests"))
VERSIONS = {"1.19": "1.19.5", "1.18": "1.18.33", "1.15": "1.15.13", "1.1": "1.1.65"}

# USD per 1M tokens, as OpenCode's config takes them.
MODELS = {
    "mock/mock-large": {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75},
    "mock/mock-small": {"input": 0.8, "output": 4, "cache_read": 0.08, "cache_write": 1},
    "freebie/free-model": {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0},
}
DEFAULT_MODEL = "mock/mock-large"
DEFAULT_PROJECT = "webshop"
PROVIDER_NAMES = {"mock": "Mock (paid)", "freebie": "Freebie (subscription)"}

QUIET = {
    "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1", "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    "OPENCODE_DISABLE_CLAUDE_CODE": "1", "OPENCODE_DISABLE_EXTERNAL_SKILLS": "1",
}


# Prompts whose turn ends in an error (mockmodel's scenarios): `opencode run` exits non-zero.
FAILING = ("[error]", "[500]")


class HarnessError(RuntimeError):
    pass


class Stalling(Protocol):
    """What `OpenCode.interrupted_turn` needs of the mock model (tests/mockmodel.py's `MockModel`)."""

    stalls: int  # `[stall]` answers stalled so far

    def release(self) -> None: ...


def install(version: str) -> Path:
    """The `opencode` binary of one version, installed from npm on first use."""
    prefix = CACHE / f"opencode-{version}"
    binary = prefix / "node_modules" / "opencode-linux-x64" / "bin" / "opencode"
    if not binary.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--silent",
             f"opencode-linux-x64@{version}"],
            check=True, timeout=900,
        )
    binary.chmod(0o755)
    return binary


def config(mock_url: str) -> dict:
    providers: dict = {}
    for ref, cost in MODELS.items():
        provider, model = ref.split("/")
        p = providers.setdefault(provider, {
            "npm": "@ai-sdk/openai-compatible", "name": PROVIDER_NAMES[provider],
            "options": {"baseURL": mock_url, "apiKey": "mock-key"}, "models": {},
        })
        p["models"][model] = {"name": model, "tool_call": True, "reasoning": True, "cost": cost,
                              "limit": {"context": 200_000, "output": 8_192}}
    return {"$schema": "https://opencode.ai/config.json", "autoupdate": False, "share": "disabled",
            "model": DEFAULT_MODEL, "small_model": DEFAULT_MODEL, "provider": providers}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OpenCode:
    """One OpenCode version in a sandbox under `root`; the sandbox (data included) outlives the object,
    so that a later version can be run on the same data, as a user upgrading does."""

    def __init__(self, version: str, root: Path, mock_url: str, extra_config: dict | None = None) -> None:
        self.version = version
        self.binary = install(version)
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCODE", "XDG_"))}
        for var, sub in (("HOME", "home"), ("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"),
                         ("XDG_CACHE_HOME", "cache"), ("XDG_STATE_HOME", "state")):
            (root / sub).mkdir(parents=True, exist_ok=True)
            self.env[var] = str(root / sub)
        self.env.update(QUIET)
        self.env["GIT_CONFIG_NOSYSTEM"] = "1"
        cfg = root / "config" / "opencode" / "opencode.json"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(json.dumps({**config(mock_url), **(extra_config or {})}, indent=2))

    def workdir(self, project: str = DEFAULT_PROJECT) -> Path:
        """A git repository under the sandbox's home, made on first use (OpenCode's project is its root commit)."""
        path = self.root / "home" / "dev" / project
        if not (path / ".git").exists():
            path.mkdir(parents=True, exist_ok=True)
            for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "mock@example.com"],
                        ["git", "config", "user.name", "Mock"], ["git", "config", "commit.gpgsign", "false"]):
                subprocess.run(cmd, cwd=path, check=True, env=self.env)
            (path / "README.md").write_text(f"{project}: a project for the mock model.\n")
            subprocess.run(["git", "add", "."], cwd=path, check=True, env=self.env)
            subprocess.run(["git", "commit", "-qm", "init"], cwd=path, check=True, env=self.env)
        return path

    def _env_in(self, cwd: Path) -> dict:
        return {**self.env, "PWD": str(cwd)}  # OpenCode takes its directory from PWD when set

    @property
    def data_dir(self) -> Path:
        return self.root / "data" / "opencode"

    @property
    def database(self) -> Path:
        return self.data_dir / "opencode.db"

    def _run_command(self, prompt: str, model: str | None, agent: str | None, session: str | None,
                     project: str, fork: bool = False) -> tuple[list[str], Path]:
        cwd = self.workdir(project or DEFAULT_PROJECT)
        cmd = [str(self.binary), "run"]
        if model:
            cmd += ["-m", model]
        if agent:
            cmd += ["--agent", agent]
        if session:
            cmd += ["--session", session]
        if fork:
            cmd.append("--fork")  # 1.19: a new session with copies of the session's messages first
        cmd.append(prompt)
        return cmd, cwd

    def run(self, prompt: str, model: str | None = None, agent: str | None = None,
            session: str | None = None, project: str = "", timeout: float = 180,
            fork: bool = False) -> subprocess.CompletedProcess:
        """One turn with `opencode run`, which exits when the turn is over; with `fork` (1.19), in a
        fork of `session`."""
        cmd, cwd = self._run_command(prompt, model, agent, session, project, fork)
        p = subprocess.run(cmd, cwd=cwd, env=self._env_in(cwd), capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if p.returncode != 0 and not any(k in prompt for k in FAILING):
            raise HarnessError(f"opencode {self.version} run {prompt!r} failed ({p.returncode}): "
                               f"{p.stderr[-2000:]}")
        return p

    def session_of_prompt(self, prompt: str) -> str:
        """The newest session whose user asked `prompt` (read-only), from the database (1.19's `run`
        stores the prompt in quotes)."""
        with closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10)) as con:
            row = con.execute(
                "SELECT p.session_id FROM part p JOIN session s ON s.id = p.session_id"
                " WHERE json_extract(p.data, '$.type') = 'text' AND json_extract(p.data, '$.text') IN (?1, json_quote(?1))"
                " ORDER BY s.time_created DESC LIMIT 1", (prompt,)).fetchone()
        if row is None:
            raise HarnessError(f"no session asked {prompt!r}")
        return row[0]

    def unfinished_messages(self) -> list[tuple[str, str, list[str]]]:
        """(session, message, its part types) of every assistant message without `time.completed`,
        read-only; none while the database does not exist yet or is busy."""
        if not self.database.exists():
            return []
        try:
            with closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=1)) as con:
                rows = con.execute(
                    "SELECT m.session_id, m.id, json_group_array(json_extract(p.data, '$.type'))"
                    " FROM message m LEFT JOIN part p ON p.message_id = m.id"
                    " WHERE json_extract(m.data, '$.role') = 'assistant'"
                    " AND json_extract(m.data, '$.time.completed') IS NULL"
                    " GROUP BY m.id ORDER BY m.time_created, m.id").fetchall()
        except sqlite3.Error:
            return []
        return [(session, message, [t for t in json.loads(types) if t]) for session, message, types in rows]

    def interrupted_turn(self, mock: Stalling, prompt: str, model: str | None = None, agent: str | None = None,
                         session: str | None = None, project: str = "", timeout: float = 60) -> str:
        """A turn killed mid-stream: the session id of a store whose last assistant message has no
        `time.completed`, as a crash, `kill -9` or a power cut leaves it.

        `opencode run PROMPT` (PROMPT holding `[stall]`) starts as `run()` starts it; once the mock's
        answer has stalled and OpenCode's database holds the unfinished assistant message with a text
        part (OpenCode writes it, empty, when the text starts), OpenCode (its process group) gets
        SIGKILL. Then the mock's stalls are released. For versions with a database (1.15 and later).
        OpenCode's output is in `interrupted.log` under the sandbox's root.
        """
        if "[stall]" not in prompt:
            raise HarnessError(f"an interrupted turn needs a [stall] prompt, not {prompt!r}")
        cmd, cwd = self._run_command(prompt, model, agent, session, project)
        before_stalls, before = mock.stalls, {m[1] for m in self.unfinished_messages()}
        deadline = time.monotonic() + timeout
        with (self.root / "interrupted.log").open("ab") as out:
            proc = subprocess.Popen(cmd, cwd=cwd, env=self._env_in(cwd), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                while True:
                    if proc.poll() is not None:
                        raise HarnessError(f"opencode {self.version} run {prompt!r} exited ({proc.returncode})"
                                           " before it could be interrupted")
                    if time.monotonic() > deadline:
                        raise HarnessError(f"opencode {self.version} run {prompt!r}: no stalled answer stored"
                                           f" within {timeout} s")
                    if mock.stalls > before_stalls:
                        new = [m for m in self.unfinished_messages() if m[1] not in before and "text" in m[2]]
                        if new:
                            break
                    time.sleep(0.05)
            finally:
                _kill(proc)
                mock.release()
        return new[-1][0]

    @contextmanager
    def serve(self, project: str = "") -> Iterator[Server]:
        """`opencode serve` on a free port of 127.0.0.1, stopped on exit."""
        cwd = self.workdir(project or DEFAULT_PROJECT)
        port = free_port()
        log = (self.root / "serve.log").open("ab")
        proc = subprocess.Popen([str(self.binary), "serve", "--port", str(port), "--hostname", "127.0.0.1"],
                                cwd=cwd, env=self._env_in(cwd), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        server = Server(f"http://127.0.0.1:{port}", cwd)
        try:
            server.wait_ready(proc)
            yield server
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()

    def copy_store(self, target: Path) -> None:
        """The data OpenCode wrote (database, legacy tree), without its logs, snapshots and binaries.

        The database is copied with its WAL, which is then folded in: the copy is one file in
        rollback-journal mode, which a read-only open never has to write beside.
        """
        target.mkdir(parents=True, exist_ok=True)
        for db in sorted(self.data_dir.glob("opencode*.db")):
            copy = target / db.name
            shutil.copyfile(db, copy)
            if Path(f"{db}-wal").exists():
                shutil.copyfile(f"{db}-wal", f"{copy}-wal")
            con = sqlite3.connect(copy)
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            con.execute("PRAGMA journal_mode = DELETE")
            con.close()
            for suffix in ("-wal", "-shm"):
                Path(f"{copy}{suffix}").unlink(missing_ok=True)
        storage = self.data_dir / "storage"
        if storage.is_dir():
            shutil.copytree(storage, target / "storage", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("snapshot", "session_diff"))


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL to a process started in its own session, and to whatever it started."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class Server:
    """OpenCode's HTTP API, as its TUI and SDK use it."""

    def __init__(self, url: str, directory: Path) -> None:
        self.url = url
        self.directory = str(directory)

    def wait_ready(self, proc: subprocess.Popen, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last: OSError | None = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise HarnessError(f"opencode serve exited with {proc.returncode}")
            try:
                self.request("GET", "/session", timeout=3)  # early connections can hang: try again
                return
            except OSError as e:
                last = e
                time.sleep(0.2)
        raise HarnessError(f"opencode serve did not answer: {last}")

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 180) -> object:
        sep = "&" if "?" in path else "?"
        req = urllib.request.Request(
            f"{self.url}{path}{sep}directory={urllib.request.quote(self.directory)}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={} if body is None else {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def new_session(self) -> str:
        return self.request("POST", "/session", {})["id"]

    def prompt(self, session: str, text: str, model: str | None = None) -> dict:
        """Sends a user message and waits for the turn to end (the API answers when it has)."""
        body: dict = {"parts": [{"type": "text", "text": text}]}
        if model:
            provider, model_id = model.split("/")
            body["model"] = {"providerID": provider, "modelID": model_id}
        return self.request("POST", f"/session/{session}/message", body)
