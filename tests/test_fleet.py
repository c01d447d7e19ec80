"""A team's fleet: ten real `ocsight watch --once --backfill` processes at once, each one developer
(its own user, host, HOME and OpenCode store), into one real collector (rotel) that forwards to the
test's receiver. Each developer's totals arrive exact and under one identity of their own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import storegen
from conftest import write_store
from ocsight.telemetry import otlp
from otlp_receiver import Receiver
from rotel_process import TEAM_BATCH_SPANS, start_rotel

FLEET = 10
BOUND_S = 60  # the whole fleet, from start to the last span at the receiver


@dataclass(frozen=True)
class Developer:
    user: str
    host: str
    store: Path  # OpenCode's default data directory in this developer's HOME
    env: dict[str, str]


@dataclass(frozen=True)
class Fleet:
    developers: tuple[Developer, ...]
    sent: dict[str, int]  # user -> spans their sidecar reported sent
    spans: dict[str, list]  # user -> the spans that arrived under their resources
    identities: dict[str, set[tuple[str, str]]]  # user -> {(host.name, service.instance.id)}, spans and metrics
    stats: dict[str, dict]  # user -> `ocsight stats --json` of their store, run as them


def developer(i: int, base: Path, endpoint: str) -> Developer:
    home = base / f"dev{i}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCODE_", "XDG_", "OCSIGHT_", "OTEL_"))}
    for var, sub in (("HOME", "home"), ("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"),
                     ("XDG_CACHE_HOME", "cache"), ("XDG_STATE_HOME", "state")):
        (home / sub).mkdir(parents=True)
        env[var] = str(home / sub)
    user, host = f"dev{i}", f"laptop-{i}"
    env |= {"TZ": "UTC", "OCSIGHT_USER_NAME": user, "OCSIGHT_HOST_NAME": host, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    store = write_store(storegen.plan_store(seed=2600 + i, sessions=2 + 2 * i), home / "data" / "opencode", "db")
    return Developer(user, host, store, env)


def arrived(receiver: Receiver) -> tuple[dict[str, list], dict[str, set[tuple[str, str]]], set[str]]:
    """The spans and the identities under each user's resources, and the users whose metrics arrived."""
    spans: dict[str, list] = {}
    identities: dict[str, set[tuple[str, str]]] = {}
    with receiver.lock:
        resources = [(rs.resource, [s for ss in rs.scope_spans for s in ss.spans])
                     for req in receiver.traces for rs in req.resource_spans]
        resources += [(rm.resource, None) for req in receiver.metrics for rm in req.resource_metrics]
    with_metrics = set()
    for resource, in_it in resources:
        a = {kv.key: kv.value.string_value for kv in resource.attributes}
        if in_it is None:
            with_metrics.add(a["user.name"])
        else:
            spans.setdefault(a["user.name"], []).extend(in_it)
        identities.setdefault(a["user.name"], set()).add((a["host.name"], a["service.instance.id"]))
    return spans, identities, with_metrics


def finish(procs: list[subprocess.Popen], deadline: float) -> list[str]:
    """Each process's stderr, once all have exited 0 (within the deadline)."""
    errs = []
    for p in procs:
        _out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert p.returncode == 0, err
        errs.append(err)
    return errs


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    base = tmp_path_factory.mktemp("fleet")
    receiver = Receiver()
    collector = start_rotel(receiver.start_grpc(), base, TEAM_BATCH_SPANS)
    try:
        devs = tuple(developer(i, base, f"http://127.0.0.1:{collector.ports['http/protobuf']}") for i in range(FLEET))
        deadline = time.monotonic() + BOUND_S
        procs = [subprocess.Popen([sys.executable, "-m", "ocsight", "watch", "--once", "--backfill"], env=d.env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for d in devs]
        errs = finish(procs, deadline)
        sent = {d.user: int(re.findall(r"sent (\d+) spans", err)[-1]) for d, err in zip(devs, errs, strict=True)}
        spans, identities, with_metrics = arrived(receiver)
        while time.monotonic() < deadline and (len(receiver.spans()) < sum(sent.values())
                                               or len(with_metrics) < FLEET):
            time.sleep(0.1)
            spans, identities, with_metrics = arrived(receiver)
        stats = [subprocess.Popen([sys.executable, "-m", "ocsight", "stats", "--json"], env=d.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for d in devs]
        docs = {d.user: p.communicate(timeout=60) for d, p in zip(devs, stats, strict=True)}
    finally:
        collector.stop()
        receiver.stop()
    return Fleet(devs, sent, spans, identities, {u: json.loads(out) for u, (out, _err) in docs.items()})


def attrs(span) -> dict:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in span.attributes}


def test_each_developers_chat_spans_add_up_to_what_stats_reports_for_their_store(fleet: Fleet):
    for d in fleet.developers:
        chats = [attrs(s) for s in fleet.spans[d.user] if s.name.startswith("chat ")]
        totals = fleet.stats[d.user]["totals"]
        tokens = sum(a["gen_ai.usage.input_tokens"] + a["gen_ai.usage.output_tokens"] for a in chats)
        cost = sum(a.get("gen_ai.usage.cost", 0.0) for a in chats)
        assert (len(chats), tokens) == (totals["messages"]["assistant"], totals["tokens"]["total"]), d.user
        assert cost == pytest.approx(totals["cost"]["usd"], abs=1e-6), d.user


def test_every_span_a_sidecar_sent_arrived_once_under_its_developer(fleet: Fleet):
    assert {u: len({s.span_id for s in spans}) for u, spans in fleet.spans.items()} == fleet.sent
    assert {u: len(spans) for u, spans in fleet.spans.items()} == fleet.sent


def test_no_span_id_is_shared_between_sidecars(fleet: Fleet):
    ids = [{s.span_id for s in spans} for spans in fleet.spans.values()]
    assert len(set().union(*ids)) == sum(len(x) for x in ids)


def test_each_sidecar_has_exactly_one_identity_derived_from_its_user_host_and_data(fleet: Fleet):
    assert fleet.identities == {d.user: {(d.host, otlp.instance_id(d.user, d.host, [d.store]))}
                                for d in fleet.developers}
