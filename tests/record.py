"""`make fixtures`: records the corpora in `tests/fixtures/corpora/` with the real OpenCode binaries.

Each corpus is what real OpenCode versions wrote while the mock model answered one script:

- `opencode-1.19`: OpenCode 1.19.5, a SQLite store, then forks (`opencode run --fork`): a fork of
  a session, a turn in it, a fork of that fork and a turn in it (the copies count once);
- `opencode-1.18`: OpenCode 1.18.33, a SQLite store;
- `opencode-1.1`: OpenCode 1.1.65, a legacy JSON store;
- `upgrade-1.1-1.15`: the 1.1.65 store, then OpenCode 1.15.13 started on it (copying it into its
  database, the JSON files staying behind), continuing a 1.1 session and adding new ones.

A corpus directory holds `store/` (the data directory: `opencode.db` and/or `storage/`),
`requests.jsonl` (the mock's log of every request, tagged with the OpenCode version that sent it),
`opencode.json` (the config OpenCode ran with: providers, models, prices) and `manifest.json`.
The `upgrade-1.1-1.15` store is written to the package's demo directory instead (with the config,
whose custom providers price it): it is the demo store `ocsight analyze --demo` shows, its paths
moved out of the recording sandbox (`/home/dev/webshop`, see `relocate`).

Usage: `python tests/record.py [CORPUS ...] [--out DIR]`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import harness  # noqa: E402
import mockmodel  # noqa: E402
from corpus import CORPORA as CORPORA_DIR  # noqa: E402
from corpus import DEMO_CORPUS, store_dir  # noqa: E402

# (prompt, model, project): one `opencode run` each; None is the configured default model.
SCRIPT = [
    ("hello there", None, "webshop"),
    ("[bash] run the greeting", "mock/mock-small", "webshop"),
    ("[fail] read a missing file", None, "webshop"),
    ("[reason] think it over", "freebie/free-model", "webshop"),
    ("[task] delegate to a subagent", None, "webshop"),
    ("[todo] plan the work", "mock/mock-small", "api-server"),
    ("[write] write a file", None, "webshop"),
    ("[error] break the provider", None, "api-server"),
    ("[long] talk at length", "freebie/free-model", "api-server"),
]
# One session over `opencode serve`'s HTTP API, two turns.
API_SCRIPT = [("[bash] through the API", "mock/mock-small"), ("[reason] a second turn", None)]
# After the upgrade: a 1.1 session continued by 1.15, then new sessions.
CONTINUED = ("[bash] after the upgrade", None, "webshop")
AFTER_UPGRADE = [("[reason] new after the upgrade", "mock/mock-small", "api-server"),
                 ("[task] delegate again", None, "webshop")]

# 1.19: forks of the session that asked FORKED, each followed by a turn: (prompt, model).
FORKED = SCRIPT[1][0]
FORKS = [("[reason] a turn in the fork", None), ("[todo] a turn in the fork of the fork", "mock/mock-small")]

CORPORA = {
    "opencode-1.19": ["1.19"],
    "opencode-1.18": ["1.18"],
    "opencode-1.1": ["1.1"],
    "upgrade-1.1-1.15": ["1.1", "1.15-upgrade"],
}


def turn(oc: harness.OpenCode, mock: mockmodel.MockModel, prompt: str, model: str | None, project: str,
         session: str | None = None) -> None:
    """One `opencode run`; run again if OpenCode crashed before asking the model anything (1.1's
    terminal UI library sometimes does at start), never after, which could store a turn twice."""
    for attempt in range(3):
        before = mock.requests
        try:
            oc.run(prompt, model, project=project, session=session)
            return
        except harness.HarnessError:
            if mock.requests != before or attempt == 2:
                raise
            print(f"    OpenCode crashed before the model was asked; again: {prompt!r}", flush=True)


def play_script(oc: harness.OpenCode, mock: mockmodel.MockModel) -> None:
    for prompt, model, project in SCRIPT:
        turn(oc, mock, prompt, model, project)
    with oc.serve() as server:
        session = server.new_session()
        for prompt, model in API_SCRIPT:
            server.prompt(session, prompt, model)


def play_forks(oc: harness.OpenCode) -> None:
    """A fork of the FORKED session with a turn, then a fork of that fork with a turn."""
    source = oc.session_of_prompt(FORKED)
    for prompt, model in FORKS:
        oc.run(prompt, model, session=source, project="webshop", fork=True)
        source = oc.session_of_prompt(prompt)


def first_session(store: Path) -> str:
    """The oldest root session of a legacy tree (where `hello there` was asked)."""
    sessions = [json.loads(p.read_text()) for p in (store / "storage" / "session").glob("*/*.json")]
    roots = sorted((s for s in sessions if not s.get("parentID")), key=lambda s: s["time"]["created"])
    return roots[0]["id"]


def relocate(store: Path, old: str, new: str) -> int:
    """Rewrites a path prefix in every string of a store (the database's text values and the legacy
    tree's JSON files), so that the demo's projects read `/home/dev/webshop`, not the recording
    sandbox's `/tmp/ocsight-record/home/dev/webshop`. Only strings change: every token count, cost
    and time stays as OpenCode wrote it. Returns the values and files changed."""
    changed = 0
    db = store / "opencode.db"
    if db.exists():
        con = sqlite3.connect(db)
        with con:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                "AND name NOT LIKE 'sqlite_%'")]
            for table in tables:
                for col in [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]:
                    changed += con.execute(
                        f'UPDATE "{table}" SET "{col}" = replace("{col}", ?, ?) '
                        f'WHERE typeof("{col}") = \'text\' AND instr("{col}", ?) > 0', (old, new, old)).rowcount
        con.execute("VACUUM")  # no copy of the old strings left in free pages
        con.close()
    for path in sorted((store / "storage").rglob("*.json")) if (store / "storage").is_dir() else []:
        text = path.read_text()
        if old in text:
            path.write_text(text.replace(old, new))
            changed += 1
    return changed


def record(name: str, out: Path) -> Path:
    target = out / name
    store = store_dir(name) if out == CORPORA_DIR else target / "store"
    # A fixed place, so that re-recording gives the same project paths (/tmp/ocsight-record/home/dev/...).
    root = Path(tempfile.gettempdir()) / "ocsight-record"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    try:
        log = root / "requests.jsonl"  # beside the sandbox's home, data and config directories
        log.touch()
        with mockmodel.MockModel(log) as mock:
            for phase in CORPORA[name]:
                era = phase.split("-")[0]
                version = harness.VERSIONS[era]
                mock.tag = version
                print(f"  {name}: OpenCode {version} ({phase})", flush=True)
                oc = harness.OpenCode(version, root, mock.url)
                if phase.endswith("-upgrade"):
                    prompt, model, project = CONTINUED
                    turn(oc, mock, prompt, model, project, session=first_session(oc.data_dir))
                    for prompt, model, project in AFTER_UPGRADE:
                        turn(oc, mock, prompt, model, project)
                else:
                    play_script(oc, mock)
                    if era == "1.19":
                        play_forks(oc)
            config = harness.config(mock.url)
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(store, ignore_errors=True)
        target.mkdir(parents=True)
        # A rollback-journal database: a read-only open of a WAL one needs to create its -shm file,
        # and an installed package directory may not be writable.
        oc.copy_store(store)
        shutil.copyfile(log, target / "requests.jsonl")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    config_text = json.dumps(config, indent=2).replace(mock.url, "http://127.0.0.1:PORT/v1")
    (target / "opencode.json").write_text(config_text + "\n")
    if name == DEMO_CORPUS:
        (store / "opencode.json").write_text(config_text + "\n")
        relocate(store, f"{root / 'home'}/", "/home/")
    manifest = {"corpus": name, "phases": [{"phase": p, "opencode": harness.VERSIONS[p.split("-")[0]]}
                                            for p in CORPORA[name]],
                "script": SCRIPT, "api_script": API_SCRIPT,
                "after_upgrade": [CONTINUED, *AFTER_UPGRADE] if "upgrade" in name else [],
                "forks": {"of": FORKED, "turns": FORKS} if "1.19" in CORPORA[name] else {}}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description="Re-record the OpenCode corpora with the real binaries.")
    ap.add_argument("corpora", nargs="*", metavar="CORPUS", help=f"some of {', '.join(CORPORA)} (default: all)")
    ap.add_argument("--out", type=Path, default=CORPORA_DIR)
    a = ap.parse_args()
    unknown = set(a.corpora) - set(CORPORA)
    if unknown:
        ap.error(f"unknown corpus: {', '.join(sorted(unknown))}")
    for name in a.corpora or CORPORA:
        print(f"recording {name} ...", flush=True)
        print(f"  -> {record(name, a.out)}", flush=True)


if __name__ == "__main__":
    main()
