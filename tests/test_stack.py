"""The compose stacks, checked without a Docker engine: docker-compose (1.29) validates the files,
and the parts users rely on are there (pinned images, named volumes, loopback ports, secrets
from .env, mounts that exist in the repository) — for the single-exporter stack
(docker-compose.yml) and for its scale-out variant (docker-compose.scale.yml on top of it:
exporter replicas on PostgreSQL behind a load balancer, each scraped by Prometheus)."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from monitoring import promtool_check_config

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / ".env.example"
# The compose files of each stack, in the order given to docker compose -f.
STACKS = {
    "base": ("docker-compose.yml",),
    "scale": ("docker-compose.yml", "docker-compose.scale.yml"),
}
BASE_SERVICES = {"exporter", "influxdb", "prometheus", "alertmanager", "grafana", "alert-webhook"}
SERVICES = {
    "base": BASE_SERVICES,
    "scale": BASE_SERVICES | {"exporter-a", "exporter-b", "postgres", "lb"},
}
BASE_STATEFUL = {"exporter", "influxdb", "prometheus", "alertmanager", "grafana"}
STATEFUL = {"base": BASE_STATEFUL, "scale": BASE_STATEFUL | {"postgres"}}
EXPORTER_PORT = 8080
METRICS_KEY_FILE = "/etc/prometheus/secrets/carnil-metrics-key"


@functools.cache
def compose_config(stack: str) -> dict:
    """``docker-compose config`` of a stack (merged, interpolated), with .env.example as .env."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed (apt-get install docker-compose)")
    files = [arg for name in STACKS[stack] for arg in ("-f", name)]
    with tempfile.TemporaryDirectory() as directory:
        env_file = Path(directory) / ".env"
        env_file.write_text(ENV_EXAMPLE.read_text())
        done = subprocess.run([binary, "--env-file", str(env_file), *files, "config"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module", params=sorted(STACKS))
def stack(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def compose(stack) -> dict:
    return compose_config(stack)


@pytest.fixture(scope="module")
def scale() -> dict:
    return compose_config("scale")


def example_env() -> dict[str, str]:
    return dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                if line and not line.startswith("#"))


def running(services: dict) -> dict:
    """The services that start containers (the scale stack scales the base exporter to 0)."""
    return {name: service for name, service in services.items()
            if service.get("deploy", {}).get("replicas", 1) != 0}


def replicas(config: dict) -> set[str]:
    """The running services of the exporter's image: the replicas behind the load balancer."""
    image = config["services"]["exporter"]["image"]
    return {name for name, service in running(config["services"]).items()
            if service.get("image") == image}


def _source(volume) -> str:
    """The source of a volume, in the short ("src:dst:mode") or the long syntax."""
    return volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]


def _target(volume) -> str:
    return volume.split(":")[1] if isinstance(volume, str) else volume["target"]


def mounted(service: dict, target: str) -> Path:
    """The repository file or directory a service mounts at ``target``."""
    [source] = [_source(v) for v in service.get("volumes", []) if _target(v) == target]
    return Path(source)


def _host_ports(service: dict) -> list[tuple[str, str]]:
    """(host address, host port) of each port a service publishes."""
    return [(port.get("host_ip", ""), str(port["published"])) if isinstance(port, dict)
            else tuple(port.rsplit(":", 2)[:2]) for port in service.get("ports", [])]


# -- both stacks ------------------------------------------------------------------------------


def test_every_service_is_there_with_a_pinned_image(compose, stack):
    services = compose["services"]
    assert set(services) == SERVICES[stack]
    for name, service in services.items():
        if name == "exporter" or name in replicas(compose):
            assert service["build"]
            continue
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), image


def test_ports_are_loopback_and_data_is_in_named_volumes(compose, stack):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            published = port if isinstance(port, str) else port.get("host_ip")
            assert str(published).startswith("127.0.0.1"), (name, port)
    named = set(compose["volumes"])
    for service in STATEFUL[stack]:
        sources = {source for source in map(_source, compose["services"][service]["volumes"])
                   if not source.startswith("/")}
        assert sources and sources <= named, service


def test_no_two_running_services_publish_one_host_port(compose):
    published = [port for service in running(compose["services"]).values()
                 for port in _host_ports(service)]
    assert len(published) == len(set(published)), published


