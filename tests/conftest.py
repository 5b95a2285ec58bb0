"""Shared fixtures: trackers on a real store, with a clock the test controls.

Every test that builds its trackers through ``make_tracker`` (or takes ``tracker``) runs twice:
on a SQLite file in its tmp dir, and on a database of its own in a real PostgreSQL server
started once per session. A test about one store only is marked ``sqlite_only`` or
``postgresql_only`` and is not generated for the other.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carnil_analytics import UsageTracker

from postgres_server import PgBouncer, PostgresServer

STORES = ("sqlite", "postgresql")


def pytest_configure(config):
    for store in STORES:
        config.addinivalue_line("markers", f"{store}_only: runs on the {store} store only")


def pytest_generate_tests(metafunc):
    if "store" in metafunc.fixturenames:
        wanted = [s for s in STORES
                  if not any(metafunc.definition.get_closest_marker(f"{other}_only")
                             for other in STORES if other != s)]
        metafunc.parametrize("store", wanted, indirect=True)


@pytest.fixture(scope="session")
def postgres():
    server = PostgresServer.launch()
    yield server
    server.close()


@pytest.fixture(scope="session")
def pgbouncer(postgres):
    """PgBouncer in transaction mode in front of the session's PostgreSQL."""
    bouncer = PgBouncer(postgres)
    yield bouncer
    bouncer.close()


@pytest.fixture
def store(request) -> str:
    """Which store the test runs on: "sqlite" or "postgresql"."""
    return request.param


@pytest.fixture
def database_url(store, request, tmp_path):
    """A factory of store URLs: one per name, fresh for this test, dropped after it."""
    if store == "sqlite":
        yield lambda name="carnil": f"sqlite:///{tmp_path / name}.db"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    made: dict[str, str] = {}

    def url(name: str = "carnil") -> str:
        if name not in made:
            made[name] = server.new_database()
        return server.url(made[name])

    yield url
    for database in made.values():
        server.drop_database(database)


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
def make_tracker(database_url, clock):
    """Build trackers on the test's store (several trackers share it like several processes;
    ``name`` gives another, separate store)."""
    made = []

    def make(config: dict | None = None, name: str = "carnil") -> UsageTracker:
        config = dict(config or {})
        config.setdefault("database", {"url": database_url(name)})
        tracker = UsageTracker(config, clock=clock)
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        tracker.close()


@pytest.fixture
def tracker(make_tracker) -> UsageTracker:
    return make_tracker()
