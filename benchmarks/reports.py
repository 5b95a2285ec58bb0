"""The month report of a customer with a million events, against GROUP BY over raw events."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from carnil_analytics import CarnilAnalytics, CustomerReport, UsageAnalyticsEngine, UsageTracker

from .harness import Plan, Result, median_of, say, seconds

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgres_server import PostgresServer  # noqa: E402

CUSTOMER = "customer-big"
FEATURES = ["api_calls", "storage_gb", "exports", "seats", "webhooks"]
MODELS = ["gpt-4o", "claude-3-5-sonnet", "llama-3-70b"]
LOAD_BATCH = 5000
AI_SHARE = 5  # every 5th event is an AI event
TARGET_MS = 50.0
PRICING = {
    "features": {feature: {"unit_price": 0.001 * (i + 1)} for i, feature in enumerate(FEATURES)},
    "models": {model: {"input_per_1k": 0.0025, "output_per_1k": 0.01} for model in MODELS},
}

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_US = 86_400_000_000
# What a report is made of, computed the obvious way: per day and feature over raw events.
RAW_REPORT = text(f"""
SELECT kind, subject, ts_us - ts_us % {DAY_US} AS day, SUM(quantity), SUM(cost_nanos)
FROM events
WHERE customer_id = :customer AND ts_us >= :start AND ts_us < :end
GROUP BY kind, subject, day
""")


def month_report(plan: Plan) -> list[Result]:
    """``generate_customer_report`` and ``get_customer_report`` for ``month``."""
    events = plan.pick(1_000_000, 20_000)
    with tempfile.TemporaryDirectory(prefix="carnil-bench-") as tmp:
        engine_ms, facade_ms, raw_ms = _measure(plan, f"sqlite:///{tmp}/carnil.db", events)
    return [
        Result(f"generate_customer_report, month, {_count(events)} events", engine_ms, raw_ms,
               "ms", TARGET_MS, higher_is_better=False),
        Result(f"get_customer_report, month, {_count(events)} events", facade_ms, raw_ms,
               "ms", TARGET_MS, higher_is_better=False),
    ]


def month_report_postgresql(plan: Plan) -> list[Result]:
    """The same on PostgreSQL (the test suite's server): reported, not judged."""
    events = plan.pick(1_000_000, 20_000)
    with ExitStack() as stack:
        postgres = PostgresServer.launch()
        stack.callback(postgres.close)
        database = postgres.new_database()
        stack.callback(postgres.drop_database, database)
        engine_ms, _facade_ms, raw_ms = _measure(plan, postgres.url(database), events)
    return [Result(f"generate_customer_report, month, {_count(events)} events, PostgreSQL",
                   engine_ms, raw_ms, "ms", None, higher_is_better=False)]


def _measure(plan: Plan, url: str, events: int) -> tuple[float, float, float]:
    """Milliseconds of the engine's and the facade's month report, and of the raw GROUP BY,
    on the store at ``url`` filled with ``events`` events."""
    with UsageTracker({"database": {"url": url}, "pricing": PRICING}) as tracker:
        _load(tracker, events)
        engine, analytics = UsageAnalyticsEngine(tracker), CarnilAnalytics(tracker)
        report = engine.generate_customer_report(CUSTOMER, "month")  # warm-up
        engine_ms = _median_ms(plan.runs, lambda: engine.generate_customer_report(
            CUSTOMER, "month"))
        facade_ms = _median_ms(plan.runs, lambda: analytics.get_customer_report(
            CUSTOMER, "month"))
        say(f"month report: engine {engine_ms:.2f} ms, CarnilAnalytics {facade_ms:.2f} ms")

        window = {"customer": CUSTOMER, "start": _micros(report.start),
                  "end": _micros(report.end)}
        with tracker.db.engine.connect() as conn:
            rows = conn.execute(RAW_REPORT, window).all()
            raw_ms = _median_ms(plan.runs, lambda: conn.execute(RAW_REPORT, window).all())
        say(f"month report: raw GROUP BY over events {raw_ms:.2f} ms ({len(rows)} rows)")
        _compare(report, rows)
    return engine_ms, facade_ms, raw_ms


def _load(tracker: UsageTracker, events: int) -> None:
    """``events`` events of one customer, in time order, spread over the last 30 days."""
    now = datetime.now(UTC)
    first = now - timedelta(days=30) + timedelta(minutes=5)
    step = (now - timedelta(minutes=1) - first) / events
    say(f"loading {events:,} events in batches of {LOAD_BATCH:,} ...")
    took = 0.0
    for start in range(0, events, LOAD_BATCH):
        batch = [_event(i, first + step * i) for i in range(start, min(events, start + LOAD_BATCH))]
        took += seconds(lambda batch=batch: tracker.track_events(batch))
        done = start + len(batch)
        if done % (events // 10 or 1) < LOAD_BATCH or done == events:
            say(f"  {done:>9,} / {events:,} events ({done / took:,.0f} events/s)")


def _event(i: int, timestamp: datetime) -> dict:
    if i % AI_SHARE == AI_SHARE - 1:
        return {"type": "ai_usage", "customer_id": CUSTOMER, "timestamp": timestamp,
                "model_id": MODELS[i // AI_SHARE % len(MODELS)],
                "input_tokens": 100 + i % 900, "output_tokens": 50 + i % 450}
    return {"type": "usage", "customer_id": CUSTOMER, "timestamp": timestamp,
            "feature_id": FEATURES[i // AI_SHARE % len(FEATURES)], "usage": float(1 + i % 10)}


def _compare(report: CustomerReport, rows: list[tuple]) -> None:
    """Warn when the report and the raw events disagree: a fast wrong answer is no answer."""
    raw_usage = sum(quantity for kind, _, _, quantity, _ in rows if kind == "usage")
    raw_cost = int(sum(nanos for *_, nanos in rows)) / 1e9  # PostgreSQL sums to Decimal
    if abs(raw_usage - report.summary.total_usage) > 1e-6 \
            or abs(raw_cost - report.summary.total_cost) > 1e-6 * max(1.0, raw_cost):
        say(f"WARNING: report totals (usage {report.summary.total_usage}, cost "
            f"{report.summary.total_cost}) differ from raw events (usage {raw_usage}, "
            f"cost {raw_cost})")


def _median_ms(runs: int, action: Callable[[], object]) -> float:
    return median_of(runs, lambda: seconds(action) * 1000)


def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def _count(events: int) -> str:
    return f"{events // 1_000_000}M" if events >= 1_000_000 else f"{events // 1000}k"
