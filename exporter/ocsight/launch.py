"""The `ocsight` command's entry point: what a first run starts before the command line loads.

A first build of the index is CPU-bound on every core but during start-up, when the command line's
imports keep one core busy and leave the other idle. A first run of a command that reads the
store therefore starts the genai-prices helper (`ocsight.genai_lookup`) before anything else
loads: at the lowest priority, it loads its catalogue on that idle core, and the read no longer
waits for it. A helper nobody asks is killed at exit; it has nothing to finish.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys

# One-shot commands that refresh the index (the long-running `watch` and `mcp` keep their own pace).
READING_COMMANDS = frozenset({"analyze", "stats", "daily", "weekly", "monthly", "session", "export"})
# Commands that run for days (but `watch --once`), whose memory must stay flat (`Index` with `lean`).
LONG_RUNNING = frozenset({"watch", "mcp"})

_helper: subprocess.Popen | None = None


def entry() -> None:
    """The `ocsight` console script."""
    args = sys.argv[1:]
    if is_first_run(args):
        start_helper()
    from ocsight.cli import entry as run

    run()
    if _command(args) in READING_COMMANDS:
        _exit_without_teardown()


def _command(args: list[str]) -> str | None:
    return next((a for a in args if not a.startswith("-")), None)


def is_long_running(args: list[str]) -> bool:
    return _command(args) in LONG_RUNNING and "--once" not in args


def _exit_without_teardown() -> None:
    """After a one-shot command that succeeded: with its output flushed and its exit handlers run,
    the process ends without freeing a read's objects one by one (10 ms of a first run)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return  # the interpreter's own exit reports it
    atexit._run_exitfuncs()
    os._exit(0)


def is_first_run(args: list[str]) -> bool:
    """A reading command (not its help) while ocsight's cache holds no index: cheap to tell (no
    import, one directory listing), and wrong only towards the read done before the helper existed."""
    if _command(args) not in READING_COMMANDS or "-h" in args or "--help" in args:
        return False
    from ocsight.store.locate import cache_home

    try:
        with os.scandir(cache_home() / "ocsight") as entries:
            return not any(e.name.startswith("index-") and e.name.endswith(".sqlite") for e in entries)
    except OSError:
        return True  # no cache directory yet


def spawn_helper() -> subprocess.Popen:
    """A genai-prices helper process (`python -m ocsight.genai_lookup`), loading from now on."""
    return subprocess.Popen(
        [sys.executable, "-m", "ocsight.genai_lookup"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )


def start_helper() -> None:
    global _helper
    if _helper is not None:
        return
    try:
        _helper = spawn_helper()
    except OSError:
        return
    atexit.register(_kill_unclaimed)


def take_helper() -> subprocess.Popen | None:
    """The helper started at launch, for `genai_lookup.Helper` to own (once)."""
    global _helper
    proc, _helper = _helper, None
    return proc


def _kill_unclaimed() -> None:
    proc = take_helper()
    if proc is not None:
        proc.kill()
        proc.wait()
