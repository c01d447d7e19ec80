"""`make bench`: ocsight against ccusage on large generated OpenCode stores (the targets of issue 25).

1. Installs `opencode-linux-x64@1.18.33` and `ccusage@20.0.24` from npm (under ~/.cache/ocsight-bench).
2. Creates empty databases with the real binary (`opencode db path` in an empty data directory), so
   the schema is OpenCode 1.18's own, and fills them:
   - db-only: 3,000 sessions (~46,000 assistant messages and their parts);
   - db-30k: 30,000 sessions (~460,000 assistant messages), written 1,000 sessions at a time
     (`storegen.write_sqlite_in_chunks`) so the generator's memory stays that of one chunk;
   - combined: the 3,000-session database beside a ~100,000-file legacy JSON tree holding its
     oldest sessions again, as an upgraded machine keeps them; json-only: that tree alone.
   Stores are generated once and kept in bench/out (`--regenerate` writes them again).
3. Times, alternating within each round, `ccusage opencode daily --json --offline` (the command npm
   installs, and its native binary alone) and `ocsight stats --json`: a first run (a fresh HOME and
   XDG directories, `$XDG_CACHE_HOME` empty but for OpenCode's own `opencode/models.json`, as users
   have it) and a repeated run (the index that first run left, the store unchanged); then the
   start-up time of `ocsight --help`.

Every timed command runs under `treerun.py`, which times the command itself (not its own start-up)
and reports the largest peak resident memory of any process of the command's tree: worker
processes, and processes left behind, included.

Wall times are medians of the rounds; ratios are ocsight's median over ccusage's. Figures and the
targets' verdicts are printed at the end; bench/out/results.json keeps every round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import storegen  # noqa: E402

NPM_DIR = Path(os.environ.get("OCSIGHT_BENCH_CACHE", Path.home() / ".cache" / "ocsight-bench")) / "npm"
OUT = ROOT / "bench" / "out"
TREERUN = ROOT / "bench" / "treerun.py"
OPENCODE_PKG, CCUSAGE_PKG = "opencode-linux-x64@1.18.33", "ccusage@20.0.24"
SESSIONS, LEGACY_SHARE = 3000, 0.41  # the oldest sessions, written by OpenCode 1.1: ~100,000 JSON files
BIG_SESSIONS, BIG_CHUNK, BIG_CHUNK_DAYS = 30_000, 1000, 9  # ~12 days a chunk: about a year in all
BIG = "db-30k"
# Issue 25: per store, the first run's and the repeated run's wall time as a share of ccusage's,
# and the peak memory of any ocsight process (workers included), in MB.
TARGETS = {"db-only": (1.25, 0.25, 120), BIG: (1.0, 0.15, 300)}
HELP_TARGET_S = 0.150
MIN_ROUNDS = 9


def era_of(sessions: int):
    """The era mix of the generated stores: the oldest 41% written by OpenCode 1.1 (migrated into
    the database), the rest by 1.15 and 1.18."""
    legacy_n = int(sessions * LEGACY_SHARE)
    return lambda n: "1.1" if n < legacy_n else ("1.15" if n % 3 == 0 else "1.18")


def npm_install() -> tuple[Path, Path, Path]:
    """The OpenCode binary, the `ccusage` command npm installs, and the native binary behind it."""
    opencode = NPM_DIR / "node_modules" / "opencode-linux-x64" / "bin" / "opencode"
    ccusage = NPM_DIR / "node_modules" / ".bin" / "ccusage"
    native = NPM_DIR / "node_modules" / "@ccusage" / "ccusage-linux-x64" / "bin" / "ccusage"
    if not (opencode.exists() and ccusage.exists() and native.exists()):
        NPM_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", str(NPM_DIR), "--no-audit", "--no-fund", "--silent",
                        OPENCODE_PKG, CCUSAGE_PKG], check=True)
    native.chmod(0o755)  # the JS wrapper sets the bit on first use; we also time the binary directly
    return opencode, ccusage, native


def ocsight() -> str:
    """The `ocsight` command installed beside this Python."""
    return str(Path(sys.executable).with_name("ocsight"))


def isolated_env(base: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCODE_", "XDG_", "OCSIGHT_"))}
    for var, sub in (("HOME", "home"), ("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"),
                     ("XDG_CACHE_HOME", "cache"), ("XDG_STATE_HOME", "state")):
        (base / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(base / sub)
    return env


def empty_db_from_binary(opencode: Path, target: Path) -> None:
    """OpenCode 1.18 creates its database, with every migration applied, on first start."""
    scratch = OUT / "opencode-empty"
    shutil.rmtree(scratch, ignore_errors=True)
    env = isolated_env(scratch) | {
        "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_SHARE": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1", "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    }
    path = subprocess.run([str(opencode), "db", "path"], env=env, capture_output=True, text=True, check=True,
                          timeout=120).stdout.strip()
    target.parent.mkdir(parents=True, exist_ok=True)
    import sqlite3

    con = sqlite3.connect(path)  # fold the WAL in, so the copy is whole
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    shutil.copyfile(path, target)


STORES = {"combined": OUT / "store-combined", "db-only": OUT / "store-db", "json-only": OUT / "store-json"}
BIG_STORE, BIG_STAMP = OUT / "store-db30k", OUT / "stores-30k.json"


def build_stores(opencode: Path, force: bool) -> dict[str, Path]:
    """The 3,000-session stores (combined, db-only, json-only), generated once."""
    stores = dict(STORES)
    stamp = OUT / "stores.json"
    if stamp.exists() and not force and all(p.exists() for p in stores.values()):
        return stores
    for p in [*stores.values(), stamp]:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    print("generating the 3,000-session stores ...", flush=True)
    started = time.perf_counter()
    plan = storegen.plan_store(seed=2026, sessions=SESSIONS, turns=(6, 11), projects=25, era_of=era_of(SESSIONS))
    legacy_ids = {s["id"] for s in plan.sessions if s["version"] == storegen.ERAS["1.1"]}
    db = stores["combined"] / "opencode.db"
    empty_db_from_binary(opencode, db)
    storegen.write_sqlite(plan, db)
    files = storegen.write_legacy(plan, stores["combined"] / "storage", legacy_ids)
    stores["db-only"].mkdir(parents=True)
    shutil.copyfile(db, stores["db-only"] / "opencode.db")
    shutil.copytree(stores["combined"] / "storage", stores["json-only"] / "storage")
    assistant = sum(m["role"] == "assistant" for m in plan.messages)
    info = {"sessions": len(plan.sessions), "assistant_messages": assistant, "messages": len(plan.messages),
            "parts": len(plan.parts), "legacy_files": files, "db_mb": round(db.stat().st_size / 1e6, 1),
            "generate_seconds": round(time.perf_counter() - started, 1)}
    stamp.write_text(json.dumps(info))
    return stores


def build_big_store(opencode: Path, force: bool) -> Path:
    """The 30,000-session database-only store, generated once, a chunk of sessions at a time; a
    store whose generation was cut short is never taken (it is written beside, then renamed)."""
    if BIG_STAMP.exists() and not force and (BIG_STORE / "opencode.db").exists():
        return BIG_STORE
    BIG_STAMP.unlink(missing_ok=True)
    shutil.rmtree(BIG_STORE, ignore_errors=True)
    print(f"generating the {BIG_SESSIONS:,}-session database, {BIG_CHUNK:,} sessions at a time ...", flush=True)
    started = time.perf_counter()
    scratch = OUT / "store-db30k.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    db = scratch / "opencode.db"
    empty_db_from_binary(opencode, db)
    counts = storegen.write_sqlite_in_chunks(db, BIG_SESSIONS, chunk=BIG_CHUNK, seed=30_000, turns=(6, 11),
                                             projects=25, days=BIG_CHUNK_DAYS, era_of=era_of(BIG_SESSIONS))
    import sqlite3

    con = sqlite3.connect(db)  # one whole file, as the other stores are
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    scratch.rename(BIG_STORE)
    info = {**counts, "db_mb": round((BIG_STORE / "opencode.db").stat().st_size / 1e6, 1),
            "chunk": BIG_CHUNK, "generate_seconds": round(time.perf_counter() - started, 1)}
    BIG_STAMP.write_text(json.dumps(info))
    return BIG_STORE


def measure(cmd: list[str], env: dict) -> dict:
    """One command under `treerun.py`: its exit code, wall seconds (timed around the command alone),
    the largest peak RSS of any process of its tree (`peak_kb`), the tree's CPU seconds, how many
    processes outlived it, and its stdout."""
    r, w = os.pipe()
    try:
        p = subprocess.Popen([sys.executable, "-S", str(TREERUN), str(w), *cmd], env=env, pass_fds=(w,),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.close(w)
        w = -1
        out, err = p.communicate()
        report = b""
        while chunk := os.read(r, 65536):
            report += chunk
    finally:
        os.close(r)
        if w != -1:
            os.close(w)
    if p.returncode != 0 or not report:
        raise SystemExit(f"treerun failed on {' '.join(cmd)}: {err.decode()[-500:]}")
    rep = json.loads(report)
    if rep["exit"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {err.decode()[-500:]}")
    return rep | {"stdout": out}


def run(cmd: list[str], env: dict) -> tuple[float, int, bytes]:
    """Wall seconds, peak RSS in MB (the largest process of the tree) and stdout of one command."""
    rep = measure(cmd, env)
    return rep["seconds"], rep["peak_kb"] // 1024, rep["stdout"]


# A parent that stays small and forks a child allocating 200 MB; with "orphan", the parent exits at
# once and the child allocates after it, waited for by nobody but the subreaper.
_PROBE = """
import os, sys, time
pid = os.fork()
if pid == 0:
    if sys.argv[1] == "orphan":
        time.sleep(0.2)
    b = bytearray(200 << 20)
    for i in range(0, len(b), 4096):
        b[i] = 1
    time.sleep(0.1)
    os._exit(0)