def test_mounted_repository_files_exist(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            if not _source(volume).startswith("/"):
                continue  # a named volume
            source = Path(_source(volume))
            if "secrets" in source.parts:
                continue  # written by scripts/init-stack, never committed
            assert source.exists(), (name, source)


def test_secrets_come_from_the_environment_file(compose, stack):
    exporter = compose["services"]["exporter"]["environment"]
    example = example_env()
    assert exporter["CARNIL_AUTH_ADMIN_KEY"] == example["CARNIL_ADMIN_KEY"]
    assert exporter["CARNIL_INFLUXDB_TOKEN"] == example["INFLUXDB_TOKEN"]
    for file in STACKS[stack]:
        compose_text = (ROOT / file).read_text()
        for secret in ("change-me", "token_urlsafe"):
            assert secret not in compose_text, file


def test_the_exporter_image_runs_unprivileged_with_a_healthcheck():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "\nUSER carnil" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert 'CMD ["serve"]' in dockerfile


def test_the_exporter_image_runs_on_both_stores():
    """SQLite by default; PostgreSQL (the scale stack) needs the postgresql extra's driver."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "CARNIL_DATABASE_URL=sqlite:///" in dockerfile
    assert 'pip install ".[postgresql]"' in dockerfile


def test_init_stack_replaces_every_placeholder_and_keeps_what_is_there(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "init-stack", tmp_path / "scripts")
    shutil.copy(ENV_EXAMPLE, tmp_path)

    def init_stack() -> dict[str, str]:
        subprocess.run(["bash", str(tmp_path / "scripts" / "init-stack")], capture_output=True,
                       text=True, timeout=60, check=True)
        return dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines()
                    if line and not line.startswith("#"))

    written = init_stack()
    example = example_env()
    assert set(written) == set(example)
    for key, value in example.items():
        if value.startswith("change-me"):
            assert re.fullmatch(r"[A-Za-z0-9_-]{40,}", written[key]), key  # URL-safe, random
        else:
            assert written[key] == value, key
    assert init_stack() == written  # never overwrites

    # A .env from before the scale stack gains POSTGRES_PASSWORD, and keeps every other value.
    older = {key: value for key, value in written.items() if key != "POSTGRES_PASSWORD"}
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in older.items()))
    upgraded = init_stack()
    assert upgraded.pop("POSTGRES_PASSWORD") not in ("", written["POSTGRES_PASSWORD"])
    assert upgraded == older


# -- the scale-out stack ----------------------------------------------------------------------


def test_the_base_exporter_gives_way_to_replicas_on_postgresql(scale):
    """The replicas run the base exporter's settings on the shared PostgreSQL store, publish
    no port, and start once PostgreSQL is healthy; the base exporter runs no container."""
    base = compose_config("base")["services"]["exporter"]
    services = scale["services"]
    assert len(replicas(scale)) >= 2
    assert services["exporter"]["deploy"]["replicas"] == 0
    url = (f"postgresql+psycopg://carnil:{example_env()['POSTGRES_PASSWORD']}"
           "@postgres:5432/carnil")
    for name in replicas(scale) | {"exporter"}:
        service = services[name]
        assert service["environment"] == {**base["environment"], "CARNIL_DATABASE_URL": url}, name
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}, name
        assert service["image"] == base["image"] and service["build"] == base["build"], name
    for name in replicas(scale):
        assert not services[name].get("ports"), name


def test_postgres_is_private_healthchecked_and_keyed_from_the_environment_file(scale):
    postgres = scale["services"]["postgres"]
    assert not postgres.get("ports")
    assert postgres["environment"]["POSTGRES_PASSWORD"] == example_env()["POSTGRES_PASSWORD"]
    assert postgres["environment"]["POSTGRES_USER"] == "carnil"
    assert postgres["environment"]["POSTGRES_DB"] == "carnil"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert {_target(v) for v in postgres["volumes"]} == {"/var/lib/postgresql/data"}


def upstream_servers(nginx_conf: str) -> tuple[str, list[str]]:
    """The upstream block's name and its servers' addresses."""
    [(name, block)] = re.findall(r"\bupstream\s+(\S+)\s*\{(.*?)\}", nginx_conf, re.S)
    return name, re.findall(r"^\s*server\s+([^\s;]+)", block, re.M)


def test_the_load_balancer_fronts_exactly_the_replicas(scale):
    lb = scale["services"]["lb"]
    assert _host_ports(lb) == [("127.0.0.1", str(EXPORTER_PORT))]
    nginx_conf = re.sub(r"#[^\n]*", "", mounted(lb, "/etc/nginx/conf.d/default.conf").read_text())
    upstream, servers = upstream_servers(nginx_conf)
    assert sorted(servers) == sorted(f"{name}:{EXPORTER_PORT}" for name in replicas(scale))
    assert f"proxy_pass http://{upstream};" in nginx_conf
    assert set(lb["depends_on"]) == replicas(scale)
    assert re.search(rf"^\s*listen\s+{EXPORTER_PORT};", nginx_conf, re.M)
    for header in ("Authorization", "Idempotency-Key"):
        variable = "$http_" + header.lower().replace("-", "_")
        assert f"proxy_set_header {header} {variable};" in nginx_conf
    assert "non_idempotent" not in nginx_conf  # a POST sent to a replica is never sent again


def scale_prometheus(config: dict) -> tuple[Path, dict]:
    """The Prometheus config file the scale stack runs, and its content."""
    prometheus = config["services"]["prometheus"]
    [option] = [arg for arg in prometheus["command"] if arg.startswith("--config.file=")]
    path = Path(option.split("=", 1)[1])
    directory = mounted(prometheus, str(path.parent))
    return directory / path.name, yaml.safe_load((directory / path.name).read_text())


def test_prometheus_scrapes_each_replica_with_the_base_rules_and_key(scale):
    path, config = scale_prometheus(scale)
    assert path.name == "prometheus.scale.yml"
    base = yaml.safe_load((path.parent / "prometheus.yml").read_text())
    assert config["rule_files"] == base["rule_files"]
    assert config["alerting"] == base["alerting"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    base_jobs = {job["job_name"]: job for job in base["scrape_configs"]}
    assert set(jobs) == set(base_jobs)
    carnil = jobs.pop("carnil")
    assert carnil["authorization"] == base_jobs.pop("carnil")["authorization"]
    assert carnil["authorization"]["credentials_file"] == METRICS_KEY_FILE
    assert jobs == base_jobs
    scraped = {target: group["labels"]["replica"] for group in carnil["static_configs"]
               for target in group["targets"]}
    # One target per replica, never the load balancer, each with a replica label of its own.
    assert sorted(scraped) == sorted(f"{name}:{EXPORTER_PORT}" for name in replicas(scale))
    assert len(set(scraped.values())) == len(scraped)


def test_promtool_checks_the_scale_prometheus_config(scale, tmp_path):
    path, _config = scale_prometheus(scale)
    assert "SUCCESS" in promtool_check_config(path, tmp_path)
