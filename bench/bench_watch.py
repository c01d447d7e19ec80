"""`make bench`, sidecar part: `ocsight watch` against a local OTLP receiver on generated stores.

1. Backfill throughput: `ocsight watch --once --backfill` on the 3,000-session benchmark store
   (index built from scratch included); spans per second and peak memory.
2. Latency and memory while following a 10,000-session store: `ocsight watch` runs; a turn (a
   user message and its final answer, rows as OpenCode writes them) is written into the database
   every 0.3 s; latency is from the commit to the answer's span reaching the receiver.

3. Idle CPU on the 3,000-session store (issue 26): `ocsight watch` next to a turn cut off
   mid-stream and the `-wal`/`-shm` a killed writer left, and next to a running `opencode serve`;
   the sidecar's CPU time over 120 s (two metric exports) once its first cycle is over.
4. Stop time: SIGTERM to `ocsight watch --backfill` on the 3,000-session store with the receiver
   down, while it builds its index and while it backs off; seconds until the process ended.

Figures and target verdicts are printed at the end (p50 <= 250 ms, p95 <= 1 s, >= 10,000 spans/s,
<= 100 MB while following, idle CPU <= 1% of a core, stop <= 2 s).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import bench  # noqa: E402

import storegen  # noqa: E402
from ocsight.telemetry.spans import span_id  # noqa: E402
from otlp_receiver import Receiver  # noqa: E402

OUT = bench.OUT
FOLLOW_SESSIONS = 10_000
WRITES = 40


def env_for(name: str, port: int) -> dict:
    base = OUT / f"env-watch-{name}"
    shutil.rmtree(base, ignore_errors=True)
    return bench.isolated_env(base) | {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}


def backfill(store: Path) -> dict:
    receiver = Receiver()
    port = receiver.start_grpc()
    try:
        t, mb, _ = bench.run([bench.ocsight(), "watch", "--once", "--backfill", "--protocol", "grpc", "--data-dir",
                              str(store)], env_for("backfill", port))
        n = len(receiver.arrived)
    finally:
        receiver.stop()
    return {"spans": n, "seconds": t, "spans_per_s": n / t, "peak_mb": mb}


def big_store() -> Path:
    """Generated in a child process: a child forked from a process holding the plan would report
    that process's memory as its own peak."""
    store = OUT / "store-10k"
    if not (store / "opencode.db").exists():
        subprocess.run([sys.executable, __file__, "--generate-only"], check=True)
    return store


def generate_big_store() -> None:
    store = OUT / "store-10k"
    print(f"generating a {FOLLOW_SESSIONS:,}-session store ...", flush=True)
    opencode = bench.npm_install()[0]
    plan = storegen.plan_store(seed=10_000, sessions=FOLLOW_SESSIONS, turns=(3, 6), projects=40,
                               era_of=lambda n: "1.18")
    bench.empty_db_from_binary(opencode, store / "opencode.db")
    storegen.write_sqlite(plan, store / "opencode.db")


