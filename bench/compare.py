"""First runs of this working tree against another revision, alternating, on a `make bench` store.

Run `make bench` once first (it generates the stores), then e.g. `python bench/compare.py HEAD~1`.
On a machine whose speed drifts, paired alternating runs tell a change's effect where two separate
benchmark runs cannot. Also checks that both versions print the same `stats --json`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench  # noqa: E402

OUT = bench.OUT


def first_run(package_root: Path, store: Path, cache: Path) -> tuple[float, int, dict, float]:
    """Wall seconds, peak RSS in MB (the largest process of its tree), the parsed output and CPU
    seconds (the tree's) of one `ocsight stats --json` with no index (`bench.measure`)."""
    shutil.rmtree(cache / "ocsight", ignore_errors=True)
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(package_root)}
    rep = bench.measure([sys.executable, "-m", "ocsight", "stats", "--json", "--data-dir", str(store)], env)
    doc = json.loads(rep["stdout"])
    return (rep["seconds"], rep["peak_kb"] // 1024, {k: v for k, v in doc.items() if k not in ("source", "generated_at")},
            rep["cpu_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("revision", help="the git revision to compare with")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--store", default="db", choices=("db", "db30k", "combined", "json"),
                    help="db: 3,000 sessions (default); db30k: 30,000 sessions; combined: db + legacy tree")
    args = ap.parse_args()
    store = OUT / f"store-{args.store}"
    if not store.exists():
        raise SystemExit(f"no {store}: run `make bench` first")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.revision, "exporter"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "x", "-C", str(base)], input=archive, check=True)
        cache = Path(tmp) / "cache"
        (cache / "opencode").mkdir(parents=True)
        shutil.copyfile(OUT / "models.json", cache / "opencode" / "models.json")
        trees = {args.revision: base / "exporter", "working tree": ROOT / "exporter"}
        for tree in trees.values():  # as every run after a package's first import would find them
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree)], check=True)
        runs: dict[str, list[tuple[float, int, float]]] = {name: [] for name in trees}
        outputs = []
        for r in range(args.rounds):
            for name in list(trees)[:: 1 if r % 2 == 0 else -1]:
                wall, mb, doc, cpu = first_run(trees[name], store, cache)
                runs[name].append((wall, mb, cpu))
                outputs.append(doc)
    for name, rs in runs.items():
        print(f"{name:>14}: first run {statistics.median(r[0] for r in rs):.3f} s (median of {len(rs)}), "
              f"peak {max(r[1] for r in rs)} MB, CPU {statistics.median(r[2] for r in rs):.3f} s")
    diffs = [b[0] - a[0] for a, b in zip(*runs.values())]
    cpu_diffs = [b[2] - a[2] for a, b in zip(*runs.values())]
    q1, _q2, q3 = statistics.quantiles(diffs, n=4) if len(diffs) > 1 else (diffs[0],) * 3
    print(f"paired difference (working tree - {args.revision}): {statistics.median(diffs):+.3f} s (median; "
          f"quartiles {q1:+.3f} .. {q3:+.3f}), CPU {statistics.median(cpu_diffs):+.3f} s")
    print("same stats --json:", all(doc == outputs[0] for doc in outputs))


if __name__ == "__main__":
    main()
