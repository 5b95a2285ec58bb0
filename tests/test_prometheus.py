"""A real Prometheus scraping the real service: PromQL over what ``serve`` exposes.

Known events go in over HTTP; PromQL (``prometheus_server.Prometheus``) must return the
expected usage totals, limit utilization, credit balance, tokens and ``carnil_up``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from prometheus_server import Prometheus, labels, prometheus_binary, scraping
from servers import Server, running_server

PRICING = {"features": {"api": {"unit_price": 0.002}},
           "models": {"gpt-4o": {"input_per_1k": 2.5, "output_per_1k": 10.0,
                                 "cached_input_per_1k": 1.25}}}


@contextlib.contextmanager
def scraped_service(tmp_path: Path, config: dict | None = None) -> Iterator[
        tuple[Server, Prometheus]]:
    """The real ``serve`` and a Prometheus scraping it with a metrics-role key from a file."""
    prometheus_binary()  # fail fast, before starting anything
    service_dir, prometheus_dir = tmp_path / "service", tmp_path / "prometheus"
    service_dir.mkdir()
    prometheus_dir.mkdir()
    config = {"pricing": PRICING, "cache": {"ttl": 0.5}} | (config or {})
    with running_server(service_dir, config) as server, \
            scraping(prometheus_dir, [server]) as prometheus:
        yield server, prometheus


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
