"""The sidecar's resource: who and where it runs, the same after a restart, as the SDK exports it."""

from __future__ import annotations

import getpass
import socket
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from ocsight.telemetry import otlp

ANA = otlp.GivenIdentity(user_name="ana", host_name="ana-laptop")


@pytest.fixture(autouse=True)
def no_otel_resource_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)


def attrs(dirs: list[Path], given: otlp.GivenIdentity = ANA) -> dict:
    return dict(otlp.resource(dirs, given).attributes)


def instance(dirs: list[Path], given: otlp.GivenIdentity = ANA) -> str:
    return attrs(dirs, given)["service.instance.id"]


def test_the_instance_id_is_the_same_every_time_for_the_same_user_host_and_data_dirs(tmp_path: Path):
    assert instance([tmp_path / "opencode"]) == instance([tmp_path / "opencode"])


def test_the_instance_id_differs_for_other_data_dirs(tmp_path: Path):
    assert instance([tmp_path / "opencode"]) != instance([tmp_path / "other"])


def test_the_instance_id_differs_for_another_user_on_the_same_data_dirs(tmp_path: Path):
    ben = otlp.GivenIdentity(user_name="ben", host_name="ana-laptop")
    assert instance([tmp_path / "opencode"]) != instance([tmp_path / "opencode"], ben)


def test_the_instance_id_ignores_the_order_and_spelling_of_the_data_dirs(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    b.mkdir()
    (tmp_path / "link").symlink_to(b)
    assert instance([a, b]) == instance([tmp_path / "link", tmp_path / "b" / ".." / "a"])


def test_without_settings_the_user_and_host_are_the_os_user_and_the_host_name(tmp_path: Path):
    got = attrs([tmp_path], otlp.GivenIdentity())
    assert (got["user.name"], got["host.name"]) == (getpass.getuser(), socket.gethostname())


def test_the_settings_name_the_user_the_host_and_the_instance(tmp_path: Path):
    got = attrs([tmp_path], otlp.GivenIdentity("ana", "ana-laptop", "ana-1"))
    assert (got["user.name"], got["host.name"], got["service.instance.id"]) == ("ana", "ana-laptop", "ana-1")


def test_otel_resource_attributes_override_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "user.name=cleo,host.name=ci-7,service.instance.id=cleo-ci,team=x")
    got = attrs([tmp_path], otlp.GivenIdentity("ana", "ana-laptop", "ana-1"))
    assert (got["user.name"], got["host.name"], got["service.instance.id"], got["team"]) == (
        "cleo", "ci-7", "cleo-ci", "x")


def test_a_user_and_host_from_otel_resource_attributes_make_the_instance_id(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "user.name=ana,host.name=ana-laptop")
    assert instance([tmp_path], otlp.GivenIdentity()) == instance([tmp_path], ANA)


def test_otel_service_name_names_the_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "ocsight-team")
    got = attrs([tmp_path])
    assert (got["service.name"], got["telemetry.sdk.language"]) == ("ocsight-team", "python")


def test_without_otel_service_name_the_service_is_ocsight(tmp_path: Path):
    assert attrs([tmp_path])["service.name"] == "ocsight"


def test_the_sdk_exports_metrics_under_the_stable_instance_id(tmp_path: Path):
    """The SDK's providers add no random `service.instance.id` of their own."""
    res = otlp.resource([tmp_path], ANA)
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=res, metric_readers=[reader])
    provider.get_meter("t").create_counter("c").add(1)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    (rm,) = data.resource_metrics
    assert rm.resource.attributes["service.instance.id"] == instance([tmp_path])
