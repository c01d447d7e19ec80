"""`ocsight live`: dated times, tables sized to the terminal, `--session`, the session picker (driven
through a real terminal: tmux) and the followed session's context-window fill."""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import write_store
from corpus import raw_store, store_dir
from storegen import Builder, tokens

DAY_MS = 86_400_000
SONNET = ("anthropic", "claude-sonnet-4-5")


def now_ms() -> int:
    return int(time.time() * 1000)


def two_sessions(root: Path) -> tuple[dict, dict]:
    """An older session ("Refactor billing", two weeks ago) and a newer one ("Fix login", today)."""
    b = Builder()
    project = b.project("/home/dev/shop")
    now = now_ms()
    old = b.session(project, at=now - 14 * DAY_MS)
    old["title"] = "Refactor billing"
    b.assistant(old, now - 14 * DAY_MS + 1000, tokens(input=1200, output=300), cost=0.01)
    new = b.session(project, at=now - 60_000)
    new["title"] = "Fix login"
    b.assistant(new, now - 30_000, tokens(input=800, output=100), cost=0.02)
    write_store(b.plan, root, "db")
    return old, new


# -- times ------------------------------------------------------------------------------------------

def test_a_call_of_another_day_shows_its_date_below_todays(cli, tmp_path: Path, monkeypatch):
    b = Builder()
    s = b.session(b.project(), at=now_ms() - 14 * DAY_MS)
    older_at, today_at = now_ms() - 14 * DAY_MS, now_ms() - 1
    b.assistant(s, older_at, tokens(input=111_111, output=1))
    b.assistant(s, today_at, tokens(input=222_222, output=2))
    write_store(b.plan, tmp_path / "data", "db")
    monkeypatch.setenv("COLUMNS", "120")
    r = cli("live", "--once", "--data-dir", str(tmp_path / "data"))
    assert r.code == 0, r.err
    rows = {n: line for line in r.out.splitlines() for n in ("111,112", "222,224") if n in line}
    older = dt.datetime.fromtimestamp(older_at / 1000)
    today = dt.datetime.fromtimestamp(today_at / 1000)
    assert f"{older:%m-%d %H:%M:%S}" in rows["111,112"]
    assert f"{today:%H:%M:%S}" in rows["222,224"] and f"{today:%m-%d}" not in rows["222,224"]
    assert r.out.index("222,224") < r.out.index("111,112")


# -- widths -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("width", [50, 80, 160])
def test_tables_fit_the_terminal_without_stretching_and_numbers_stay_whole(cli, tmp_path: Path, monkeypatch,
                                                                           width: int):
    b = Builder()
    s = b.session(b.project("/home/dev/projects/a-rather-long-project-name"), at=now_ms() - 60_000)
    call_at = now_ms() - 50_000
    b.assistant(s, call_at, tokens(input=123_456_000, output=789), cost=1234.5678,
                provider="github-copilot", model="claude-sonnet-4.5-preview-2026")
    write_store(b.plan, tmp_path / "data", "db")
    monkeypatch.setenv("COLUMNS", str(width))
    r = cli("live", "--once", "--data-dir", str(tmp_path / "data"))
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert max(len(line) for line in lines) <= min(width, 110)
    row = next(line for line in lines if f"{dt.datetime.fromtimestamp(call_at / 1000):%H:%M:%S}" in line)
    assert "123,456,789" in row and "$1,234.5678" in row


def test_the_followed_sessions_project_path_is_whole_on_a_wide_terminal(cli, tmp_path: Path, monkeypatch):
    path = "/srv/work/clients/northwind/services/billing-service-api"
    b = Builder()
    s = b.session(b.project(path), at=now_ms() - 60_000)
    b.assistant(s, now_ms() - 50_000, tokens(input=10, output=1))
    write_store(b.plan, tmp_path / "data", "db")
    monkeypatch.setenv("COLUMNS", "160")
    r = cli("live", "--once", "--data-dir", str(tmp_path / "data"))
    assert r.code == 0 and path in r.out, r.out


