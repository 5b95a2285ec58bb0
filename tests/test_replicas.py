"""Two real ``serve`` replicas on one real PostgreSQL, as behind a load balancer; each
scenario runs with the replicas connected directly and through PgBouncer in transaction mode.

- enforced debits split across both replicas land exactly on a limit and a balance;
- one idempotency key sent to both records one event;
- killing the replica that ships to InfluxDB hands shipping to the other, and InfluxDB ends up
  with every event exactly once;
- both replicas' ``/metrics`` give the same business series (they come from the store), and
  a real Prometheus scraping both with the shipped recording rules counts each value once.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select

from carnil_analytics.metrics.families import business
from carnil_analytics.store.schema import events, leases

import influx_servers
from influx_servers import InfluxDB1, wait_until
from monitoring import RULES
from postgres_server import PgBouncer, PostgresServer
from prometheus_server import labels, scraping
from servers import Server, group_pids

influxd = influx_servers.influxd
ENFORCE = {"enforce": "true"}
CLIENTS = 50
LEASE_TAKEOVER_SECONDS = 60  # the dead holder's lease (15 s) runs out, then the next claims it


@pytest.fixture(params=["direct", "pgbouncer"])
def route(request) -> PgBouncer | None:
    """How the replicas reach PostgreSQL: directly, or through PgBouncer in transaction mode."""
    return request.getfixturevalue("pgbouncer") if request.param == "pgbouncer" else None


@contextlib.contextmanager
def two_replicas(tmp_path: Path, postgres: PostgresServer, config: dict | None = None,
                 route: PgBouncer | None = None) -> Iterator[tuple[Server, Server, str]]:
    """Two started services sharing one fresh PostgreSQL database (reached through ``route``
    if given) and one admin key; the database's direct URL. Both are stopped at the end
    whatever happens."""
    database = postgres.new_database()
    url = postgres.url(database)
    config = config or {}
    store = {**config.get("database", {}), "url": url}
    if route is not None:
        store.update(url=route.url(database), transaction_pooling=True)
    shared = {**config, "database": store, "cache": {"ttl": 0}}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first = Server(tmp_path / "a", {**shared})
    second = Server(tmp_path / "b", {**shared, "auth": {"admin_key": first.admin_key}})
    try:
        first.start()
        second.start()
        yield first, second, url
    finally:
        first.stop()
        second.stop()
        postgres.drop_database(database)


def split_across(replicas: tuple[Server, Server], send) -> list:
    """``CLIENTS`` requests at once, alternating between the replicas; every answer."""
    start = threading.Barrier(CLIENTS)

    def one(index: int):
        start.wait(timeout=30)
        return send(replicas[index % 2], index)

    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(one, range(CLIENTS)))


def stored(url: str, customer: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(events)
                                .where(events.c.customer_id == customer)).scalar()
    finally:
        engine.dispose()


def test_enforced_debits_split_across_replicas_fit_the_limit_and_the_balance(tmp_path,
                                                                             postgres, route):
    with two_replicas(tmp_path, postgres, route=route) as (a, b, url):
        assert a.put("/v1/customers/lim/features/api/limit",
                     json={"limit": 30, "period": "monthly"}).status_code == 200
        assert b.post("/v1/customers/cred/features/api/credits",
                      json={"amount": 25}).status_code == 200

        for customer, accepted, refused in (("lim", 30, 429), ("cred", 25, 402)):
            answers = split_across((a, b), lambda server, _i, c=customer: server.post(
                "/v1/usage", params=ENFORCE,
                json={"customer_id": c, "feature_id": "api", "usage": 1}).status_code)
            assert Counter(answers) == {200: accepted, refused: CLIENTS - accepted}, answers
            assert stored(url, customer) == accepted

        for server in (a, b):
            meter = server.get("/v1/customers/lim/features/api/meter").json()
            assert (meter["current"], meter["remaining"]) == (30, 0), meter
            assert server.get("/v1/customers/cred/features/api/credits").json() == \
                {"balance": 0, "credit_metered": True}


def test_one_idempotency_key_sent_to_both_replicas_records_once(tmp_path, postgres, route):
    with two_replicas(tmp_path, postgres, route=route) as (a, b, url):
        answers = split_across((a, b), lambda server, _i: server.post(
            "/v1/usage", headers={"Idempotency-Key": "both-replicas"},
            json={"customer_id": "idem", "feature_id": "api", "usage": 5}))
        assert [answer.status_code for answer in answers] == [200] * CLIENTS
        assert Counter(answer.json()["recorded"] for answer in answers) == \
            {True: 1, False: CLIENTS - 1}
        assert stored(url, "idem") == 1
        for server in (a, b):
            assert server.get("/v1/customers/idem/features/api/meter").json()["current"] == 5


def business_series(server: Server) -> dict[tuple, float]:
    """The store-backed series of a replica's /metrics (its self metrics are its own)."""
    text = server.get("/metrics").text
    names = set(business("USD"))
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) if family.name in names
            for sample in family.samples}