def follow(store: Path) -> dict:
    work = OUT / "store-follow"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(store, work)
    db = work / "opencode.db"
    con = sqlite3.connect(db)
    _mid, sid, data = con.execute(
        "SELECT id, session_id, data FROM message WHERE data LIKE '%\"assistant\"%' ORDER BY rowid DESC LIMIT 1"
    ).fetchone()
    template = json.loads(data)
    (user_data,) = con.execute("SELECT data FROM message WHERE id = ?", (template["parentID"],)).fetchone()
    user_template = json.loads(user_data)
    receiver = Receiver()
    port = receiver.start_grpc()
    p = subprocess.Popen([bench.ocsight(), "watch", "--protocol", "grpc", "--interval", "1", "--data-dir", str(work)],
                         env=env_for("follow", port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latencies = []
    try:
        time.sleep(8)  # the first cycle builds the sidecar's index
        first_cycle_kb = _vm_hwm(p.pid)  # its peak: before any metric export or write
        for i in range(WRITES):
            # a new turn, as OpenCode writes one: the user's message, then the finished answer
            new, asked = f"msg_zz_bench_{i:04d}b", f"msg_zz_bench_{i:04d}a"
            now = int(time.time() * 1000)
            user_template["time"] = {"created": now - 600}
            template["time"] = {"created": now - 500, "completed": now}
            template["parentID"] = asked
            written = time.time()
            con.executemany("INSERT INTO message (id, session_id, time_created, time_updated, data) VALUES (?,?,?,?,?)",
                            [(asked, sid, now - 600, now - 600, json.dumps(user_template)),
                             (new, sid, now - 500, now, json.dumps(template))])
            con.commit()
            want = span_id(new).to_bytes(8, "big")
            deadline = time.time() + 10
            while want not in receiver.arrived and time.time() < deadline:
                time.sleep(0.002)
            if want in receiver.arrived:
                latencies.append(receiver.arrived[want] - written)
            time.sleep(0.3)
    finally:
        peak_kb = _vm_hwm(p.pid)
        p.terminate()
        p.wait()
        receiver.stop()
        con.close()
    latencies.sort()
    return {
        "writes": WRITES, "delivered": len(latencies),
        "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))] if latencies else None,
        "peak_mb": peak_kb // 1024, "first_cycle_peak_mb": first_cycle_kb // 1024, "sessions": FOLLOW_SESSIONS,
    }


IDLE_SECONDS = 120  # two metric exports (every 60 s by default): the long-run average


def _cpu_seconds(pid: int) -> float:
    """The process's user and system CPU time so far (Linux's /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _interrupt(db: Path) -> None:
    """The newest answer as a turn cut off mid-stream leaves it (no completion time, written just
    now), and the `-wal`/`-shm` of a writer killed after its commit."""
    code = ("import json, os, signal, sqlite3, sys, time\n"
            "con = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "con.execute('PRAGMA journal_mode=WAL')\n"
            "mid, data = con.execute(\"SELECT id, data FROM message WHERE data LIKE '%\\\"assistant\\\"%' \"\n"
            "                        'ORDER BY rowid DESC LIMIT 1').fetchone()\n"
            "doc = json.loads(data); doc['time'].pop('completed', None)\n"
            "con.execute('UPDATE message SET data = ?, time_updated = ? WHERE id = ?',\n"
            "            (json.dumps(doc), int(time.time() * 1000), mid))\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", code, str(db)], timeout=60)


def idle(store: Path) -> dict:
    """The sidecar's CPU, in % of a core, once idle: next to an interrupted turn and a killed
    writer's WAL, and next to a running `opencode serve` on the same data."""
    out = {}
    base = OUT / "env-watch-idle"
    for state in ("interrupted", "opencode-serve"):
        shutil.rmtree(base, ignore_errors=True)
        receiver = Receiver()
        env = bench.isolated_env(base) | {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.start_grpc()}"}
        data = Path(env["XDG_DATA_HOME"]) / "opencode"
        shutil.copytree(store, data)
        serve = None
        if state == "interrupted":
            _interrupt(data / "opencode.db")
        else:
            opencode = bench.npm_install()[0]
            serve = subprocess.Popen([str(opencode), "serve", "--port", "0", "--hostname", "127.0.0.1"],
                                     env=env | {"OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_MODELS_FETCH": "1"},
                                     cwd=base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(5)  # its start-up writes
        log = (OUT / f"watch-idle-{state}.log").open("w")
        p = subprocess.Popen([bench.ocsight(), "watch", "-v", "--protocol", "grpc", "--data-dir", str(data)], env=env,
                             stdout=subprocess.DEVNULL, stderr=log)
        try:
            time.sleep(10)  # the first cycle builds the sidecar's index
            before = _cpu_seconds(p.pid)
            time.sleep(IDLE_SECONDS)
            if p.poll() is not None:
                raise SystemExit(f"ocsight watch ended early: see {log.name}")
            out[state] = 100 * (_cpu_seconds(p.pid) - before) / IDLE_SECONDS
        finally:
            log.close()
            p.terminate()
            p.wait()
            if serve is not None:
                serve.terminate()
                serve.wait(30)
            receiver.stop()
    shutil.rmtree(base, ignore_errors=True)
    return out


def stop_times(store: Path) -> dict:
    """Seconds from SIGTERM to the end of `ocsight watch --backfill` with the receiver down: while
    it builds its index (0.5 s in) and while it backs off after failed sends (6 s in)."""
    from harness import free_port

    out = {}
    for label, after in (("building its index", 0.5), ("backing off", 6.0)):
        env = env_for("stop", free_port()) | {"OTEL_EXPORTER_OTLP_TIMEOUT": "10"}
        p = subprocess.Popen([bench.ocsight(), "watch", "--backfill", "--protocol", "grpc", "--data-dir", str(store)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(after)
        t = time.monotonic()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        finally:
            if p.poll() is None:
                p.kill()
        out[label] = time.monotonic() - t
    return out


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def _vm_hwm(pid: int) -> int:
    """The process's own peak resident memory (kB). Not `ru_maxrss`: Linux carries a forked
    child's pre-exec peak (this process's size) into it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    if "--generate-only" in sys.argv:
        generate_big_store()
        return
    stores = bench.build_stores(bench.npm_install()[0], False)
    b = backfill(stores["db-only"])
    f = follow(big_store())
    cpu = idle(stores["db-only"])
    stops = stop_times(stores["db-only"])
    print(f"\nwatch backfill (3,000 sessions): {b['spans']:,} spans in {b['seconds']:.2f} s = "
          f"{b['spans_per_s']:,.0f} spans/s, peak {b['peak_mb']} MB")
    print(f"watch following ({f['sessions']:,} sessions): {f['delivered']}/{f['writes']} messages delivered, "
          f"latency p50 {_ms(f['p50_ms'])}, p95 {_ms(f['p95_ms'])}, peak {f['peak_mb']} MB "
          f"({f['first_cycle_peak_mb']} MB by the end of the first cycle)")
    print("watch idle (3,000 sessions): " + ", ".join(f"{v:.2f}% of a core ({k})" for k, v in cpu.items()))
    print("watch stop with the receiver down: " + ", ".join(f"{v:.2f} s ({k})" for k, v in stops.items()))
    checks = [
        ("latency p50 <= 250 ms", f["p50_ms"] is not None and f["p50_ms"] <= 250),
        ("latency p95 <= 1 s", f["p95_ms"] is not None and f["p95_ms"] <= 1000),
        ("backfill >= 10,000 spans/s", b["spans_per_s"] >= 10_000),
        ("memory while following <= 100 MB", f["peak_mb"] <= 100),
        ("every message delivered", f["delivered"] == f["writes"]),
        *((f"idle CPU <= 1% of a core ({k})", v <= 1.0) for k, v in cpu.items()),
        *((f"SIGTERM to exit <= 2 s ({k})", v <= 2.0) for k, v in stops.items()),
    ]
    print()
    for label, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {label}")
    (OUT / "results-watch.json").write_text(json.dumps({"backfill": b, "follow": f, "idle_cpu_percent": cpu,
                                                       "stop_seconds": stops}, indent=2))


if __name__ == "__main__":
    main()