@pytest.mark.parametrize("mode", ["auto", "stored", "calculate"])
def test_a_call_no_price_source_knows_is_unpriced_in_every_cost_mode_never_zero(cli, tmp_path: Path, monkeypatch,
                                                                                mode: str):
    b = Builder()
    s = b.session(b.project(), at=now_ms() - 60_000)
    b.assistant(s, now_ms() - 50_000, tokens(input=4321, output=12), provider="acme", model="mystery-1")
    write_store(b.plan, tmp_path / "data", "db")
    monkeypatch.setenv("COLUMNS", "120")
    r = cli("live", "--once", "--cost-mode", mode, "--data-dir", str(tmp_path / "data"))
    assert r.code == 0, r.err
    row = next(line for line in r.out.splitlines() if "acme/mystery-1" in line and "4,333" in line)
    assert "unpriced" in row and "$0.0000" not in row, r.out
    usage = next(line for line in r.out.splitlines() if "Usage" in line)
    assert "unknown (1 unpriced)" in usage, r.out


# -- --session --------------------------------------------------------------------------------------

def test_session_flag_follows_that_session_rather_than_the_newest(cli, tmp_path: Path, monkeypatch):
    old, new = two_sessions(tmp_path / "data")
    monkeypatch.setenv("COLUMNS", "120")
    r = cli("live", "--once", "--session", old["id"], "--data-dir", str(tmp_path / "data"))
    assert r.code == 0, r.err
    assert old["id"] in r.out and "Refactor billing" in r.out and new["id"] not in r.out


def test_an_unknown_session_is_a_one_line_error_naming_it(cli, tmp_path: Path):
    two_sessions(tmp_path / "data")
    r = cli("live", "--once", "--session", "ses_nosuchthing", "--data-dir", str(tmp_path / "data"))
    assert r.code == 1 and r.out == ""
    assert r.err.count("\n") == 1 and "ses_nosuchthing" in r.err and r.err.startswith("ocsight: error:")


def test_pick_without_a_terminal_is_a_usage_error(cli, tmp_path: Path):
    two_sessions(tmp_path / "data")
    r = cli("live", "--pick", "--data-dir", str(tmp_path / "data"))
    assert r.code == 2 and r.err.count("\n") == 1 and "--pick" in r.err


# -- context fill -----------------------------------------------------------------------------------

def _one_call(root: Path, provider: str, model: str, **counts: int) -> None:
    b = Builder()
    s = b.session(b.project(), at=now_ms() - 60_000)
    b.assistant(s, now_ms() - 50_000, tokens(input=1, output=5), provider=provider, model=model)
    b.assistant(s, now_ms() - 40_000, tokens(**counts), provider=provider, model=model)
    write_store(b.plan, root, "db")


def test_context_fill_is_the_last_calls_prompt_against_the_catalogues_limit(cli, tmp_path: Path, monkeypatch,
                                                                           models_json: Path):
    _one_call(tmp_path / "data", *SONNET, input=30_000, cache_read=10_000, cache_write=5_120, output=900)
    monkeypatch.setenv("COLUMNS", "120")
    r = cli("live", "--once", "--data-dir", str(tmp_path / "data"))
    assert r.code == 0, r.err
    assert "45,120 / 400,000 (11%)" in r.out


def test_context_fill_takes_the_limit_from_opencode_config(cli, tmp_path: Path, monkeypatch):
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "opencode" / "opencode.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"provider": {"acme": {"models": {"mystery-1": {"limit": {"context": 128_000}}}}}}))
    _one_call(tmp_path / "data", "acme", "mystery-1", input=64_000)
    monkeypatch.setenv("COLUMNS", "120")
    r = cli("live", "--once", "--data-dir", str(tmp_path / "data"))
    assert r.code == 0, r.err
    assert "64,000 / 128,000 (50%)" in r.out


def test_context_fill_takes_the_users_config_over_the_catalogue(cli, tmp_path: Path, monkeypatch,
                                                                models_json: Path):
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "opencode" / "opencode.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"provider": {"anthropic": {"models": {"claude-sonnet-4-5": {
        "limit": {"context": 100_000}}}}}}))
    _one_call(tmp_path / "data", *SONNET, input=50_000)
    monkeypatch.setenv("COLUMNS", "120")
    r = cli("live", "--once", "--data-dir", str(tmp_path / "data"))
    assert r.code == 0, r.err
    assert "50,000 / 100,000 (50%)" in r.out


def test_context_fill_of_a_model_without_a_known_limit_is_unknown(cli, tmp_path: Path, monkeypatch,
                                                                 models_json: Path):
    _one_call(tmp_path / "data", "acme", "mystery-1", input=64_000)
    monkeypatch.setenv("COLUMNS", "120")
    r = cli("live", "--once", "--data-dir", str(tmp_path / "data"))
    assert r.code == 0, r.err
    assert "64,000 / unknown" in r.out


