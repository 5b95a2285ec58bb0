"""``carnil-analytics store copy``: a whole store into an empty one of the other kind (SQLite →
PostgreSQL, and back), checked through the library on the copy: reports, meters, limits,
credits and the ledger, keys, idempotency, labels, the mirror's mark, and sequence numbers
that carry on above the copied ones."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml
from sqlalchemy import select

from carnil_analytics import UsageLimit, UsageTracker
from carnil_analytics.influx.shipper import Shipper
from carnil_analytics.store import keys, labels, outbox
from carnil_analytics.store.schema import credit_ledger, events

from helpers import ListWriter, shipped
from servers import run_cli


@pytest.fixture
def other_store_url(store, postgres, tmp_path):
    """An empty store of the other kind than the test's."""
    if store == "postgresql":
        yield f"sqlite:///{tmp_path / 'copy.db'}"
        return
    database = postgres.new_database()
    yield postgres.url(database)
    postgres.drop_database(database)


def first_event(clock) -> dict:
    return {"type": "usage", "customer_id": "acme", "feature_id": "api", "usage": 30,
            "event_id": "e1", "timestamp": clock.now - timedelta(hours=2)}


def fill(tracker: UsageTracker, clock) -> str:
    """Some of everything; the key it created."""
    tracker.set_usage_limit("acme", UsageLimit("api", 100, "daily"))
    tracker.update_credit_balance("acme", "sms", 50, reason="welcome")
    tracker.track_events([
        first_event(clock),
        {"type": "usage", "customer_id": "acme", "feature_id": "sms", "usage": 8,
         "event_id": "e2", "cost": 0.4},
        {"type": "ai_usage", "customer_id": "beta", "model_id": "gpt-4o", "input_tokens": 900,
         "output_tokens": 100, "cost": 0.25, "event_id": "e3"}])
    with tracker.db.writing() as conn:
        return keys.create_key(conn, "read", None, clock.now).key


def state(tracker: UsageTracker) -> dict:
    """What a user sees of the store."""
    with tracker.db.reading() as conn:
        ledger = conn.execute(select(credit_ledger.c.amount, credit_ledger.c.reason)).all()
        first_seen = labels.first_seen(conn, 1)
    return {
        "first_seen": first_seen,
        "report": tracker.reports.customer_report("acme", "week").summary,
        "ai": tracker.reports.customer_report("beta", "week").summary,
        "api": tracker.get_meter("acme", "api"),
        "sms": tracker.get_meter("acme", "sms"),
        "limit": tracker.get_usage_limit("acme", "api"),
        "ledger": [tuple(row) for row in ledger],
    }


def test_a_store_copied_to_the_other_kind_carries_on_where_it_was(make_tracker, clock,
                                                                  other_store_url, tmp_path):
    source = make_tracker()
    key = fill(source, clock)
    shipper = Shipper(source.db, source.settings.influxdb, ListWriter())
    assert shipper.ship_batch() == 3  # the mirror has shipped these three
    source.track_usage("acme", "api", 5, event_id="e4")  # and not this one yet
    before = state(source)
    config = tmp_path / "carnil.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": source.settings.database.url
                                                   .get_secret_value()}}))
    source.close()

    copied = run_cli(config, "store", "copy", "--to", other_store_url)
    assert copied.returncode == 0, copied.stderr
    assert "copied " in copied.stdout and "events" in copied.stdout

    copy = make_tracker({"database": {"url": other_store_url}})
    assert state(copy) == before
    with copy.db.reading() as conn:
        assert keys.verify_key(conn, key).role == "read"  # keys work on the copy
    assert copy.track_events([first_event(clock)]).duplicates == 1  # a replay, still
    assert copy.track_usage("acme", "api", 1, event_id="e5") is True
    with copy.db.reading() as conn:
        seqs = conn.execute(select(events.c.seq).order_by(events.c.seq)).scalars().all()
        assert seqs == [1, 2, 3, 4, 5]  # numbers carry on above the copied ones
        assert outbox.read_mark(conn).position == (0, 3)
    writer = ListWriter()
    assert Shipper(copy.db, copy.settings.influxdb, writer).ship_batch() == 2
    assert shipped(writer) == [5.0, 1.0]  # the unshipped e4, then e5: nothing skipped


def test_copying_into_a_store_with_data_is_refused(make_tracker, clock, other_store_url,
                                                   tmp_path):
    source = make_tracker()
    fill(source, clock)
    target = make_tracker({"database": {"url": other_store_url}})
    target.track_usage("someone", "api", 1)
    config = tmp_path / "carnil.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": source.settings.database.url
                                                   .get_secret_value()}}))
    refused = run_cli(config, "store", "copy", "--to", other_store_url)
    assert refused.returncode == 2
    assert "not empty" in refused.stderr and "Traceback" not in refused.stderr
    assert state(target)["report"].total_usage == 0  # nothing written
    with target.db.reading() as conn:
        assert conn.execute(select(events.c.customer_id)).scalars().all() == ["someone"]
