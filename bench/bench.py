"""`make bench`: ocsight against ccusage on a large generated OpenCode store.

1. Installs `opencode-linux-x64@1.18.33` and `ccusage@20.0.24` from npm (under ~/.cache/ocsight-bench).
2. Creates an empty database with the real binary (`opencode db path` in an empty data directory),
   so the schema is OpenCode 1.18's own, and fills it with 3,000 sessions (~45,000 assistant messages
   and their parts); writes the oldest sessions again as a ~100,000-file legacy JSON tree, as an
   upgraded machine keeps them.
3. Times, alternating, `ccusage opencode daily --json --offline` and `ocsight stats --json` on that
   store: ocsight cold (no index) and warm (repeated run), with each process's peak memory; then the
   start-up time of `ocsight --help`, and the same comparison on the database alone and on the
   JSON tree alone, for reference.

Wall times are medians; figures and target verdicts are printed at the end.
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
OPENCODE_PKG, CCUSAGE_PKG = "opencode-linux-x64@1.18.33", "ccusage@20.0.24"
SESSIONS, LEGACY_SHARE = 3000, 0.41  # the oldest sessions, written by OpenCode 1.1: ~100,000 JSON files


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


def build_stores(opencode: Path, force: bool) -> dict[str, Path]:
    stores = {"combined": OUT / "store-combined", "db-only": OUT / "store-db", "json-only": OUT / "store-json"}
    stamp = OUT / "stores.json"
    if stamp.exists() and not force and all(p.exists() for p in stores.values()):
        return stores
    shutil.rmtree(OUT, ignore_errors=True)
    print("generating the stores ...", flush=True)
    legacy_n = int(SESSIONS * LEGACY_SHARE)
    plan = storegen.plan_store(
        seed=2026, sessions=SESSIONS, turns=(6, 11), projects=25,
        era_of=lambda n: "1.1" if n < legacy_n else ("1.15" if n % 3 == 0 else "1.18"),
    )
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
            "parts": len(plan.parts), "legacy_files": files, "db_mb": round(db.stat().st_size / 1e6, 1)}
    stamp.write_text(json.dumps(info))
    return stores


def run(cmd: list[str], env: dict) -> tuple[float, int, bytes]:
    """Wall seconds, peak RSS in MB and stdout of one process."""
    started = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = p.stdout.read()
    err = p.stderr.read()
    _pid, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {err.decode()[-500:]}")
    return wall, usage.ru_maxrss // 1024, out


def compare(name: str, store: Path, ccusage: Path, native: Path, rounds: int) -> dict:
    models = OUT / "models.json"
    storegen.write_models_json(models)
    base_env = isolated_env(OUT / f"env-{name}")
    cc_env = base_env | {"OPENCODE_DATA_DIR": str(store)}
    times: dict[str, list[float]] = {"ccusage": [], "native": [], "cold": [], "warm": []}
    mem: dict[str, list[int]] = {"ccusage": [], "native": [], "cold": [], "warm": []}
    for r in range(rounds):
        cache = OUT / f"cache-{name}-{r}"
        shutil.rmtree(cache, ignore_errors=True)
        (cache / "opencode").mkdir(parents=True)
        shutil.copyfile(models, cache / "opencode" / "models.json")  # OpenCode's price cache, as users have it
        oc_env = base_env | {"XDG_CACHE_HOME": str(cache)}
        cmd = [ocsight(), "stats", "--json", "--data-dir", str(store)]
        order = ["ccusage", "native", "cold", "warm"] if r % 2 == 0 else ["cold", "warm", "native", "ccusage"]
        for what in order:
            if what in ("ccusage", "native"):
                exe = ccusage if what == "ccusage" else native
                t, m, _ = run([str(exe), "opencode", "daily", "--json", "--offline"], cc_env)
            else:
                t, m, _ = run(cmd, oc_env)
            times[what].append(t)
            mem[what].append(m)
        shutil.rmtree(cache, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"store": name, "seconds": med, "rounds": times, "peak_mb": {k: max(v) for k, v in mem.items()},
            "cold_ratio": med["cold"] / med["ccusage"], "warm_ratio": med["warm"] / med["ccusage"],
            "cold_ratio_native": med["cold"] / med["native"], "warm_ratio_native": med["warm"] / med["native"]}


def startup(rounds: int = 15) -> float:
    env = isolated_env(OUT / "env-help")
    run([ocsight(), "--help"], env)
    return statistics.median(run([ocsight(), "--help"], env)[0] for _ in range(rounds))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--regenerate", action="store_true", help="write the stores again")
    ap.add_argument("--quick", action="store_true", help="only the combined store")
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate_only:
        build_stores(npm_install()[0], args.regenerate)
        return
    opencode, ccusage, native = npm_install()
    # Generated in a child process: a forked child's peak RSS would otherwise include this
    # process's memory, and the figures below would be wrong.
    subprocess.run([sys.executable, __file__, "--generate-only"] + (["--regenerate"] if args.regenerate else []),
                   check=True)
    stores = build_stores(opencode, False)
    # ocsight's bytecode, as any run after its first finds it (PYTHONDONTWRITEBYTECODE would
    # otherwise have every timed run compile the package again)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "exporter")], check=True)
    info = json.loads((OUT / "stores.json").read_text())
    print(f"store: {info}")
    results = [compare("combined", stores["combined"], ccusage, native, args.rounds)]
    if not args.quick:
        results += [compare(n, stores[n], ccusage, native, args.rounds) for n in ("db-only", "json-only")]
    help_s = startup()
    print()
    print("ccusage = the `ccusage` command npm installs (node wrapper + native binary); native = the binary alone")
    print(f"{'store':<10} {'ccusage s':>9} {'native s':>9} {'cold s':>7} {'warm s':>7} {'cold/cc':>8} {'warm/cc':>8}"
          f" {'cold/nat':>9} {'warm/nat':>9} {'cc MB':>6} {'cold MB':>8} {'warm MB':>8}")
    for r in results:
        s, m = r["seconds"], r["peak_mb"]
        print(f"{r['store']:<10} {s['ccusage']:>9.3f} {s['native']:>9.3f} {s['cold']:>7.3f} {s['warm']:>7.3f}"
              f" {r['cold_ratio']:>8.2f} {r['warm_ratio']:>8.2f} {r['cold_ratio_native']:>9.2f}"
              f" {r['warm_ratio_native']:>9.2f} {m['ccusage']:>6} {m['cold']:>8} {m['warm']:>8}")
    print(f"\nocsight --help: {help_s * 1000:.0f} ms")
    main_r = results[0]
    checks = [
        ("first run <= 1.0x ccusage", main_r["cold_ratio"] <= 1.0),
        ("repeated run <= 0.5x ccusage", main_r["warm_ratio"] <= 0.5),
        ("peak memory <= 120 MB", max(main_r["peak_mb"]["cold"], main_r["peak_mb"]["warm"]) <= 120),
        ("ocsight --help <= 150 ms", help_s <= 0.150),
    ]
    print()
    for label, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {label}")
    (OUT / "results.json").write_text(json.dumps({"store": info, "results": results, "help_seconds": help_s},
                                                 indent=2))


if __name__ == "__main__":
    main()
