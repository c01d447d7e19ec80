"""A team's fleet through one collector: N `ocsight watch --once --backfill` processes at once, each
one developer (its own user, host, HOME and generated OpenCode store), into the real collector rotel
(the one collector that runs here), which forwards to a local OTLP receiver.

    python bench/bench_fleet.py [--sidecars 10] [--sessions 150] [--step 30] [--batch-spans 2048]

Sidecar i follows a store of `sessions + i * step` sessions. Printed, and kept in
bench/out/results-fleet-BATCH.json:
- spans per second through rotel: every span the receiver got, over the time from the sidecars'
  launch to the last span's arrival (start-up and index builds included), and over the arrival
  window alone (first span to last);
- each sidecar's wall time and peak resident memory (`treerun.py`: the largest process of its tree).

rotel sends at most `--batch-spans` spans a request, as the stack's collector does
(deploy/otelcol/config.yaml); `--batch-spans 0` keeps rotel's default of 8,192, whose requests of
ocsight's spans are over the 4 MiB the receiver (gRPC's default) takes: they are lost, and the
figures say how many.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import bench  # noqa: E402

import storegen  # noqa: E402
from otlp_receiver import Receiver  # noqa: E402
from rotel_process import TEAM_BATCH_SPANS, start_rotel  # noqa: E402

OUT = bench.OUT / "fleet"


def stores(sidecars: int, sessions: int, step: int) -> list[Path]:
    """The developers' stores, generated once per shape (in a child process: see `generate`)."""
    stamp = OUT / "stores.json"
    shape = {"sidecars": sidecars, "sessions": sessions, "step": step}
    paths = [OUT / f"store-{i}" for i in range(sidecars)]
    if not (stamp.exists() and json.loads(stamp.read_text()) == shape):
        shutil.rmtree(OUT, ignore_errors=True)
        subprocess.run([sys.executable, __file__, "--generate-only", "--sidecars", str(sidecars), "--sessions",
                        str(sessions), "--step", str(step)], check=True)
        stamp.write_text(json.dumps(shape))
    return paths


def generate(sidecars: int, sessions: int, step: int) -> None:
    """Run as its own process: a sidecar started from a process holding a plan would count that
    process's memory in its peak (Linux carries a child's pre-exec peak into it)."""
    for i in range(sidecars):
        store = OUT / f"store-{i}"
        store.mkdir(parents=True)
        storegen.write_sqlite(storegen.plan_store(seed=4000 + i, sessions=sessions + i * step, projects=5),
                              store / "opencode.db")


def run(sidecars: int, sessions: int, step: int, batch_spans: int | None) -> dict:
    paths = stores(sidecars, sessions, step)
    receiver = Receiver()
    collector = start_rotel(receiver.start_grpc(), OUT, batch_spans)
    endpoint = f"http://127.0.0.1:{collector.ports['http/protobuf']}"
    envs = []
    for i in range(sidecars):
        home = OUT / f"env-{i}"
        shutil.rmtree(home, ignore_errors=True)
        envs.append(bench.isolated_env(home) | {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "TZ": "UTC",
                                                "OCSIGHT_USER_NAME": f"dev{i}", "OCSIGHT_HOST_NAME": f"laptop-{i}"})
    try:
        started = time.time()
        with ThreadPoolExecutor(sidecars) as pool:
            reports = list(pool.map(lambda i: bench.measure(
                [bench.ocsight(), "watch", "--once", "--backfill", "--data-dir", str(paths[i])], envs[i]),
                range(sidecars)))
        expected = sum(_acknowledged(Path(env["XDG_STATE_HOME"])) for env in envs)
        deadline, quiet_since, seen = time.time() + 60, time.time(), -1
        while len(receiver.arrived) < expected and time.time() < deadline and time.time() - quiet_since < 10:
            if len(receiver.arrived) != seen:  # a lost batch never comes: stop once nothing has come for a while
                quiet_since, seen = time.time(), len(receiver.arrived)
            time.sleep(0.05)
        arrivals = sorted(receiver.arrived.values())
    finally:
        collector.stop()
        receiver.stop()
    spans = len(arrivals)
    return {
        "sidecars": sidecars, "batch_spans": batch_spans or 8192, "spans": spans, "expected_spans": expected,
        "seconds_to_last_span": arrivals[-1] - started, "arrival_window_s": arrivals[-1] - arrivals[0],
        "spans_per_s": spans / (arrivals[-1] - started),
        "spans_per_s_arriving": spans / max(1e-9, arrivals[-1] - arrivals[0]),
        "per_sidecar": [{"user": f"dev{i}", "sessions": sessions + i * step, "seconds": round(r["seconds"], 2),
                         "peak_mb": r["peak_kb"] // 1024} for i, r in enumerate(reports)],
    }


def _acknowledged(state: Path) -> int:
    """The spans a sidecar's checkpoint marks as acknowledged by rotel."""
    import sqlite3

    (path,) = (state / "ocsight").glob("watch-*.sqlite")
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT count(*) FROM exported").fetchone()[0]
    finally:
        con.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sidecars", type=int, default=10)
    ap.add_argument("--sessions", type=int, default=150)
    ap.add_argument("--step", type=int, default=30)
    ap.add_argument("--batch-spans", type=int, default=TEAM_BATCH_SPANS)
    ap.add_argument("--generate-only", action="store_true")
    a = ap.parse_args()
    if a.generate_only:
        generate(a.sidecars, a.sessions, a.step)
        return
    r = run(a.sidecars, a.sessions, a.step, a.batch_spans or None)
    peaks = [s["peak_mb"] for s in r["per_sidecar"]]
    print(f"\nfleet of {r['sidecars']} sidecars through rotel ({r['batch_spans']:,} spans a request at most): "
          f"{r['spans']:,} of {r['expected_spans']:,} spans acknowledged to the sidecars arrived, "
          f"last at the receiver {r['seconds_to_last_span']:.2f} s after launch = {r['spans_per_s']:,.0f} spans/s "
          f"({r['spans_per_s_arriving']:,.0f} spans/s over the {r['arrival_window_s']:.2f} s they arrived in)")
    print(f"peak memory per sidecar: {min(peaks)} to {max(peaks)} MB")
    for s in r["per_sidecar"]:
        print(f"  {s['user']}: {s['sessions']} sessions, {s['seconds']:.2f} s, peak {s['peak_mb']} MB")
    (bench.OUT / f"results-fleet-{r['batch_spans']}.json").write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
