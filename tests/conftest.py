"""Shared fixtures: trackers on real SQLite files in tmp dirs, with a clock the test controls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carnil_analytics import UsageTracker


class Clock:
    """A settable clock: trackers call it for "now"."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Clock:
    # A Wednesday in mid-March, midday UTC: far from every period boundary unless a test moves it.
    return Clock(datetime(2026, 3, 18, 12, 0, tzinfo=UTC))


@pytest.fixture
def make_tracker(tmp_path, clock):
    """Build trackers on one SQLite file (several trackers share it like several processes)."""
    made = []

    def make(config: dict | None = None, path=None) -> UsageTracker:
        config = dict(config or {})
        config.setdefault("database", {"url": f"sqlite:///{path or tmp_path / 'carnil.db'}"})
        tracker = UsageTracker(config, clock=clock)
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        tracker.close()


@pytest.fixture
def tracker(make_tracker) -> UsageTracker:
    return make_tracker()
