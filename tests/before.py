"""The numbers ocsight printed before the core's redesign (issue 25), to hold every later run to them.

`python tests/before.py` records, for every recorded corpus and one generated store, what the
command line prints: `stats --json` in each cost mode and with filters, `daily`/`weekly`/`monthly
--json` (with and without `--breakdown`), `session --json`, every export (each format at each
level) and the OTLP output of `watch --once --backfill` (spans and metric points) as a real
receiver got it. `tests/test_before.py` compares the current code's outputs with those saved in
`tests/fixtures/before/`.

Each store is read from a copy, through the real console entry point, in a sandbox of its own
(HOME and XDG directories, UTC), with the config OpenCode ran with (its custom providers' prices)
and, for the generated store, a models.dev catalogue.

Left out of the comparison, because they legitimately differ between runs: ocsight's version, the
index and data paths (the store's path is replaced by `$STORE`), collection timestamps of metric
points, and the resource's `service.instance.id`, `service.version`, `host.name` and `user.name`
(and the `user.name` / `host.name` labels of metric points: they name the machine that ran it), and
`telemetry.sdk.version` (the OpenTelemetry SDK installed).
This is a one-time check for the redesign; later issues that change numbers on purpose update or
retire it. Issue 26 updated it once: the generated store's turns cut off mid-stream are now sent as
interrupted spans (68 spans more; nothing else changed). Issue 28 updated it again: the message
export's new `unpriced` column (with an empty cost for those messages), Markdown totals that say
what no price covers, the Markdown header's window in words (`- Covers: last 30 days · provider mock`), and the demo store's paths moved out of the recording sandbox; no number changed.
Issue 28 also added `source.fork_copies` and `source.fork_copies_counted` to `stats --json` (left out
here) and a corpus with forks (not here: these stores hold none, and their numbers are unchanged).
Later, each session of `session --json` gained `fork_copies` (how many of its messages are copies a
fork made) and the document `fork_copies_counted`: left out here, as these stores hold no fork.
Issue 28's review changed the Markdown exports' cost cells only: a row whose unpriced messages leave
its cost unknown reads `—` in `cost_usd` and `estimated_usd` (was `0`, or empty at the message
level), and `≥` and the priced part where they leave it partial; CSV and JSON are unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from corpus import CORPORA, FORKED, NAMES, store_dir  # noqa: E402

BEFORE = Path(__file__).parent / "fixtures" / "before"
GENERATED = "generated"
STORES = (*(n for n in NAMES if n != FORKED), GENERATED)  # the 1.19 corpus came later (issue 28)
ADDED_SOURCE_KEYS = {"fork_copies", "fork_copies_counted"}  # `stats --json` keys added later (issue 28)
ADDED_SESSION_KEYS = {"fork_copies"}  # keys of each session of `session --json` added later
ADDED_SESSIONS_DOC_KEYS = {"fork_copies_counted"}  # and of the document
VOLATILE_RESOURCE = {"service.instance.id", "service.version", "host.name", "user.name", "telemetry.sdk.version"}
VOLATILE_LABELS = {"user.name", "host.name"}
VERSION = "0.1.0"  # ocsight's version when "before" was recorded


def generated_plan():
    """A store of every era, its oldest sessions also in a legacy tree (as on an upgraded machine)."""
    import storegen

    return storegen.plan_store(seed=2525, sessions=60, eras=tuple(storegen.ERAS), projects=4)


def write_generated(root: Path) -> None:
    import storegen

    plan = generated_plan()
    storegen.write_sqlite(plan, root / "opencode.db")
    storegen.write_legacy(plan, root / "storage", {s["id"] for s in plan.sessions[:25]})


def prepare(name: str, base: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the store and a sandboxed environment to read it in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCODE_", "XDG_", "OCSIGHT_", "OTEL_"))}
    for var, sub in (("HOME", "home"), ("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"),
                     ("XDG_CACHE_HOME", "cache"), ("XDG_STATE_HOME", "state")):
        (base / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(base / sub)
    env["TZ"] = "UTC"
    env["NO_COLOR"] = "1"
    store = base / "store"
    if name == GENERATED:
        import storegen

        write_generated(store)
        storegen.write_models_json(base / "cache" / "opencode" / "models.json")
    else:
        shutil.copytree(store_dir(name), store)
        config = base / "config" / "opencode"
        config.mkdir(parents=True)
        shutil.copyfile(CORPORA / name / "opencode.json", config / "opencode.json")
    return store, env


def ocsight(env: dict[str, str], *args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "ocsight", *args], capture_output=True, text=True, env=env,
                       timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"ocsight {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def commands(store: Path) -> dict[str, list[str]]:
    data = ["--data-dir", str(store), "-z", "UTC"]
    out: dict[str, list[str]] = {}
    for mode in ("auto", "stored", "calculate"):
        out[f"stats {mode}"] = ["stats", "--json", "--cost-mode", mode, *data]
    out["stats filtered"] = ["stats", "--json", "--since", "2026-08-01", "--until", "2026-12-31", "--agent",
                             "build,general", *data]
    out["stats by project"] = ["stats", "--json", "--project", "/", "--cost-mode", "calculate", *data]
    for grain in ("daily", "weekly", "monthly"):
        out[grain] = [grain, "--json", *data]
        out[f"{grain} breakdown"] = [grain, "--json", "--breakdown", "--cost-mode", "calculate", *data]
    out["session"] = ["session", "--json", "--limit", "100000", *data]
    for level in ("message", "session", "day", "model"):
        for fmt in ("csv", "json", "markdown"):
            out[f"export {level} {fmt}"] = ["export", "--format", fmt, "--level", level, *data]
    return out


def normalise_text(text: str, store: Path) -> str:
    return text.replace(str(store), "$STORE").replace(f"ocsight {VERSION}", "ocsight $VERSION")


def normalise_json(doc: object) -> object:
    """Without ocsight's version and the index's path."""
    if isinstance(doc, dict):
        added = (ADDED_SESSION_KEYS if "children" in doc and "rollup" in doc
                 else ADDED_SESSIONS_DOC_KEYS if "total_sessions" in doc else set())
        out = {k: normalise_json(v) for k, v in doc.items() if k != "ocsight" and k not in added}
        if isinstance(out.get("source"), dict):
            out["source"] = {k: v for k, v in out["source"].items() if k != "index" and k not in ADDED_SOURCE_KEYS}
        return out
    if isinstance(doc, list):
        return [normalise_json(v) for v in doc]
    return doc


def _value(v) -> object:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _attributes(kvs, drop: set[str] = frozenset()) -> dict:
    return {kv.key: _value(kv.value) for kv in kvs if kv.key not in drop}


def otlp_output(receiver) -> dict:
    """The spans and metric points a receiver got, in a form that compares across runs."""
    spans = []
    resources = []
    for req in receiver.traces:
        for rs in req.resource_spans:
            resources.append(_attributes(rs.resource.attributes, VOLATILE_RESOURCE))
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append({
                        "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(), "name": s.name, "kind": s.kind,
                        "start": s.start_time_unix_nano, "end": s.end_time_unix_nano,
                        "attributes": _attributes(s.attributes), "status": [s.status.code, s.status.message],
                        "scope": ss.scope.name,
                    })
    metrics: dict[str, dict] = {}
    for req in receiver.metrics:
        for rm in req.resource_metrics:
            resources.append(_attributes(rm.resource.attributes, VOLATILE_RESOURCE))
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    data = m.WhichOneof("data")
                    entry = metrics.setdefault(m.name, {"type": data, "unit": m.unit, "scope": sm.scope.name,
                                                        "points": []})
                    for p in getattr(m, data).data_points:
                        point = {"attributes": _attributes(p.attributes, VOLATILE_LABELS)}
                        if data in ("sum", "gauge"):
                            point["value"] = getattr(p, p.WhichOneof("value"))
                        else:
                            point["count"], point["sum"] = p.count, p.sum
                            point["bucket_counts"] = list(p.bucket_counts)
                        entry["points"].append(point)
    for entry in metrics.values():
        entry["points"].sort(key=lambda p: json.dumps(p, sort_keys=True))
    unique_resources = sorted({json.dumps(r, sort_keys=True) for r in resources})
    return {"spans": sorted(spans, key=lambda s: (s["trace_id"], s["span_id"])),
            "metrics": dict(sorted(metrics.items())), "resources": [json.loads(r) for r in unique_resources]}


def watch_output(store: Path, env: dict[str, str]) -> dict:
    from otlp_receiver import Receiver

    receiver = Receiver()
    port = receiver.start_http()
    try:
        ocsight({**env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"},
                "watch", "--once", "--backfill", "--data-dir", str(store))
        return otlp_output(receiver)
    finally:
        receiver.stop()


def outputs(name: str) -> dict[str, object]:
    """Every output of one store, normalised (see the module's docstring)."""
    with tempfile.TemporaryDirectory(prefix="ocsight-before-") as tmp:
        store, env = prepare(name, Path(tmp))
        out: dict[str, object] = {}
        for label, args in commands(store).items():
            text = normalise_text(ocsight(env, *args), store)
            out[label] = normalise_json(json.loads(text)) if "--json" in args or " json" in label else text
        watched = watch_output(store, env)
        out["otlp"] = json.loads(normalise_text(json.dumps(watched), store))
        return out


def path_of(name: str) -> Path:
    return BEFORE / f"{name}.json"


def main() -> None:
    BEFORE.mkdir(parents=True, exist_ok=True)
    for name in STORES:
        doc = outputs(name)
        path_of(name).write_text(json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
        print(f"{name}: {len(doc)} outputs, {len(doc['otlp']['spans'])} spans")  # type: ignore[index]


if __name__ == "__main__":
    main()