def test_context_fill_of_a_recorded_session_uses_the_config_opencode_ran_with(cli, monkeypatch):
    """OpenCode 1.18's own records and config: its mock models have a 200,000-token window."""
    monkeypatch.setenv("OPENCODE_CONFIG", str(store_dir("opencode-1.18").parent / "opencode.json"))
    monkeypatch.setenv("COLUMNS", "120")
    r = cli("live", "--once", "--data-dir", str(store_dir("opencode-1.18")))
    last = max(raw_store(store_dir("opencode-1.18")).assistant(), key=lambda m: m["time"]["created"])
    t = last["tokens"]
    sent = t["input"] + t["cache"]["read"] + t["cache"]["write"]
    assert r.code == 0, r.err
    assert f"{sent:,} / 200,000 ({sent / 200_000:.0%})" in r.out


# -- the keyboard, through a real terminal ----------------------------------------------------------

TMUX = shutil.which("tmux")
needs_tmux = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (make debs installs it)")


class Terminal:
    """A tmux server of its own with one pane of a given size, running a command."""

    def __init__(self, tmp_path: Path, command: list[str], width: int = 80, height: int = 30,
                 output: Path | None = None) -> None:
        self.socket = str(tmp_path / "tmux.sock")
        # the tmux server, started here, hands the pane this process's environment (PYTHONPATH, the
        # isolated XDG directories, an old SQLite's LD_LIBRARY_PATH); the pane's own size, not a COLUMNS
        # set here, must decide the width. After the command, the terminal's modes, so a test can see
        # that the view restored them; the shell outlives a Ctrl-C (a trap with a handler, unlike an
        # ignored signal, is not inherited by the command).
        run = shlex.join(command) + (f" > {shlex.quote(str(output))} 2>&1" if output else "")
        shell = f"trap : INT; env -u COLUMNS -u LINES {run}; echo EXIT=$?; stty -a; sleep 600"
        self._tmux("new-session", "-d", "-x", str(width), "-y", str(height), "sh", "-c", shell)

    def _tmux(self, *args: str) -> str:
        assert TMUX is not None
        return subprocess.run([TMUX, "-S", self.socket, "-f", "/dev/null", *args], capture_output=True, text=True,
                              check=True, timeout=30).stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-J")

    def history(self) -> str:
        """The screen with what scrolled off it."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-")

    def modes(self) -> list[str]:
        """The pane's terminal modes now (`stty -a` of its tty, read from outside)."""
        tty = self._tmux("display-message", "-p", "#{pane_tty}").strip()
        return subprocess.run(["stty", "-a", "-F", tty], capture_output=True, text=True, check=True,
                              timeout=30).stdout.split()

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", *keys)

    def wait(self, until: Callable[[str], bool], what: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if until(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} on the screen within {timeout} s:\n{text}")
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run([TMUX or "tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=30, check=False)


@pytest.fixture
def terminal(tmp_path: Path):
    opened: list[Terminal] = []

    def open_(*args: str, width: int = 80, output: Path | None = None) -> Terminal:
        t = Terminal(tmp_path, [sys.executable, "-m", "ocsight", "live", "--interval", "0.5", *args], width,
                     output=output)
        opened.append(t)
        return t

    yield open_
    for t in opened:
        t.close()


def _picker_open(screen: str) -> bool:
    return "Esc or q: back" in screen and "Refactor billing" in screen


@needs_tmux
def test_a_number_in_the_picker_follows_that_session(terminal, tmp_path: Path):
    old, _new = two_sessions(tmp_path / "data")
    t = terminal("--data-dir", str(tmp_path / "data"))
    t.wait(lambda s: "Fix login (the newest)" in s, "live view of the newest session")
    t.keys("s")
    screen = t.wait(_picker_open, "session picker")
    number = next(line for line in screen.splitlines() if "Refactor billing" in line).split()[1]
    t.keys(number)
    t.wait(lambda s: "Refactor billing (chosen)" in s and old["id"] in s, "the chosen session")


@needs_tmux
def test_arrows_and_enter_in_the_picker_follow_the_session_under_the_cursor(terminal, tmp_path: Path):
    two_sessions(tmp_path / "data")
    t = terminal("--data-dir", str(tmp_path / "data"))
    t.wait(lambda s: "Fix login (the newest)" in s, "live view of the newest session")
    t.keys("s")
    t.wait(_picker_open, "session picker")
    t.keys("Down", "Down")  # past "the newest" and the newest session
    t.wait(lambda s: any(line.lstrip("│ ").startswith(">") and "Refactor billing" in line
                         for line in s.splitlines()), "cursor on the older session")
    t.keys("Enter")
    t.wait(lambda s: "Refactor billing (chosen)" in s, "the chosen session")


@needs_tmux
def test_esc_leaves_the_picker_and_keeps_the_session(terminal, tmp_path: Path):
    two_sessions(tmp_path / "data")
    t = terminal("--data-dir", str(tmp_path / "data"))
    t.wait(lambda s: "Fix login (the newest)" in s, "live view of the newest session")
    t.keys("s")
    t.wait(_picker_open, "session picker")
    t.keys("j", "j", "Escape")
    t.wait(lambda s: "Fix login (the newest)" in s and "Esc or q: back" not in s, "the view of the same session")


@needs_tmux
def test_pick_flag_starts_in_the_picker(terminal, tmp_path: Path):
    two_sessions(tmp_path / "data")
    t = terminal("--pick", "--data-dir", str(tmp_path / "data"))
    t.wait(_picker_open, "session picker")
    t.keys("k", "j", "j", "Enter")
    t.wait(lambda s: "Refactor billing (chosen)" in s, "the chosen session")


@needs_tmux
@pytest.mark.parametrize("quit_key", ["q", "C-c"])
def test_leaving_the_view_restores_the_terminal(terminal, tmp_path: Path, quit_key: str):
    two_sessions(tmp_path / "data")
    t = terminal("--data-dir", str(tmp_path / "data"))
    t.wait(lambda s: "Fix login (the newest)" in s, "live view of the newest session")
    t.keys(quit_key)
    screen = t.wait(lambda s: "EXIT=" in s and "speed" in s, "exit and terminal modes")
    modes = screen[screen.index("EXIT="):].split()
    assert "EXIT=0" in modes and "icanon" in modes and "echo" in modes


@needs_tmux
def test_the_picker_lists_recent_sessions_newest_first_with_project_activity_and_spend(terminal, tmp_path: Path):
    old, _new = two_sessions(tmp_path / "data")
    t = terminal("--pick", "--data-dir", str(tmp_path / "data"))
    lines = t.wait(_picker_open, "session picker").splitlines()
    newer = next(i for i, line in enumerate(lines) if "Fix login" in line)
    older = next(i for i, line in enumerate(lines) if "Refactor billing" in line)
    assert newer < older
    old_day = dt.datetime.fromtimestamp(old["time"]["updated"] / 1000)
    assert "/home/dev/shop" in lines[older] and f"{old_day:%m-%d %H:%M:%S}" in lines[older] \
        and "$0.01" in lines[older]
    assert "/home/dev/shop" in lines[newer] and "$0.02" in lines[newer]


@needs_tmux
def test_n_follows_the_newest_session_again(terminal, tmp_path: Path):
    old, _new = two_sessions(tmp_path / "data")
    t = terminal("--session", old["id"], "--data-dir", str(tmp_path / "data"))
    t.wait(lambda s: "Refactor billing (chosen)" in s, "the session given")
    t.keys("n")
    t.wait(lambda s: "Fix login (the newest)" in s, "the newest session")


@needs_tmux
def test_with_output_to_a_file_live_leaves_the_keyboard_to_the_terminal(terminal, tmp_path: Path):
    """No cbreak mode, no picker: what is typed is echoed by the terminal as usual."""
    two_sessions(tmp_path / "data")
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "ocsight"
    t = terminal("--data-dir", str(tmp_path / "data"), output=tmp_path / "live.txt")
    deadline = time.monotonic() + 60
    while not list(cache.glob("index-*.sqlite")):  # past where a view with keys takes the keyboard
        assert time.monotonic() < deadline, "live never read the store"
        time.sleep(0.1)
    modes = t.modes()
    assert "icanon" in modes and "echo" in modes
    t.keys("typed")
    t.wait(lambda s: "typed" in s, "the terminal's echo of what was typed")
    t.keys("C-c")
    t.wait(lambda s: "EXIT=0" in s, "exit")


@needs_tmux
def test_pick_with_once_draws_the_chosen_session_once_and_exits(terminal, tmp_path: Path):
    two_sessions(tmp_path / "data")
    t = terminal("--pick", "--once", "--data-dir", str(tmp_path / "data"))
    screen = t.wait(_picker_open, "session picker")
    number = next(line for line in screen.splitlines() if "Refactor billing" in line).split()[1]
    t.keys(number)
    t.wait(lambda s: "EXIT=" in s, "exit")
    drawn = t.history()
    assert "EXIT=0" in drawn and "Refactor billing (chosen)" in drawn