def test_both_replicas_export_the_same_business_metrics(tmp_path, postgres, route):
    with two_replicas(tmp_path, postgres, route=route) as (a, b, _url):
        a.put("/v1/customers/acme/features/api/limit", json={"limit": 100, "period": "daily"})
        b.post("/v1/customers/acme/features/sms/credits", json={"amount": 50})
        for index, server in enumerate((a, b, a, b)):
            answer = server.post("/v1/events", json=[
                {"type": "usage", "customer_id": "acme", "feature_id": "api", "usage": 3},
                {"type": "usage", "customer_id": "acme", "feature_id": "sms", "usage": 2},
                {"type": "ai_usage", "customer_id": f"team-{index}", "model_id": "gpt-4o",
                 "input_tokens": 100, "output_tokens": 20, "cost": 0.25}])
            assert answer.status_code == 200, answer.text
        first, second = business_series(a), business_series(b)
        assert first == second
        assert first[("carnil_usage_total", (("customer", "acme"), ("feature", "api")))] == 12
        assert first[("carnil_credit_balance", (("customer", "acme"), ("feature", "sms")))] == 42


def test_prometheus_scraping_both_replicas_counts_each_value_once(tmp_path, postgres):
    with two_replicas(tmp_path, postgres) as (a, b, _url):
        a.put("/v1/customers/acme/features/api/limit", json={"limit": 100, "period": "daily"})
        b.post("/v1/customers/acme/features/sms/credits", json={"amount": 50})
        a.post("/v1/usage", json={"customer_id": "acme", "feature_id": "api", "usage": 40})
        b.post("/v1/usage", json={"customer_id": "acme", "feature_id": "sms", "usage": 8})
        directory = tmp_path / "prometheus"
        directory.mkdir()
        with scraping(directory, [a, b], rule_files=(RULES,)) as prometheus:
            api, sms = labels(customer="acme", feature="api"), labels(customer="acme",
                                                                      feature="sms")
            # Both replicas are scraped and export the same series...
            prometheus.wait_for("count by (customer, feature) (carnil_credit_balance)",
                                {sms: 2})
            # ...so summing them would double it; the shipped rules take the max.
            assert prometheus.query("sum by (customer, feature) (carnil_credit_balance)") == \
                {sms: 84}
            prometheus.wait_for("customer_feature:carnil_credit_balance:max", {sms: 42})
            prometheus.wait_for("customer_feature:carnil_usage_limit_utilization_ratio:max",
                                {api: 0.4})
            prometheus.wait_for("customer_feature:carnil_usage_remaining:max", {api: 60})


