"""Write paths: one ``track_usage`` per event, and ``track_events`` batches."""

from __future__ import annotations

import tempfile
from itertools import product

from carnil_analytics import UsageTracker

from . import raw
from .harness import Plan, Result, median_of, say, seconds

CUSTOMERS = [f"customer-{i}" for i in range(10)]
FEATURES = ["api_calls", "storage_gb", "exports"]
METERS = list(product(CUSTOMERS, FEATURES))
BATCH_SIZE = 1000
AI_SHARE = 10  # every 10th event of a batch is an AI event


def track_usage_durable(plan: Plan) -> list[Result]:
    """``track_usage`` with default settings (WAL, synchronous=normal), one event per call."""
    return [_track_usage(plan, "normal", events=plan.pick(3000, 50), target=5000)]


def track_usage_full_sync(plan: Plan) -> list[Result]:
    """The same with ``synchronous: full``: every commit waits for the disk."""
    return [_track_usage(plan, "full", events=plan.pick(300, 20), target=None)]


def _track_usage(plan: Plan, synchronous: str, events: int, target: float | None) -> Result:
    name = f"track_usage, synchronous={synchronous}"
    database = {} if synchronous == "normal" else {"synchronous": synchronous}
    with tempfile.TemporaryDirectory(prefix="carnil-bench-") as tmp:
        with UsageTracker({"database": {"url": f"sqlite:///{tmp}/carnil.db", **database}}) \
                as tracker:
            def one_by_one() -> None:
                for i in range(events):
                    tracker.track_usage(*METERS[i % len(METERS)], 1.0)

            tracker.track_usage(*METERS[0], 1.0)  # warm-up: first connection, first prune
            ours = median_of(plan.runs, lambda: events / seconds(one_by_one))
        say(f"{name}: ours {ours:,.0f} events/s")

        conn = raw.events_table(f"{tmp}/raw.db", synchronous)

        def raw_one_by_one() -> None:
            for i in range(events):
                customer, feature = METERS[i % len(METERS)]
                now = raw.now_us()
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(raw.INSERT_EVENT,
                             ("usage", customer, feature, now, now, 1.0, 0, 0, 0, 0))
                conn.execute("COMMIT")

        try:
            baseline = median_of(plan.runs, lambda: events / seconds(raw_one_by_one))
        finally:
            conn.close()
        say(f"{name}: raw sqlite3 {baseline:,.0f} events/s")
    return Result(name, ours, baseline, "events/s", target, higher_is_better=True)


def mixed_batch() -> list[dict]:
    """1,000 events over 10 customers × 3 features, every 10th an AI event."""
    batch = []
    for i in range(BATCH_SIZE):
        customer, feature = METERS[i % len(METERS)]
        if i % AI_SHARE == AI_SHARE - 1:
            batch.append({"type": "ai_usage", "customer_id": customer, "model_id": "gpt-4o",
                          "input_tokens": 100, "output_tokens": 50})
        else:
            batch.append({"type": "usage", "customer_id": customer, "feature_id": feature,
                          "usage": 1.0})
    return batch


def _raw_rows(batch: list[dict]) -> list[tuple]:
    now = raw.now_us()
    rows = []
    for event in batch:
        if event["type"] == "usage":
            rows.append(("usage", event["customer_id"], event["feature_id"], now, now,
                         event["usage"], 0, 0, 0, 0))
        else:
            tokens_in, tokens_out = event["input_tokens"], event["output_tokens"]
            rows.append(("ai_usage", event["customer_id"], event["model_id"], now, now,
                         float(tokens_in + tokens_out), tokens_in, tokens_out, 0, 0))
    return rows


def track_events_batches(plan: Plan) -> list[Result]:
    """``track_events`` with batches of 1,000 events, one transaction each."""
    name = "track_events, batches of 1,000"
    batches = plan.pick(20, 2)
    batch = mixed_batch()
    with tempfile.TemporaryDirectory(prefix="carnil-bench-") as tmp:
        with UsageTracker({"database": {"url": f"sqlite:///{tmp}/carnil.db"}}) as tracker:
            def in_batches() -> None:
                for _ in range(batches):
                    tracker.track_events(batch)

            tracker.track_events(batch[:10])  # warm-up
            ours = median_of(plan.runs, lambda: batches * BATCH_SIZE / seconds(in_batches))
        say(f"{name}: ours {ours:,.0f} events/s")

        conn = raw.events_table(f"{tmp}/raw.db")

        def raw_in_batches() -> None:
            for _ in range(batches):
                rows = _raw_rows(batch)
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(raw.INSERT_EVENT, rows)
                conn.execute("COMMIT")

        try:
            baseline = median_of(plan.runs, lambda: batches * BATCH_SIZE / seconds(raw_in_batches))
        finally:
            conn.close()
        say(f"{name}: raw sqlite3 executemany {baseline:,.0f} events/s")
    return [Result(name, ours, baseline, "events/s", 50_000, higher_is_better=True)]
