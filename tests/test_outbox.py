"""The outbox order and the shipping lease, on both stores.

The shipper here writes to a list (``helpers.ListWriter``: what InfluxDB does with points is
the business of ``test_influx.py``); what is tested is which events it ships, in which order,
and when.
"""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text, update

from carnil_analytics.config import InfluxDBSettings
from carnil_analytics.influx.shipper import LEASE, LeaseLost, Shipper
from carnil_analytics.store import outbox
from carnil_analytics.store.schema import leases

from helpers import ListWriter, shipped


def shipper(tracker, batch_size: int = 100) -> tuple[Shipper, ListWriter]:
    writer = ListWriter()
    return Shipper(tracker.db, InfluxDBSettings(batch_size=batch_size), writer), writer


def test_events_are_shipped_once_in_order(tracker):
    for i in range(7):
        tracker.track_usage("c1", "api", i + 1)
    first, writer = shipper(tracker, batch_size=3)
    assert [first.ship_batch() for _ in range(4)] == [3, 3, 1, 0]
    assert shipped(writer) == [i + 1 for i in range(7)]
    with tracker.db.reading() as conn:
        assert outbox.backlog(conn).events == 0


@pytest.mark.postgresql_only
def test_an_event_committed_late_is_not_overtaken(tracker, database_url):
    """A writer that took its sequence number first but commits last: the shipper must wait
    for it instead of shipping past it (a mark past it would skip it forever)."""
    engine = create_engine(database_url())
    slow = engine.connect()
    slow.execute(text(
        "INSERT INTO events (kind, customer_id, subject, ts_us, recorded_us, quantity, "
        "input_tokens, output_tokens, cached_tokens, cost_nanos, event_id) VALUES "
        "('usage', 'c1', 'api', 1, 1, 100, 0, 0, 0, 0, 'slow')"))  # not committed yet
    tracker.track_usage("c2", "api", 1)  # committed, with a later number
    ship, writer = shipper(tracker)
    assert ship.ship_batch() == 0  # "fast" waits for the transaction still in flight
    slow.commit()
    engine.dispose()
    assert ship.ship_batch() == 2
    assert shipped(writer) == [100, 1]
    assert ship.ship_batch() == 0


def test_a_holder_that_lost_its_lease_moves_nothing(tracker):
    tracker.track_usage("c1", "api", 1)
    stale, _ = shipper(tracker)
    successor, writer = shipper(tracker)
    assert stale._hold_lease()
    assert not successor._hold_lease()
    with tracker.db.writing() as conn:  # the stale holder stalls past its lease
        conn.execute(update(leases).where(leases.c.name == LEASE).values(expires_us=0))
    assert successor._hold_lease()
    with pytest.raises(LeaseLost):
        stale.ship_batch()
    with tracker.db.reading() as conn:
        assert outbox.read_mark(conn).position == outbox.START
    assert successor.ship_batch() == 1
    assert shipped(writer) == [1]
