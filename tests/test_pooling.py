"""The store behind PgBouncer in transaction mode (``database.transaction_pooling``).

Every transaction may run on another server connection of a pool far smaller than the
clients (``PgBouncer.POOL_SIZE``), so nothing may rely on session state: two trackers and
eight threads each run every kind of write and read many times over (far more than psycopg's
five runs before it would prepare a statement on the server) and the store must come out
exact. The two-replica scenarios run through PgBouncer too (``test_replicas.py``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from carnil_analytics import (
    ConfigError,
    InsufficientCredits,
    StorageUnavailable,
    UsageLimit,
    UsageLimitExceeded,
    UsageTracker,
)
from carnil_analytics.analytics import CarnilAnalytics
from carnil_analytics.config import InfluxDBSettings
from carnil_analytics.influx.shipper import Shipper
from carnil_analytics.store.schema import events

from helpers import ListWriter, count_rows
from postgres_server import PgBouncer

THREADS, ROUNDS = 8, 40


@pytest.fixture
def database(postgres):
    """A fresh database of the session's PostgreSQL, dropped after the test."""
    name = postgres.new_database()
    yield name
    postgres.drop_database(name)


@pytest.fixture
def pooled(database, pgbouncer, clock):
    """A factory of trackers on the test's database, reached through PgBouncer."""
    made = []

    def make() -> UsageTracker:
        made.append(UsageTracker({"database": {"url": pgbouncer.url(database),
                                               "transaction_pooling": True}}, clock=clock))
        return made[-1]

    yield make
    for tracker in made:
        tracker.close()


def test_every_operation_through_pgbouncer_comes_out_exact(pooled):
    first, second = pooled(), pooled()
    first.set_usage_limit("limited", UsageLimit("api", 100, "monthly"))
    second.add_credits("credited", "api", 60)

    def client(index: int) -> dict[str, int]:
        tracker = (first, second)[index % 2]
        outcomes = {"limited": 0, "credited": 0}
        for n in range(ROUNDS):
            for customer, refusal in (("limited", UsageLimitExceeded),
                                      ("credited", InsufficientCredits)):
                try:
                    tracker.track_usage(customer, "api", 1, enforce=True)
                    outcomes[customer] += 1
                except refusal:
                    pass
            tracker.track_ai_usage("ai", "gpt-4o", input_tokens=10, output_tokens=5, cost=0.01)
            tracker.track_events([  # the same ids from every thread: recorded once
                {"type": "usage", "customer_id": "batch", "feature_id": "api", "usage": 2,
                 "event_id": f"round-{n}-{k}"} for k in range(3)])
            tracker.check_usage("limited", "api", 1)
            tracker.get_meter("credited", "api")
        return outcomes

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(client, range(THREADS)))

    assert sum(o["limited"] for o in outcomes) == 100
    assert sum(o["credited"] for o in outcomes) == 60
    assert first.get_meter("limited", "api").remaining == 0
    assert second.get_credit_balance("credited", "api") == 0
    assert count_rows(first, events) == 100 + 60 + THREADS * ROUNDS + ROUNDS * 3

    report = CarnilAnalytics(second).get_customer_report("batch")
    assert report.summary.total_usage == ROUNDS * 3 * 2
    ai = second.get_ai_usage_metrics("ai")
    assert sum(bucket.tokens for bucket in ai) == THREADS * ROUNDS * 15

    writer = ListWriter()
    assert Shipper(first.db, InfluxDBSettings(batch_size=97), writer).ship_all() == \
        count_rows(first, events)
    assert len(writer.lines) == count_rows(first, events)
    assert sum(",customer=batch," in line for line in writer.lines) == ROUNDS * 3


def test_a_pgbouncer_url_without_transaction_pooling_names_the_setting(database, pgbouncer):
    with pytest.raises(StorageUnavailable, match="database.transaction_pooling"):
        UsageTracker({"database": {"url": pgbouncer.url(database)}})


def test_transaction_pooling_is_refused_for_sqlite(tmp_path):
    with pytest.raises(ConfigError, match="database.transaction_pooling: only for a PostgreSQL"):
        UsageTracker({"database": {"url": f"sqlite:///{tmp_path / 'c.db'}",
                                   "transaction_pooling": True}})


def test_write_transactions_through_pgbouncer_wait_for_locks_a_bounded_time(database,
                                                                            pgbouncer):
    """The lock timeout cannot be a startup option behind PgBouncer; each write transaction
    sets it for itself, so it holds on whichever server session the transaction gets."""
    with UsageTracker({"database": {"url": pgbouncer.url(database),
                                    "transaction_pooling": True,
                                    "busy_timeout_seconds": 2.5}}) as tracker:
        for _ in range(3 * PgBouncer.POOL_SIZE):
            with tracker.db.writing() as conn:
                assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "2500ms"
        with tracker.db.reading() as conn:  # and it does not leak onto the pooled sessions
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "0"
