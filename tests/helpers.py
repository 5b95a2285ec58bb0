"""Assertions about what the store holds, shared by the tests."""

from __future__ import annotations

from sqlalchemy import func, select

from carnil_analytics import UsageTracker
from carnil_analytics.store.schema import credit_ledger, events, rollups_hour, totals


def count_rows(tracker: UsageTracker, table) -> int:
    with tracker.db.reading() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def assert_nothing_recorded(tracker: UsageTracker) -> None:
    """No event, rollup, total or ledger entry exists."""
    for table in (events, rollups_hour, totals, credit_ledger):
        assert count_rows(tracker, table) == 0, table.name
