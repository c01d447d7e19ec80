"""`make bench`, MCP part: `ocsight mcp` answering the official MCP client, on the generated stores.

1. The 3,000-session benchmark store (database + legacy tree, as `bench.py` builds it) and the
   10,000-session store of `bench_watch.py`.
2. For each: the index is built first (`ocsight stats --json`), then `ocsight mcp` is started over
   stdio and every tool, resource and completion is called N times (each call refreshes the index
   first, as the server always does); latency is the client's round trip, median and p95.
3. Peak memory (VmHWM) of the server process: answering with a built index, and, in a second
   server on an empty cache, answering the first question while building the index.

Figures and target verdicts are printed at the end (p95 < 1 s for every call on the large store,
<= 100 MB answering on the 10,000-session store).
"""

from __future__ import annotations

import argparse
import functools
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
sys.path.insert(0, str(ROOT / "bench"))

import anyio.from_thread
import bench
import bench_watch
from mcp import Client, StdioServerParameters
from mcp.types import PromptReference, ResourceTemplateReference

import storegen

OUT = bench.OUT
SINCE = "2026-01-01"  # the generated stores' sessions start on 2026-07-01


def env_for(name: str) -> dict:
    base = OUT / f"env-mcp-{name}"
    shutil.rmtree(base, ignore_errors=True)
    env = bench.isolated_env(base)
    storegen.write_models_json(Path(env["XDG_CACHE_HOME"]) / "opencode" / "models.json")
    return env


def server_pid() -> int:
    """The `ocsight mcp` child this process started (the client spawns it)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"mcp" in cmd:
            return int(entry.name)
    raise SystemExit("the ocsight mcp process was not found")


def calls(session_id: str, provider: str) -> dict[str, tuple]:
    """What is timed: name -> (client method, arguments)."""
    sessions = ResourceTemplateReference(uri="ocsight://sessions/{id}")
    return {
        "usage_summary": ("call_tool", "usage_summary", {}),
        "usage_summary 30 days, provider": ("call_tool", "usage_summary", {"days": 30, "provider": provider}),
        "top_sessions": ("call_tool", "top_sessions", {"limit": 10}),
        "top_sessions by tokens, since": ("call_tool", "top_sessions", {"limit": 10, "by": "tokens", "since": SINCE}),
        "provider_trends day": ("call_tool", "provider_trends", {"since": SINCE}),
        "provider_trends week": ("call_tool", "provider_trends", {"since": SINCE, "interval": "week"}),
        "session_details": ("call_tool", "session_details", {"id": session_id}),
        "refresh_index": ("call_tool", "refresh_index", {}),
        "read metrics/summary": ("read_resource", "ocsight://metrics/summary"),
        "read providers": ("read_resource", "ocsight://providers"),
        "read providers/{provider}": ("read_resource", f"ocsight://providers/{provider}"),
        "read sessions/{id}": ("read_resource", f"ocsight://sessions/{session_id}"),
        "complete session id": ("complete", sessions, {"name": "id", "value": session_id[:8]}),
        "complete model": ("complete", PromptReference(name="usage_report"), {"name": "model", "value": "a"}),
    }


def measure(name: str, store: Path, rounds: int) -> dict:
    env = env_for(name)
    started = time.perf_counter()
    subprocess.run([bench.ocsight(), "stats", "--json", "--data-dir", str(store)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    index_s = time.perf_counter() - started
    params = StdioServerParameters(command=bench.ocsight(), args=["mcp", "--data-dir", str(store)], env=env)
    with anyio.from_thread.start_blocking_portal() as portal:
        started = time.perf_counter()
        with portal.wrap_async_context_manager(Client(params, cache=None, mode="legacy")) as client:
            connect_s = time.perf_counter() - started
            pid = server_pid()
            run = lambda method, *args: portal.call(functools.partial(getattr(client, method), *args))
            top = run("call_tool", "top_sessions", {"limit": 1}).structured_content["sessions"][0]["id"]
            provider = run("call_tool", "usage_summary", {}).structured_content["by_provider"][0]["provider"]
            latency: dict[str, list[float]] = {}
            for _ in range(rounds):
                for label, (method, *args) in calls(top, provider).items():
                    t = time.perf_counter()
                    result = run(method, *args)
                    latency.setdefault(label, []).append(time.perf_counter() - t)
                    if getattr(result, "is_error", False):
                        raise SystemExit(f"{label} failed: {result.content[0].text}")
            peak_mb = bench_watch._vm_hwm(pid) // 1024
    cold = cold_first_answer(name, store)
    return {"store": name, "index_build_s": index_s, "connect_s": connect_s, "peak_mb": peak_mb, **cold,
            "latency_ms": {k: {"median": 1000 * statistics.median(v),
                               "p95": 1000 * sorted(v)[int(0.95 * (len(v) - 1))]} for k, v in latency.items()}}


def cold_first_answer(name: str, store: Path) -> dict:
    """A server on an empty cache: the first answer waits for the index to be built."""
    env = env_for(f"{name}-cold")
    params = StdioServerParameters(command=bench.ocsight(), args=["mcp", "--data-dir", str(store)], env=env)
    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(Client(params, cache=None, mode="legacy")) as client:
        pid = server_pid()
        t = time.perf_counter()
        portal.call(client.call_tool, "usage_summary", {})
        first_s = time.perf_counter() - t
        peak_mb = bench_watch._vm_hwm(pid) // 1024
    return {"cold_first_answer_s": first_s, "cold_peak_mb": peak_mb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    stores = bench.build_stores(bench.npm_install()[0], False)
    results = [measure("combined", stores["combined"], args.rounds),
               measure("10k", bench_watch.big_store(), args.rounds)]
    info = json.loads((OUT / "stores.json").read_text())
    print(f"\nocsight mcp, {args.rounds} calls each (ms: median / p95); stores: combined = {info['sessions']:,} "
          f"sessions, database + {info['legacy_files']:,}-file legacy tree; 10k = {bench_watch.FOLLOW_SESSIONS:,} "
          "sessions, database")
    labels = list(results[0]["latency_ms"])
    print(f"{'call':<34}" + "".join(f"{r['store']:>20}" for r in results))
    for label in labels:
        print(f"{label:<34}" + "".join(
            f"{r['latency_ms'][label]['median']:>11.1f} / {r['latency_ms'][label]['p95']:>6.1f}" for r in results))
    for r in results:
        print(f"{r['store']}: index built by `ocsight stats` in {r['index_build_s']:.2f} s; server connected in "
              f"{r['connect_s']:.2f} s; peak memory answering {r['peak_mb']} MB; on an empty cache the first answer "
              f"took {r['cold_first_answer_s']:.2f} s, peak {r['cold_peak_mb']} MB")
    big = results[0]
    checks = [
        ("every call p95 < 1 s on the large store", all(v["p95"] < 1000 for v in big["latency_ms"].values())),
        ("every call p95 < 1 s on the 10,000-session store",
         all(v["p95"] < 1000 for v in results[1]["latency_ms"].values())),
        ("memory answering <= 100 MB on the 10,000-session store", results[1]["peak_mb"] <= 100),
    ]
    print()
    for label, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {label}")
    (OUT / "results-mcp.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
