"""The identity of the real `ocsight watch` process, as a real receiver gets it: the same after a
restart, another on other data, the one OTEL_RESOURCE_ATTRIBUTES or the settings give; and one
sidecar per set of data directories."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Result, run_ocsight
from otlp_receiver import Receiver

Identity = tuple[str, str, str]  # user.name, host.name, service.instance.id


def identities(receiver: Receiver, traces_from: int = 0, metrics_from: int = 0) -> set[Identity]:
    """The identities of the resources of every request since the given request counts."""
    with receiver.lock:
        resources = [rs.resource for req in receiver.traces[traces_from:] for rs in req.resource_spans]
        resources += [rm.resource for req in receiver.metrics[metrics_from:] for rm in req.resource_metrics]
    out = set()
    for r in resources:
        a = {kv.key: kv.value.string_value for kv in r.attributes}
        out.add((a["user.name"], a["host.name"], a["service.instance.id"]))
    return out


def watch_once(store: Path, receiver: Receiver, **env: str) -> Result:
    r = run_ocsight("watch", "--once", "--backfill", "--protocol", "grpc", "--data-dir", str(store),
                    env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.grpc_port}", **env})
    assert r.code == 0, r.err
    return r


def identity_of_a_run(store: Path, receiver: Receiver, **env: str) -> set[Identity]:
    before = len(receiver.traces), len(receiver.metrics)
    watch_once(store, receiver, **env)
    return identities(receiver, *before)


def test_the_identity_is_the_same_after_a_restart(store, receiver):
    receiver.start_grpc()
    first = identity_of_a_run(store, receiver)
    again = identity_of_a_run(store, receiver)  # sends no span again, only the metrics
    assert len(first) == 1 and again == first


def test_a_sidecar_on_other_data_has_another_instance_id_under_the_same_user_and_host(store, receiver, tmp_path):
    receiver.start_grpc()
    other = shutil.copytree(store, tmp_path / "other-data")
    ((user, host, instance),) = identity_of_a_run(store, receiver)
    ((user2, host2, instance2),) = identity_of_a_run(other, receiver)
    assert (user2, host2) == (user, host) and instance2 != instance


def test_the_identity_is_taken_from_otel_resource_attributes_when_they_give_it(store, receiver):
    receiver.start_grpc()
    got = identity_of_a_run(store, receiver, OTEL_RESOURCE_ATTRIBUTES=(
        "user.name=cleo,host.name=ci-runner-7,service.instance.id=cleo-ci"))
    assert got == {("cleo", "ci-runner-7", "cleo-ci")}


def test_the_identity_is_taken_from_the_config_file(store, receiver, tmp_path):
    receiver.start_grpc()
    config = tmp_path / "config.toml"
    config.write_text('user_name = "dana"\nhost_name = "dana-desktop"\n')
    ((user, host, instance),) = identity_of_a_run(store, receiver, OCSIGHT_CONFIG=str(config))
    assert (user, host) == ("dana", "dana-desktop") and len(instance) == 16


def test_every_metric_point_carries_the_user_and_host_of_the_resource(store, receiver):
    receiver.start_grpc()
    watch_once(store, receiver, OCSIGHT_USER_NAME="erin", OCSIGHT_HOST_NAME="erin-box")
    (_kind, points), *_ = receiver.metric_points("ocsight.tokens")[-1:]
    labels = [{a.key: a.value.string_value for a in p.attributes} for p in points]
    assert {(x["user.name"], x["host.name"]) for x in labels} == {("erin", "erin-box")}


@pytest.fixture
def following(store: Path, receiver: Receiver, tmp_path: Path):
    """A running `ocsight watch` following `store`, once it has sent something (so it holds the lock)."""
    port = receiver.start_grpc()
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
    log = (tmp_path / "first.log").open("w")
    p = subprocess.Popen([sys.executable, "-m", "ocsight", "watch", "--backfill", "--protocol", "grpc", "--data-dir",
                          str(store)], env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not receiver.spans():
        time.sleep(0.1)
    assert receiver.spans(), (tmp_path / "first.log").read_text()
    yield p
    p.terminate()
    p.wait(30)
    log.close()


@pytest.mark.parametrize("mode", [["--once"], []], ids=["once", "following"])
def test_a_second_watch_on_the_same_data_exits_with_a_one_line_error_while_the_first_runs(
        store, receiver, following, mode: list[str]):
    r = run_ocsight("watch", *mode, "--protocol", "grpc", "--data-dir", str(store),
                    env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.grpc_port}"}, timeout=60)
    assert r.code == 1 and r.err.count("\n") == 1 and "Traceback" not in r.err
    assert "already follows" in r.err and f"process {following.pid}" in r.err and following.poll() is None
