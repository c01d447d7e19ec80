"""A read of many sessions as several stagings at once: this process stages the first range, and a
child process each of the others (`python -m ocsight.sources.workers`). They share nothing: each
opens the sources itself, owns its range of sessions across every source and sums it into a
database file of its own, whose cube rows the index copies in; they simply concatenate.

Prices are the one thing they need from the caller, once they have staged: each says which models
its messages use, the caller resolves them all at once (its price catalogue loads meanwhile) and
answers, and each sums its range. Over a pipe, as pickles:

    caller -> child  ReadJob
    child -> caller  ("pairs", [(provider, model), ...])  or ("error", message, exit code)
    caller -> child  [PriceRow, ...]
    child -> caller  ("done", None)  or ("error", message, exit code)
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

from ocsight.errors import EXIT_INTERNAL, OcsightError
from ocsight.sources.staging import Pair, PriceRow, ReadJob, stage

Prices = Callable[[list[Pair]], list[PriceRow]]


class Child:
    """A staging in a child process."""

    def __init__(self, job: ReadJob) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "ocsight.sources.workers"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._send(job)

    def _send(self, obj: object) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
            self.proc.stdin.flush()
        except BrokenPipeError:
            self._receive()  # it ended: its answer says why

    def _receive(self) -> Any:
        assert self.proc.stdout is not None
        try:
            answer = pickle.load(self.proc.stdout)
        except (EOFError, pickle.UnpicklingError):
            self.proc.wait()
            err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
            last = err.splitlines()[-1] if err else f"exit code {self.proc.returncode}"
            raise OcsightError(f"a reader process failed: {last}", EXIT_INTERNAL) from None
        if answer[0] == "error":
            raise OcsightError(answer[1], answer[2])
        return answer[1]

    def pairs(self) -> list[Pair]:
        pairs: list[Pair] = self._receive()
        return pairs

    def summarise(self, prices: list[PriceRow]) -> None:
        self._send(prices)

    def wait(self) -> None:
        """Until its staging's database holds its sums."""
        self._receive()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def read(jobs: Sequence[ReadJob], prices: Prices) -> Iterator[str]:
    """Every job's staging database once it holds its sums (the first job's staged here, the others
    in child processes meanwhile), for the caller to copy in as each is ready."""
    children: list[Child] = []
    try:
        children = [Child(job) for job in jobs[1:]]  # they start while this process stages
        local = stage(jobs[0])
        try:
            pairs = set(local.model_pairs())
            for child in children:
                pairs.update(child.pairs())
            rows = prices(sorted(pairs))
            for child in children:
                child.summarise(rows)
            local.summarise(rows)
        finally:
            local.close()
        yield jobs[0].path
        for job, child in zip(jobs[1:], children):
            child.wait()
            yield job.path
    finally:
        for child in children:
            child.close()


def _serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    def answer(*obj: object) -> None:
        pickle.dump(obj, stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()

    try:
        job: ReadJob = pickle.load(stdin)
        staging = stage(job)
        try:
            answer("pairs", staging.model_pairs())
            staging.summarise(pickle.load(stdin))
        finally:
            staging.close()
        answer("done", None)
    except OcsightError as e:
        answer("error", str(e), e.exit_code)
    except EOFError:
        return  # the caller went away
    except Exception as e:  # noqa: BLE001 - reported to the caller, which fails with it
        answer("error", f"a reader process failed: {type(e).__name__}: {e}", EXIT_INTERNAL)


if __name__ == "__main__":
    _serve(sys.stdin.buffer, sys.stdout.buffer)
