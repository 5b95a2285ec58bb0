"""The store: schema versioning, durability across reopen, WAL mode, pruning, store errors."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, select, text

from carnil_analytics import ConfigError, StorageUnavailable, UsageLimit, UsageTracker
from carnil_analytics.store.database import MIGRATIONS
from carnil_analytics.store.schema import events, rollups_minute, schema_version

from helpers import count_rows


def test_schema_is_versioned_and_reopening_keeps_everything(make_tracker, tmp_path):
    first = make_tracker()
    first.track_usage("c1", "api", 5, cost=0.5)
    first.set_usage_limit("c1", UsageLimit("api", 10, "daily"))
    first.update_credit_balance("c1", "api", 20)
    first.close()
    again = make_tracker()
    with again.db.reading() as conn:
        assert conn.execute(select(schema_version.c.version)).scalars().all() == \
            [len(MIGRATIONS)]
    meter = again.get_meter("c1", "api")
    assert (meter.current, meter.remaining, meter.credit_balance) == (5, 5, 20)


@pytest.mark.sqlite_only
def test_sqlite_runs_in_wal_mode(tracker, tmp_path):
    tracker.track_usage("c1", "api", 1)
    with tracker.db.reading() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    assert sqlite3.connect(tmp_path / "carnil.db").execute(
        "PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.sqlite_only
def test_synchronous_is_normal_by_default_and_full_on_request(make_tracker, tmp_path):
    with make_tracker().db.reading() as conn:
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
    full = make_tracker({"database": {"url": f"sqlite:///{tmp_path / 'full.db'}",
                                      "synchronous": "full"}})
    with full.db.reading() as conn:
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL


def test_a_newer_schema_is_refused(make_tracker):
    tracker = make_tracker()
    with tracker.db.engine.begin() as conn:
        conn.execute(text("UPDATE schema_version SET version = 999"))
    tracker.close()
    with pytest.raises(StorageUnavailable, match="newer than this release"):
        make_tracker()


def test_sequence_numbers_only_increase(tracker, clock):
    tracker.track_usage("c1", "api", 1, timestamp=clock.now - timedelta(days=34))
    tracker.track_usage("c1", "api", 1)
    clock.advance(days=2)
    tracker.prune()
    tracker.track_usage("c1", "api", 1)
    with tracker.db.reading() as conn:
        seqs = conn.execute(select(events.c.seq).order_by(events.c.seq)).scalars().all()
    assert seqs == [2, 3]  # the pruned event's number is never reused


def test_pruning_keeps_reports_and_limits(tracker, clock):
    tracker.track_usage("c1", "api", 7, timestamp=clock.now - timedelta(days=30))
    tracker.track_usage("c1", "api", 3)
    clock.advance(days=10)
    assert tracker.prune() == 1
    assert count_rows(tracker, events) == 1
    assert count_rows(tracker, rollups_minute) == 0  # minute rollups are kept for 2 days
    report = tracker.reports.customer_report("c1", "year")
    assert report.summary.total_usage == 10  # hour rollups are kept


def test_pruning_runs_by_itself_on_the_write_path(tracker, clock):
    tracker.track_usage("c1", "api", 1, timestamp=clock.now - timedelta(days=34, hours=23))
    clock.advance(hours=2)
    tracker.track_usage("c1", "api", 1)  # first write of this tracker prunes
    assert count_rows(tracker, events) == 1


# Another client holding what a write needs: SQLite's write lock, or PostgreSQL's lock on the
# events table.
HOLD_THE_WRITE_LOCK = {"sqlite": "BEGIN IMMEDIATE",
                       "postgresql": "BEGIN; LOCK TABLE events IN EXCLUSIVE MODE"}


def test_a_store_locked_too_long_is_unavailable_and_recovers(make_tracker, database_url, store):
    tracker = make_tracker({"database": {"url": database_url(),
                                         "busy_timeout_seconds": 0.2}})
    tracker.track_usage("c1", "api", 1)
    other = create_engine(database_url()).connect()
    other.exec_driver_sql(HOLD_THE_WRITE_LOCK[store])
    with pytest.raises(StorageUnavailable, match="locked|lock timeout"):
        tracker.track_usage("c1", "api", 1)
    other.rollback()
    other.close()
    assert tracker.track_usage("c1", "api", 1)
    assert count_rows(tracker, events) == 2


def test_an_unopenable_store_is_unavailable(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("file")
    with pytest.raises(StorageUnavailable, match="cannot open the store"):
        UsageTracker({"database": {"url": f"sqlite:///{blocker}/carnil.db"}})


def test_an_older_schema_is_upgraded_in_place(tmp_path, clock):
    from sqlalchemy import create_engine, insert

    from carnil_analytics.store import database

    path = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:  # a store as release 1 left it, with one event in it
        schema_version.create(conn)
        database.MIGRATIONS[0](conn)
        conn.execute(insert(schema_version).values(version=1))
        conn.execute(insert(events).values(
            kind="usage", customer_id="c1", subject="api", ts_us=1, recorded_us=1,
            quantity=7.0, input_tokens=0, output_tokens=0, cached_tokens=0, cost_nanos=0))
    engine.dispose()
    tracker = UsageTracker({"database": {"url": f"sqlite:///{path}"}}, clock=clock)
    with tracker.db.reading() as conn:
        assert conn.execute(select(schema_version.c.version)).scalar() == len(MIGRATIONS)
        assert conn.execute(text("SELECT count(*) FROM api_keys")).scalar() == 0
        assert conn.execute(select(events.c.quantity)).scalars().all() == [7.0]
    tracker.close()


def test_a_postgresql_url_without_its_driver_names_the_extra():
    with pytest.raises(ConfigError, match=r"No module named 'pg8000'.*"
                                          r"carnil-analytics\[postgresql\].*postgresql\+psycopg"):
        UsageTracker({"database": {"url": "postgresql+pg8000://carnil@127.0.0.1:1/carnil"}})
