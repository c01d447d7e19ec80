"""Runs one command; reports its wall time and the peak memory of its whole process tree.

    python -S treerun.py FD COMMAND [ARG...]

writes one JSON object to file descriptor FD once the command and every process it left behind
have ended: {"exit": exit code of COMMAND, "seconds": its wall time, "peak_mb": the largest peak
resident memory of any one process of the tree, "cpu_s": their user + system time, "stragglers":
how many processes outlived COMMAND}.

Peak memory is `getrusage(RUSAGE_CHILDREN).ru_maxrss`: on Linux, the largest `ru_maxrss` of the
terminated children this process waited for, each of which already holds the largest of its own
waited-for descendants (a process's `cmaxrss` is folded into what its parent sees when it is
reaped). So worker processes count as long as someone waits for them; and this process makes
itself a child subreaper (`PR_SET_CHILD_SUBREAPER`), so a descendant whose parent ended without
waiting for it (a forkserver, a resource tracker, a helper left running) is reparented here, waited
for, and counts too. It is the largest single process, not the sum of processes alive together.

The time is taken here, around the command alone: from just before it is spawned to its own exit
(not its stragglers'), so this interpreter's start-up is not in it. One floor remains: the spawned
child starts in this process's memory (vfork, then exec), and Linux carries that memory's peak
into the child's `ru_maxrss`; hence `-S` and few imports (`floor()` in bench.py measures it with
`true`; about 10 MB, far below anything measured).
"""

import os
import sys
import time

STRAGGLER_WAIT_S = 10.0


def _become_subreaper() -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _children() -> list[int]:
    pids: list[int] = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return pids


def _reap_stragglers() -> int:
    """Waits for the processes the command left behind (adopted here); kills any still running
    after STRAGGLER_WAIT_S. Returns how many there were."""
    seen: set[int] = set()
    deadline = time.monotonic() + STRAGGLER_WAIT_S
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return len(seen)
        if pid:
            seen.add(pid)
            continue
        alive = _children()
        seen.update(alive)
        if time.monotonic() > deadline:
            for p in alive:
                try:
                    os.kill(p, 9)
                except ProcessLookupError:
                    pass
        time.sleep(0.005)


def main() -> None:
    fd, cmd = int(sys.argv[1]), sys.argv[2:]
    os.set_inheritable(fd, False)
    subreaper = _become_subreaper()
    import resource  # before the clock starts, as everything this process needs

    started = time.perf_counter()
    pid = os.posix_spawnp(cmd[0], cmd, os.environ)
    _pid, status = os.waitpid(pid, 0)
    seconds = time.perf_counter() - started
    stragglers = _reap_stragglers()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = (f'{{"exit": {os.waitstatus_to_exitcode(status)}, "seconds": {seconds!r}, '
              f'"peak_kb": {ru.ru_maxrss}, "cpu_s": {ru.ru_utime + ru.ru_stime!r}, '
              f'"stragglers": {stragglers}, "subreaper": {str(subreaper).lower()}}}')
    os.write(fd, report.encode())
    os.close(fd)


if __name__ == "__main__":
    main()
