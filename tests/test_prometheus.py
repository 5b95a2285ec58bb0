"""A real Prometheus scraping the real service: PromQL over what ``serve`` exposes.

Debian's ``prometheus`` runs on a free loopback port with its TSDB in tmp and a 1 s scrape of
``/metrics`` authenticated by a ``metrics``-role key read from a file
(``authorization: {type: Bearer, credentials_file: ...}``), as the README tells operators to
set it up. Known events go in over HTTP; PromQL through ``/api/v1/query`` must return the
expected usage totals, limit utilization, credit balance, tokens and ``carnil_up``. Every wait
is bounded. A missing ``prometheus`` binary FAILS the tests: they are never skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import yaml

from servers import HOST, Server, free_port, running_server

START_TIMEOUT_SECONDS = 30.0
QUERY_TIMEOUT_SECONDS = 30.0  # a few scrape intervals of 1 s, with room for a slow machine
STOP_TIMEOUT_SECONDS = 10.0
PRICING = {"features": {"api": {"unit_price": 0.002}},
           "models": {"gpt-4o": {"input_per_1k": 2.5, "output_per_1k": 10.0,
                                 "cached_input_per_1k": 1.25}}}
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
    """One Prometheus process scraping ``target`` every second with a bearer key from a file."""

    def __init__(self, directory: Path, target: str, key_file: Path):
        self.directory = directory
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.config_path = directory / "prometheus.yml"
        self.log_path = directory / "prometheus.log"
        self.config_path.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "carnil",
                "metrics_path": "/metrics",
                "authorization": {"type": "Bearer", "credentials_file": str(key_file)},
                "static_configs": [{"targets": [target]}],
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
def scraped_service(tmp_path: Path, config: dict | None = None) -> Iterator[
        tuple[Server, Prometheus]]:
    """The real ``serve`` and a Prometheus scraping it with a metrics-role key from a file."""
    prometheus_binary()  # fail fast, before starting anything
    service_dir, prometheus_dir = tmp_path / "service", tmp_path / "prometheus"
    service_dir.mkdir()
    prometheus_dir.mkdir()
    config = {"pricing": PRICING, "cache": {"ttl": 0.5}} | (config or {})
    with running_server(service_dir, config) as server:
        answer = server.post("/v1/keys", json={"role": "metrics"})
        assert answer.status_code == 201, answer.text
        key_file = prometheus_dir / "carnil-metrics-key"
        key_file.write_text(answer.json()["key"] + "\n")
        key_file.chmod(0o600)
        prometheus = Prometheus(prometheus_dir, f"{HOST}:{server.port}", key_file)
        try:
            prometheus.start()
            yield server, prometheus
        finally:
            prometheus.stop()


def _ok(answer: requests.Response, status: int = 200) -> dict:
    assert answer.status_code == status, answer.text
    return answer.json() if answer.content else {}


def test_promql_answers_usage_limits_credits_tokens_and_up(tmp_path):
    with scraped_service(tmp_path) as (server, prometheus):
        # A daily limit whose period is centred on now: no reset can happen during the test.
        reset_at = (datetime.now(UTC) + timedelta(hours=12)).isoformat()
        _ok(server.put("/v1/customers/acme/features/api/limit",
                       json={"limit": 1000, "period": "daily", "reset_at": reset_at}))
        _ok(server.post("/v1/customers/acme/features/api/credits", json={"amount": 5000}))
        _ok(server.put("/v1/customers/beta/features/ai_cost/limit",
                       json={"limit": 20, "period": "monthly"}))
        events = [
            {"type": "usage", "customer_id": "acme", "feature_id": "api", "usage": 100},
            {"type": "usage", "customer_id": "acme", "feature_id": "api", "usage": 50,
             "cost": 1.5},
            {"type": "usage", "customer_id": "beta", "feature_id": "api", "usage": 7},
            {"type": "ai_usage", "customer_id": "beta", "model_id": "gpt-4o",
             "input_tokens": 1200, "output_tokens": 300, "cached_tokens": 800},  # cost 5.0
            {"type": "ai_usage", "customer_id": "beta", "model_id": "gpt-4o", "tokens": 900,
             "cost": 0.012},
        ]
        assert _ok(server.post("/v1/events", json=events)) == {"accepted": 5, "duplicates": 0}
        _ok(server.post("/v1/usage", json={"customer_id": "acme", "feature_id": "storage",
                                           "usage": 2.5}))

        prometheus.wait_for('up{job="carnil"}', {labels(): 1})
        prometheus.wait_for("carnil_up", {labels(): 1})
        prometheus.wait_for("carnil_usage_total", {
            labels(customer="acme", feature="api"): 150,
            labels(customer="acme", feature="storage"): 2.5,
            labels(customer="beta", feature="api"): 7})
        prometheus.wait_for("sum by (customer) (carnil_usage_cost_total)", {
            labels(customer="acme"): 1.7, labels(customer="beta"): 0.014})
        prometheus.wait_for(
            'carnil_usage_limit_utilization_ratio{customer="acme", feature="api"}',
            {labels(customer="acme", feature="api"): 0.15})
        prometheus.wait_for('carnil_usage_limit_utilization_ratio{feature="ai_cost"}',
                            {labels(customer="beta", feature="ai_cost"): 5.012 / 20})
        prometheus.wait_for("carnil_credit_balance", {
            labels(customer="acme", feature="api"): 4850})
        prometheus.wait_for(
            'sum by (customer, model) '
            '(carnil_ai_tokens_total{token_type=~"input|output|unspecified"})',
            {labels(customer="beta", model="gpt-4o"): 1500 + 900})
        prometheus.wait_for("carnil_ai_cost_total", {
            labels(customer="beta", model="gpt-4o"): 5.012})
        prometheus.wait_for("carnil_exporter_customers_folded", {labels(): 0})
        # The self metrics of every worker process, summed by the one that answers the scrape.
        prometheus.wait_for('sum by (type) (carnil_events_ingested_total{outcome="accepted"})',
                            {labels(type="usage"): 4, labels(type="ai_usage"): 2})

        # More usage shows up at the next scrapes; the counter only grows.
        _ok(server.post("/v1/usage", json={"customer_id": "acme", "feature_id": "api",
                                           "usage": 350}))
        prometheus.wait_for('carnil_usage_total{customer="acme", feature="api"}',
                            {labels(customer="acme", feature="api"): 500})
        prometheus.wait_for(
            'carnil_usage_limit_utilization_ratio{customer="acme", feature="api"}',
            {labels(customer="acme", feature="api"): 0.5})
        prometheus.wait_for('carnil_usage_remaining{customer="acme"}',
                            {labels(customer="acme", feature="api"): 500})
        prometheus.wait_for("carnil_credit_balance", {
            labels(customer="acme", feature="api"): 4500})
        prometheus.wait_for(
            'resets(carnil_usage_total{customer="acme", feature="api"}[1m])',
            {labels(customer="acme", feature="api"): 0})


def test_promql_sees_carnil_up_0_while_the_store_cannot_be_read(tmp_path):
    with scraped_service(tmp_path) as (server, prometheus):
        _ok(server.post("/v1/usage", json={"customer_id": "acme", "feature_id": "api",
                                           "usage": 3}))
        prometheus.wait_for('carnil_usage_total{customer="acme"}',
                            {labels(customer="acme", feature="api"): 3})
        prometheus.wait_for("carnil_up", {labels(): 1})

        # Break the store for real: the table the counters come from disappears.
        conn = sqlite3.connect(server.db_path)
        try:
            conn.execute("ALTER TABLE totals RENAME TO totals_away")
            conn.commit()
            # The target still answers (up 1), but says it cannot read the store.
            prometheus.wait_for("carnil_up", {labels(): 0})
            prometheus.wait_for('up{job="carnil"}', {labels(): 1})
        finally:
            conn.execute("ALTER TABLE totals_away RENAME TO totals")
            conn.commit()
            conn.close()
        prometheus.wait_for("carnil_up", {labels(): 1})
        prometheus.wait_for('carnil_usage_total{customer="acme"}',
                            {labels(customer="acme", feature="api"): 3})
