"""A real Prometheus for the tests: Debian's ``prometheus`` on a free loopback port.

It scrapes its targets every second, authenticated by a ``metrics``-role key read from a file
(``authorization: {type: Bearer, credentials_file: ...}``), as the README tells operators to
set it up, and evaluates the rule files it is given every second. Queries go through
``/api/v1/query``; every wait is bounded. A missing ``prometheus`` binary FAILS the tests:
they are never skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import yaml

from servers import HOST, Server, free_port

START_TIMEOUT_SECONDS = 30.0
QUERY_TIMEOUT_SECONDS = 30.0  # a few scrape intervals of 1 s, with room for a slow machine
STOP_TIMEOUT_SECONDS = 10.0
Vector = dict[frozenset, float]


def prometheus_binary() -> str:
    path = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None)
    if path is None:
        pytest.fail("`prometheus` is not installed (not on PATH, not in /usr/bin): these tests "
                    "need a real Prometheus and are never skipped. Install it with "
                    "`apt-get install -y --no-install-recommends prometheus`.", pytrace=False)
    return path


class Prometheus:
    """One Prometheus process scraping ``targets`` every second with a bearer key from a file,
    evaluating ``rule_files`` every second."""

    def __init__(self, directory: Path, targets: list[str], key_file: Path,
                 rule_files: tuple[Path, ...] = ()):
        self.directory = directory
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.config_path = directory / "prometheus.yml"
        self.log_path = directory / "prometheus.log"
        self.config_path.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{
                "job_name": "carnil",
                "metrics_path": "/metrics",
                "authorization": {"type": "Bearer", "credentials_file": str(key_file)},
                "static_configs": [{"targets": targets}],
            }],
        }, sort_keys=False))
        self.process: subprocess.Popen | None = None
        self.session = requests.Session()
        self.session.trust_env = False  # never a proxy: traffic stays on 127.0.0.1

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [prometheus_binary(), f"--config.file={self.config_path}",
                 f"--storage.tsdb.path={self.directory / 'tsdb'}",
                 f"--web.listen-address={HOST}:{self.port}", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.directory, process_group=0)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"prometheus exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(requests.RequestException):
                if self.session.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        pytest.fail(f"prometheus was not ready within {START_TIMEOUT_SECONDS} s:\n{self.log()}")

    def stop(self) -> None:
        self.session.close()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() \
            else ""

    def query(self, promql: str) -> Vector:
        """An instant vector, keyed by its labels (without __name__, job and instance)."""
        answer = self.session.get(self.url + "/api/v1/query", params={"query": promql},
                                  timeout=5)
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "success", (promql, body)
        assert body["data"]["resultType"] == "vector", body
        return {frozenset((k, v) for k, v in item["metric"].items()
                          if k not in ("__name__", "job", "instance")): float(item["value"][1])
                for item in body["data"]["result"]}

    def wait_for(self, promql: str, expected: Vector | Callable[[Vector], bool]) -> Vector:
        """Poll ``promql`` until it returns ``expected`` (or satisfies it), or fail."""
        check = expected if callable(expected) else lambda got: _close(got, expected)
        deadline, got = time.monotonic() + QUERY_TIMEOUT_SECONDS, None
        while time.monotonic() < deadline:
            got = self.query(promql)
            if check(got):
                return got
            time.sleep(0.25)
        targets = self.session.get(self.url + "/api/v1/targets", timeout=5).json()
        pytest.fail(f"{promql!r} did not reach {expected!r} within {QUERY_TIMEOUT_SECONDS} s; "
                    f"last answer {got!r}; targets: {targets['data']['activeTargets']}; "
                    f"log:\n{self.log()}")


def _close(got: Vector, expected: Vector) -> bool:
    return got.keys() == expected.keys() and all(
        abs(got[k] - v) <= 1e-9 * max(1.0, abs(v)) for k, v in expected.items())


def labels(**pairs: str) -> frozenset:
    return frozenset(pairs.items())


@contextlib.contextmanager
def scraping(directory: Path, servers: list[Server],
             rule_files: tuple[Path, ...] = ()) -> Iterator[Prometheus]:
    """A started Prometheus scraping ``servers`` with a metrics-role key (created through the
    first, written to a file); stopped at the end."""
    prometheus_binary()
    answer = servers[0].post("/v1/keys", json={"role": "metrics"})
    assert answer.status_code == 201, answer.text
    key_file = directory / "carnil-metrics-key"
    key_file.write_text(answer.json()["key"] + "\n")
    key_file.chmod(0o600)
    prometheus = Prometheus(directory, [f"{HOST}:{server.port}" for server in servers],
                            key_file, rule_files)
    try:
        prometheus.start()
        yield prometheus
    finally:
        prometheus.stop()
