"""The store behind PgBouncer in transaction mode (``database.transaction_pooling``) against
the same PostgreSQL reached directly.

Transaction pooling turns off psycopg's server-side prepared statements (a pooled
transaction may land on a server session that never saw the statement) and adds a hop
through PgBouncer; this measures what that costs, single events and 1,000-event batches, on
one database of the test suite's PostgreSQL (``tests/postgres_server.py``, durability off)
with the suite's PgBouncer in front (4 server connections). The two trackers take turns
run by run, so drift hits both. Reported, not judged: the gain of pooling is connections,
not speed.

Alone: ``python -m benchmarks.pooling [--quick] [--runs N]``.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from carnil_analytics import UsageTracker

from .harness import RATIO_NOTE, Plan, Result, plan_of, plan_parser, say, seconds, text_table
from .ingest import BATCH_SIZE, METERS, mixed_batch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgres_server import PgBouncer, PostgresServer  # noqa: E402

Workload = Callable[[UsageTracker], float]  # events/s of one run on a tracker


def transaction_pooling(plan: Plan) -> list[Result]:
    """``track_usage`` and ``track_events`` through PgBouncer vs directly on PostgreSQL."""
    single_events, batches = plan.pick(1500, 20), plan.pick(10, 2)
    batch = mixed_batch()

    def one_by_one(tracker: UsageTracker) -> float:
        def run() -> None:
            for i in range(single_events):
                tracker.track_usage(*METERS[i % len(METERS)], 1.0)
        return single_events / seconds(run)

    def in_batches(tracker: UsageTracker) -> float:
        def run() -> None:
            for _ in range(batches):
                tracker.track_events(batch)
        return batches * BATCH_SIZE / seconds(run)

    with ExitStack() as stack:
        postgres = PostgresServer.launch()
        stack.callback(postgres.close)
        bouncer = PgBouncer(postgres)
        stack.callback(bouncer.close)
        database = postgres.new_database()
        stack.callback(postgres.drop_database, database)
        direct = stack.enter_context(UsageTracker({"database": {"url": postgres.url(database)}}))
        pooled = stack.enter_context(UsageTracker({"database": {
            "url": bouncer.url(database), "transaction_pooling": True}}))
        for tracker in (direct, pooled):  # warm-up: connections, customers known
            tracker.track_events(batch)
        through = "PostgreSQL through PgBouncer (transaction mode)"
        return [_compare(plan, f"track_usage, one event per call, {through}", one_by_one,
                         direct, pooled),
                _compare(plan, f"track_events, batches of {BATCH_SIZE:,}, {through}",
                         in_batches, direct, pooled)]


def _compare(plan: Plan, name: str, workload: Workload, direct: UsageTracker,
             pooled: UsageTracker) -> Result:
    """The median events/s of ``workload`` through the pooler, against directly."""
    direct_runs, pooled_runs = [], []
    for _ in range(plan.runs):  # in turns, so drift hits both
        direct_runs.append(workload(direct))
        pooled_runs.append(workload(pooled))
    ours, baseline = statistics.median(pooled_runs), statistics.median(direct_runs)
    say(f"{name}: {ours:,.0f} events/s, directly {baseline:,.0f}")
    return Result(f"{name} (baseline: directly)", ours, baseline, "events/s", None,
                  higher_is_better=True)


SCENARIOS: list[Callable[[Plan], list[Result]]] = [transaction_pooling]


def main(argv: list[str] | None = None) -> int:
    plan = plan_of(plan_parser(
        "python -m benchmarks.pooling",
        "The store through PgBouncer in transaction mode vs directly.").parse_args(argv))
    print(text_table(transaction_pooling(plan), plan.quick))
    print(RATIO_NOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