if sys.argv[1] == "waited":
    os.waitpid(pid, 0)
"""


def check_method() -> dict:
    """Shows that the peak is the tree's: a 200 MB child of a small parent is seen (waited for, and
    left behind), and what the wrapper itself adds (its floor: `true`)."""
    env = dict(os.environ)
    floor = measure(["true"], env)["peak_kb"] // 1024
    waited = measure([sys.executable, "-S", "-c", _PROBE, "waited"], env)
    orphan = measure([sys.executable, "-S", "-c", _PROBE, "orphan"], env)
    res = {"floor_mb": floor, "waited_child_mb": waited["peak_kb"] // 1024,
           "orphaned_child_mb": orphan["peak_kb"] // 1024, "orphan_stragglers": orphan["stragglers"]}
    if not (res["waited_child_mb"] >= 200 and res["orphaned_child_mb"] >= 200):
        raise SystemExit(f"the peak memory of a process tree is not measured: {res}")
    return res


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def compare(name: str, store: Path, ccusage: Path, native: Path, rounds: int) -> dict:
    models = OUT / "models.json"
    storegen.write_models_json(models)
    cc_env = isolated_env(OUT / f"env-{name}") | {"OPENCODE_DATA_DIR": str(store)}
    kinds = ("ccusage", "native", "cold", "warm")
    per: dict[str, list[dict]] = {k: [] for k in kinds}
    base = OUT / f"run-{name}"
    print(f"{name}: {rounds} rounds ", end="", flush=True)
    for r in range(rounds):
        # A first run: fresh HOME and XDG directories; the cache holds only OpenCode's price cache.
        shutil.rmtree(base, ignore_errors=True)
        oc_env = isolated_env(base)
        cache = Path(oc_env["XDG_CACHE_HOME"])
        (cache / "opencode").mkdir(parents=True)
        shutil.copyfile(models, cache / "opencode" / "models.json")
        cmd = [ocsight(), "stats", "--json", "--data-dir", str(store)]
        order = list(kinds) if r % 2 == 0 else ["cold", "warm", "native", "ccusage"]
        for what in order:
            if what == "cold":
                left = sorted(str(p.relative_to(cache)) for p in cache.rglob("*"))
                assert left == ["opencode", "opencode/models.json"], left
            exe = {"ccusage": ccusage, "native": native}.get(what)
            rep = measure([str(exe), "opencode", "daily", "--json", "--offline"], cc_env) if exe else measure(cmd, oc_env)
            if what == "cold" and r == 0:
                json.loads(rep["stdout"])  # ocsight answered
            per[what].append({"seconds": rep["seconds"], "peak_mb": rep["peak_kb"] // 1024,
                              "cpu_s": rep["cpu_s"], "stragglers": rep["stragglers"]})
        print(".", end="", flush=True)
    print(flush=True)
    shutil.rmtree(base, ignore_errors=True)
    med = {k: _median([x["seconds"] for x in v]) for k, v in per.items()}
    paired = lambda k: _median([a["seconds"] / b["seconds"] for a, b in zip(per[k], per["ccusage"])])  # noqa: E731
    return {
        "store": name, "rounds": rounds, "seconds": med,
        "cpu_s": {k: _median([x["cpu_s"] for x in v]) for k, v in per.items()},
        "peak_mb": {k: max(x["peak_mb"] for x in v) for k, v in per.items()},
        "cold_ratio": med["cold"] / med["ccusage"], "warm_ratio": med["warm"] / med["ccusage"],
        "cold_ratio_native": med["cold"] / med["native"], "warm_ratio_native": med["warm"] / med["native"],
        "paired_cold_ratio": paired("cold"), "paired_warm_ratio": paired("warm"),
        "stragglers": {k: sum(x["stragglers"] for x in v) for k, v in per.items()},
        "each_round": per,
    }


def startup(rounds: int = 15) -> list[float]:
    env = isolated_env(OUT / "env-help")
    measure([ocsight(), "--help"], env)
    return [measure([ocsight(), "--help"], env)["seconds"] for _ in range(rounds)]


def _generate(which: str, force: bool) -> None:
    """In a child process: a forked child would otherwise start in this process's memory (the
    plan), and nothing generated is kept in the process that measures."""
    subprocess.run([sys.executable, __file__, "--generate-only", which] + (["--regenerate"] if force else []),
                   check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds on the 3,000-session stores (default 15; 5 with --quick)")
    ap.add_argument("--rounds-30k", type=int, default=9, help="rounds on the 30,000-session store (default 9)")
    ap.add_argument("--regenerate", action="store_true", help="write the stores again")
    ap.add_argument("--quick", action="store_true", help="only the 3,000-session database, 5 rounds")
    ap.add_argument("--generate-only", choices=("small", "big"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate_only:
        opencode = npm_install()[0]
        (build_stores if args.generate_only == "small" else build_big_store)(opencode, args.regenerate)
        return
    bench_started = time.perf_counter()
    rounds = args.rounds or (5 if args.quick else 15)
    opencode, ccusage, native = npm_install()
    _generate("small", args.regenerate)
    stores = build_stores(opencode, False)
    info = json.loads((OUT / "stores.json").read_text())
    print(f"3,000-session stores: {info}")
    if not args.quick:
        _generate("big", args.regenerate)
        stores[BIG] = build_big_store(opencode, False)
        big_info = json.loads(BIG_STAMP.read_text())
        print(f"30,000-session store: {big_info}")
    # ocsight's bytecode, as any run after its first finds it (PYTHONDONTWRITEBYTECODE would
    # otherwise have every timed run compile the package again)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "exporter")], check=True)
    method = check_method()
    print(f"peak memory method: a 200 MB child of a small parent is seen at {method['waited_child_mb']} MB "
          f"(waited for) and {method['orphaned_child_mb']} MB (left behind); the wrapper's floor is "
          f"{method['floor_mb']} MB")
    measured_started = time.perf_counter()
    plan = [("db-only", rounds)]
    if not args.quick:
        plan += [(BIG, args.rounds_30k), ("combined", rounds), ("json-only", rounds)]
    results = [compare(n, stores[n], ccusage, native, k) for n, k in plan]
    help_rounds = startup()
    help_s = _median(help_rounds)
    measured_s = time.perf_counter() - measured_started

    print()
    print("ccusage = the `ccusage` command npm installs (node wrapper + native binary); native = the binary alone;")
    print("first = ocsight on an empty cache, again = the repeated run; seconds are medians, ratios median/median;")
    print("MB = the largest peak RSS of any process of the command's tree, over all rounds")
    print(f"{'store':<10} {'rounds':>6} {'ccusage s':>9} {'native s':>9} {'first s':>8} {'again s':>8}"
          f" {'first/cc':>8} {'again/cc':>8} {'first/nat':>9} {'again/nat':>9} {'cc MB':>6} {'first MB':>8}"
          f" {'again MB':>8}")
    for r in results:
        s, m = r["seconds"], r["peak_mb"]
        print(f"{r['store']:<10} {r['rounds']:>6} {s['ccusage']:>9.3f} {s['native']:>9.3f} {s['cold']:>8.3f}"
              f" {s['warm']:>8.3f} {r['cold_ratio']:>8.2f} {r['warm_ratio']:>8.2f} {r['cold_ratio_native']:>9.2f}"
              f" {r['warm_ratio_native']:>9.2f} {m['ccusage']:>6} {m['cold']:>8} {m['warm']:>8}")
    if any(sum(r["stragglers"].values()) for r in results):
        print("processes that outlived their command:", {r["store"]: r["stragglers"] for r in results})
    print(f"\nocsight --help: {help_s * 1000:.0f} ms (median of {len(help_rounds)})")

    targets = []
    by_name = {r["store"]: r for r in results}
    for name, (first, again, mb) in TARGETS.items():
        r = by_name.get(name)
        if r is None:
            continue
        peak = max(r["peak_mb"]["cold"], r["peak_mb"]["warm"])
        sessions = f"{BIG_SESSIONS:,}" if name == BIG else f"{SESSIONS:,}"
        targets += [
            (f"{sessions} sessions: first run <= {first:g}x ccusage ({r['cold_ratio']:.2f}x)", r["cold_ratio"] <= first),
            (f"{sessions} sessions: repeated run <= {again:g}x ccusage ({r['warm_ratio']:.2f}x)",
             r["warm_ratio"] <= again),
            (f"{sessions} sessions: peak memory <= {mb} MB ({peak} MB)", peak <= mb),
        ]
    targets.append((f"ocsight --help <= {HELP_TARGET_S * 1000:.0f} ms ({help_s * 1000:.0f} ms)",
                    help_s <= HELP_TARGET_S))
    few = [f"{r['store']}: {r['rounds']}" for r in results if r["rounds"] < MIN_ROUNDS]
    print("\ntargets (issue 25; database-only stores)" + (f" -- fewer than {MIN_ROUNDS} rounds ({', '.join(few)}): "
                                                           "indicative only" if few else "") + ":")
    for label, ok in targets:
        print(f"  [{'PASS' if ok else 'FAIL'}] {label}")
    total_s = time.perf_counter() - bench_started
    print(f"\nbench.py took {total_s:.0f} s ({measured_s:.0f} s measuring)")
    for r in results:
        r.pop("stdout", None)
    (OUT / "results.json").write_text(json.dumps({
        "stores": {"3000": info, **({"30000": json.loads(BIG_STAMP.read_text())} if not args.quick else {})},
        "method": method, "results": results, "help_seconds": help_s, "help_rounds": help_rounds,
        "targets": [{"target": label, "pass": ok} for label, ok in targets],
        "seconds_total": total_s, "seconds_measuring": measured_s,
    }, indent=2))


if __name__ == "__main__":
    main()
