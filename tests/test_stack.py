"""The compose stack, checked without a Docker engine: docker-compose (1.29) validates the file,
and the parts users rely on are there (pinned images, named volumes, loopback ports, secrets
from .env, mounts that exist in the repository)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"exporter", "influxdb", "prometheus", "alertmanager", "grafana", "alert-webhook"}
STATEFUL = {"exporter", "influxdb", "prometheus", "alertmanager", "grafana"}


@pytest.fixture(scope="module")
def compose(tmp_path_factory) -> dict:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed (apt-get install docker-compose)")
    env_file = tmp_path_factory.mktemp("stack") / ".env"
    env_file.write_text((ROOT / ".env.example").read_text())
    done = subprocess.run([binary, "--env-file", str(env_file), "config"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_every_service_is_there_with_a_pinned_image(compose):
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        if name == "exporter":
            assert service["build"]
            continue
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), image


def test_ports_are_loopback_and_data_is_in_named_volumes(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            published = port if isinstance(port, str) else port.get("host_ip")
            assert str(published).startswith("127.0.0.1"), (name, port)
    named = set(compose["volumes"])
    for service in STATEFUL:
        sources = {source for source in map(_source, compose["services"][service]["volumes"])
                   if not source.startswith("/")}
        assert sources and sources <= named, service


def _source(volume) -> str:
    """The source of a volume, in the short ("src:dst:mode") or the long syntax."""
    return volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]


def test_mounted_repository_files_exist(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            if not _source(volume).startswith("/"):
                continue  # a named volume
            source = Path(_source(volume))
            if "secrets" in source.parts:
                continue  # written by scripts/init-stack, never committed
            assert source.exists(), (name, source)


def test_secrets_come_from_the_environment_file(compose):
    exporter = compose["services"]["exporter"]["environment"]
    example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert exporter["CARNIL_AUTH_ADMIN_KEY"] == example["CARNIL_ADMIN_KEY"]
    assert exporter["CARNIL_INFLUXDB_TOKEN"] == example["INFLUXDB_TOKEN"]
    compose_text = (ROOT / "docker-compose.yml").read_text()
    for secret in ("change-me", "token_urlsafe"):
        assert secret not in compose_text


def test_the_exporter_image_runs_unprivileged_with_a_healthcheck():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "\nUSER carnil" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert 'CMD ["serve"]' in dockerfile