def shipping_replica(url: str, replicas: tuple[Server, Server]) -> Server | None:
    """The replica whose shipper holds the lease (its holder names the shipper's pid)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            holder = conn.execute(select(leases.c.holder)).scalar()
    finally:
        engine.dispose()
    if holder is None:
        return None
    pid = int(holder.split(":")[1])
    return next((s for s in replicas if pid in group_pids(s.process.pid)), None)


def post_batches(server: Server, first: int, last: int, size: int = 500) -> None:
    for start in range(first, last, size):
        answer = server.post("/v1/events", json=[
            {"type": "usage", "id": f"ev-{i}", "customer_id": f"cust-{i % 5}",
             "feature_id": "api", "usage": float(i + 1)}
            for i in range(start, min(start + size, last))])
        assert answer.status_code == 200, answer.text


def test_killing_the_shipping_replica_hands_shipping_to_the_other(tmp_path, postgres, route,
                                                                  influxd: InfluxDB1):
    before, after = 10_000, 2_000
    config = {"influxdb": influxd.client_config(flush_interval_seconds=0.2, batch_size=250,
                                                max_backoff_seconds=1.0, timeout_seconds=2.0),
              "server": {"graceful_timeout_seconds": 2}}
    with two_replicas(tmp_path, postgres, config, route) as (a, b, url):
        influxd.stop()  # a backlog builds up, so the kill lands mid-shipping
        post_batches(a, 0, before // 2)
        post_batches(b, before // 2, before)
        shipper = wait_until(lambda: shipping_replica(url, (a, b)), 30,
                             "no replica took the shipping lease")
        influxd.start()
        wait_until(lambda: influxd.count_and_sum()[0] > 0, 30,
                   "the shipping replica did not start shipping after influxd came back",
                   interval=0.01)
        shipper.kill()
        survivor = b if shipper is a else a
        shipped_at_kill = influxd.count_and_sum()[0]
        assert shipped_at_kill < before, "the kill came after everything was shipped"

        post_batches(survivor, before, before + after)
        wait_until(lambda: shipping_replica(url, (survivor,)) is survivor,
                   LEASE_TAKEOVER_SECONDS, "the surviving replica never took over shipping")
        total = before + after
        wait_until(lambda: influxd.count_and_sum()[0] == total, LEASE_TAKEOVER_SECONDS,
                   lambda: f"{influxd.count_and_sum()[0]} of {total} events in InfluxDB")
    count, summed = influxd.count_and_sum()
    assert (count, summed) == (total, total * (total + 1) // 2)
    per_customer = influxd.query("SELECT count(quantity) FROM usage GROUP BY customer")
    assert sorted(r["count"] for r in per_customer) == [total // 5] * 5


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, which it may stop and start."""
    server = PostgresServer.launch()
    yield server
    server.close()


def test_a_postgresql_outage_answers_503_and_both_replicas_recover(tmp_path, own_postgres):
    usage = {"customer_id": "acme", "feature_id": "api", "usage": 1}
    with two_replicas(tmp_path, own_postgres, {"database": {"busy_timeout_seconds": 2}}) \
            as (a, b, url):
        for server in (a, b):
            assert server.post("/v1/usage", json=usage).status_code == 200
        own_postgres.stop()
        for server in (a, b):
            refused = server.post("/v1/usage", json=usage)
            assert refused.status_code == 503, refused.text
            assert refused.headers["Content-Type"] == "application/problem+json"
            assert int(refused.headers["Retry-After"]) > 0
            assert server.get("/readyz").status_code == 503
            assert server.get("/healthz").status_code == 200
        own_postgres.start()  # same data, same port: the replicas reconnect by themselves
        for server in (a, b):
            wait_until(lambda s=server: s.get("/readyz").status_code == 200, 30,
                       "a replica did not become ready after PostgreSQL came back")
            assert server.post("/v1/usage", json=usage).status_code == 200
        assert stored(url, "acme") == 4  # the two acknowledged before and the two after
        assert a.get("/v1/customers/acme/features/api/usage?period=day").status_code == 200
