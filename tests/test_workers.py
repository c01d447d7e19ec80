"""A large read as several stagings in processes of their own gives exactly what one staging gives."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

import storegen
from conftest import write_store
from ocsight.errors import OcsightError
from ocsight.filters import Filters
from ocsight.index import Index
from ocsight.index import refresh as refresh_module
from ocsight.pricing.catalogue import Catalogue
from ocsight.reports import documents
from ocsight.sources import locate, workers


@pytest.fixture
def mixed(tmp_path: Path, models_json) -> Path:
    """A database and a legacy tree holding some of the same sessions, of every era, with
    subagents, errors, a malformed message and a malformed part."""
    plan = storegen.plan_store(seed=23, sessions=60, eras=tuple(storegen.ERAS), subagent_share=0.3)
    root = write_store(plan, tmp_path / "s", "db")
    storegen.write_legacy(plan, root / "storage", {s["id"] for s in plan.sessions[::3]})
    con = sqlite3.connect(root / "opencode.db")
    con.execute("UPDATE message SET data = '{\"role\": \"assist' WHERE rowid = 40")
    con.execute("UPDATE part SET data = '{\"type\":\"tool\",' WHERE rowid = 77")
    con.commit()
    con.close()
    return root


def everything(root: Path, monkeypatch: pytest.MonkeyPatch, workers_: int) -> dict:
    monkeypatch.setattr(refresh_module, "MESSAGES_PER_WORKER", 1)
    with Index.open(locate.locate((str(root),)), use_cache=False, workers=workers_) as idx:
        idx.refresh(Catalogue())
        doc = {mode: documents.stats_json(idx, Filters(), mode) for mode in ("auto", "calculate")}
        doc["sessions"] = documents.session_trees(idx.reader.sessions(Filters(), "auto"))
    return json.loads(json.dumps(doc))


@pytest.mark.parametrize("processes", [2, 3])
def test_a_read_split_over_processes_gives_what_one_process_gives(mixed: Path, monkeypatch, processes: int):
    one = everything(mixed, monkeypatch, 1)
    split = everything(mixed, monkeypatch, processes)
    assert split == one
    assert one["auto"]["source"]["skipped"]["total"] >= 2  # the malformed rows are counted either way


def test_the_split_is_into_ranges_of_sessions_each_staged_once(mixed: Path, monkeypatch):
    jobs: list = []
    read = workers.read

    def watched(js, prices):
        jobs.extend(js)
        return read(js, prices)

    monkeypatch.setattr(workers, "read", watched)
    everything(mixed, monkeypatch, 3)
    scopes = [j.scope for j in jobs]
    assert len(scopes) == 3 and scopes[0].low is None and scopes[-1].high is None
    assert all(a.high == b.low for a, b in zip(scopes, scopes[1:]))


def test_a_reader_process_that_fails_is_a_one_line_error(mixed: Path, monkeypatch):
    monkeypatch.setattr(workers.Child, "__init__", _failing_child)
    with pytest.raises(OcsightError, match="a reader process failed"):
        everything(mixed, monkeypatch, 2)


def _failing_child(self: workers.Child, job: object) -> None:
    import subprocess
    import sys

    self.proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit('boom')"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
