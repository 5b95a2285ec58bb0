"""Atomic enforcement: concurrent enforced debits from threads and from processes sharing one
store (a SQLite file, or a PostgreSQL database) land exactly on the limit and the balance,
never past them."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from carnil_analytics import (
    CarnilError,
    InsufficientCredits,
    UsageLimit,
    UsageLimitExceeded,
    UsageTracker,
)
from carnil_analytics.store.schema import events

from helpers import count_rows

FIXED_NOW = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)


def attempt_debits(tracker: UsageTracker, customer: str, feature: str, attempts: int) -> dict:
    outcomes = {"ok": 0, "limit": 0, "credits": 0}
    for _ in range(attempts):
        try:
            tracker.track_usage(customer, feature, 1, enforce=True)
            outcomes["ok"] += 1
        except UsageLimitExceeded:
            outcomes["limit"] += 1
        except InsufficientCredits:
            outcomes["credits"] += 1
    return outcomes


def test_eight_threads_land_exactly_on_the_limit_and_the_balance(tracker):
    tracker.set_usage_limit("c1", UsageLimit("api", 100, "daily"))
    tracker.update_credit_balance("c2", "api", 60)
    with ThreadPoolExecutor(8) as pool:
        limited = list(pool.map(lambda _: attempt_debits(tracker, "c1", "api", 20), range(8)))
        credited = list(pool.map(lambda _: attempt_debits(tracker, "c2", "api", 15), range(8)))
    assert sum(o["ok"] for o in limited) == 100
    assert sum(o["limit"] for o in limited) == 60
    assert sum(o["ok"] for o in credited) == 60
    assert sum(o["credits"] for o in credited) == 60
    assert tracker.get_meter("c1", "api").remaining == 0
    assert tracker.get_credit_balance("c2", "api") == 0
    assert count_rows(tracker, events) == 160


def _process_worker(url: str, attempts: int, start, results) -> None:
    tracker = UsageTracker({"database": {"url": url}}, clock=lambda: FIXED_NOW)
    start.wait()
    try:
        results.put((attempt_debits(tracker, "c1", "api", attempts),
                     attempt_debits(tracker, "c2", "api", attempts)))
    except CarnilError as exc:  # surfaces in the parent's assertion instead of a hang
        results.put(repr(exc))
    finally:
        tracker.close()


def test_two_processes_sharing_one_store_land_exactly_on_the_limit(database_url):
    url = database_url("shared")
    setup = UsageTracker({"database": {"url": url}}, clock=lambda: FIXED_NOW)
    setup.set_usage_limit("c1", UsageLimit("api", 150, "monthly"))
    setup.update_credit_balance("c2", "api", 130)
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_process_worker, args=(url, 100, start, results))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert all(isinstance(o, tuple) for o in outcomes), outcomes
    assert sum(limited["ok"] for limited, _ in outcomes) == 150
    assert sum(credited["ok"] for _, credited in outcomes) == 130
    assert setup.get_meter("c1", "api").remaining == 0
    assert setup.get_credit_balance("c2", "api") == 0
    assert count_rows(setup, events) == 280
    setup.close()


def test_concurrent_replays_of_one_event_id_record_it_once(tracker):
    def send(_):
        return tracker.track_usage("c1", "api", 5, event_id="evt-race")

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(send, range(40)))
    assert outcomes.count(True) == 1 and outcomes.count(False) == 39
    assert count_rows(tracker, events) == 1
    assert tracker.get_meter("c1", "api").current == 5
