"""``/metrics`` of 10,000 customers × 3 features with limits and credits.

The store is filled in bulk, straight into its tables in one transaction (lifetime totals,
meters with their limits, current periods and credit balances, the labelled customers, and
minute rollups in the rate window for half the meters), then scraped by the product's own
``Scrape.render()`` over a ``StoreCollector`` with the cache off (ttl 0): every scrape reads
the store. The baseline is what an exporter keeping the same values in memory would do:
prometheus_client's labelled ``Counter``/``Gauge`` objects in a fresh ``CollectorRegistry``,
set from the same data, rendered with ``generate_latest`` (with its ``_created`` series off,
so both render the same samples; the two outputs are parsed and compared value by value).

Also: the process's RSS before and after many scrapes (should stay flat), and — reported,
not judged — the scrapes just after the daily reset, while the daily meters have not been
touched in their new period: the first one recounts and saves their new periods.

The same store on PostgreSQL (the test suite's server, ``tests/postgres_server.py``) is
measured too, reported against the same baseline but not judged.

``python -m benchmarks.metrics_scrape [--quick] [--runs N] [--profile]``.
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import random
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, insert

from carnil_analytics import UsageTracker
from carnil_analytics.metrics.collector import StoreCollector
from carnil_analytics.metrics.scrape import Scrape
from carnil_analytics.metrics.service import ServiceMetrics
from carnil_analytics.models import to_micros
from carnil_analytics.periods import LimitPeriod, limit_window
from carnil_analytics.store.schema import customers as customers_table
from carnil_analytics.store.schema import (
    labelled_customers,
    meters,
    rollups_minute,
    totals,
)

from .harness import (
    RATIO_NOTE,
    Plan,
    Result,
    median_of,
    plan_of,
    plan_parser,
    say,
    seconds,
    text_table,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgres_server import PostgresServer  # noqa: E402

FEATURES = (("api_calls", "daily"), ("storage_gb", "weekly"), ("exports", "monthly"))
TARGET_MS = 1000.0
MIN_RATIO = 3.0  # ours at least 3× faster than the baseline
RSS_GROWTH = 0.10  # "flat": under 10 % growth
MAX_CUSTOMERS = 1000  # prometheus.max_customers (the default)
MINUTE_US = 60_000_000
RATE_BUCKETS = 3  # minute rollups per active meter, all inside the 5-minute window
WINDOW_MINUTES = 5


@dataclass(frozen=True)
class JudgedResult(Result):
    """A row whose target is a rule of its own (shown in the target cell)."""

    rule: str = ""
    min_ratio: float | None = None  # also required: ratio ≥ this
    max_growth: float | None = None  # instead of the target: ours ≤ baseline × (1 + this)

    def meets_target(self) -> bool | None:
        if self.max_growth is not None:
            return self.ours <= self.baseline * (1 + self.max_growth)
        met = super().meets_target()
        if self.min_ratio is not None and met is not None:
            return met and self.ratio >= self.min_ratio
        return met

    def cells(self, quick: bool) -> tuple[str, ...]:
        cells = list(super().cells(quick))
        if self.rule:
            cells[4] = self.rule
        if self.max_growth is not None and not quick:
            cells[5] = "pass" if self.meets_target() else "MISS"
        return tuple(cells)


@dataclass
class Meter:
    customer: str
    feature: str
    period: str
    usage: float  # lifetime
    cost_nanos: int
    events: int
    limit: float
    period_start_us: int
    period_end_us: int
    period_usage: float
    balance: float
    minutes: list[tuple[int, float]]  # (bucket_us, usage) in the rate window


WARM_UP_SCRAPES = 5


def metrics_scrape(plan: Plan) -> list[Result]:
    customers = plan.pick(10_000, 200)
    scrapes = plan.pick(100, 10)
    now = datetime.now(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="carnil-bench-") as tmp, \
            _filled_tracker(f"sqlite:///{tmp}/carnil.db", customers, now) as (tracker, data):
        scrape, registry = _checked_scrape(tracker, data, now)
        ours_ms, base_ms = _steady(plan, scrape, registry, "SQLite")
        before_mb, after_mb = _rss_over(scrape, scrapes)
        say(f"metrics scrape: RSS {before_mb:.1f} MB over the first scrapes, "
            f"{after_mb:.1f} MB over the last of {scrapes}")
        first_ms, later_ms = _after_reset(plan, tracker, now)

    label = f"{_count(customers)} customers × {len(FEATURES)} features"
    return [
        JudgedResult(f"/metrics, {label}, limits & credits (ttl 0)", ours_ms, base_ms, "ms",
                     TARGET_MS, higher_is_better=False,
                     rule=f"≤ {TARGET_MS:,g} ms, ≥ {MIN_RATIO:g}×", min_ratio=MIN_RATIO),
        JudgedResult(f"/metrics RSS after {scrapes} scrapes (baseline: before)", after_mb,
                     before_mb, "MB", None, higher_is_better=False,
                     rule=f"flat (< +{RSS_GROWTH:.0%})", max_growth=RSS_GROWTH),
        Result(f"/metrics, {label}, first scrape after the daily reset", first_ms, base_ms,
               "ms", None, higher_is_better=False),
        Result(f"/metrics, {label}, later scrapes after the daily reset", later_ms, base_ms,
               "ms", None, higher_is_better=False),
    ]


def metrics_scrape_postgresql(plan: Plan) -> list[Result]:
    """The same store and scrapes on PostgreSQL (the test suite's server): reported, not
    judged."""
    customers = plan.pick(10_000, 200)
    now = datetime.now(UTC).replace(microsecond=0)
    with ExitStack() as stack:
        postgres = PostgresServer.launch()
        stack.callback(postgres.close)
        database = postgres.new_database()
        stack.callback(postgres.drop_database, database)
        tracker, data = stack.enter_context(
            _filled_tracker(postgres.url(database), customers, now))
        scrape, registry = _checked_scrape(tracker, data, now)
        ours_ms, base_ms = _steady(plan, scrape, registry, "PostgreSQL")
        first_ms, later_ms = _after_reset(plan, tracker, now)
    label = f"{_count(customers)} customers × {len(FEATURES)} features, PostgreSQL"
    return [
        Result(f"/metrics, {label} (ttl 0)", ours_ms, base_ms, "ms", None,
               higher_is_better=False),
        Result(f"/metrics, {label}, first scrape after the daily reset", first_ms, base_ms,
               "ms", None, higher_is_better=False),
        Result(f"/metrics, {label}, later scrapes after the daily reset", later_ms, base_ms,
               "ms", None, higher_is_better=False),
    ]


@contextmanager
def _filled_tracker(url: str, customers: int, now: datetime
                    ) -> Iterator[tuple[UsageTracker, list[Meter]]]:
    """A tracker on the store at ``url`` (its schema created), filled with ``customers``."""
    config = {"database": {"url": url}, "cache": {"ttl": 0},
              "prometheus": {"max_customers": MAX_CUSTOMERS}}
    with UsageTracker(config, clock=lambda: now) as tracker:
        say(f"metrics scrape: filling the store with {customers:,} customers × "
            f"{len(FEATURES)} features ...")
        data: list[Meter] = []
        took = seconds(lambda: data.extend(_fill(tracker.db.engine, customers, now)))
        say(f"metrics scrape: filled in {took:.1f} s")
        yield tracker, data


def _checked_scrape(tracker: UsageTracker, data: list[Meter], now: datetime
                    ) -> tuple[Scrape, CollectorRegistry]:
    """The product's scrape and the baseline registry, checked to give the same samples."""
    scrape = _scrape(tracker, lambda: now)
    ours_text = scrape.render()
    registry = _baseline(data, now)
    samples = _compare(ours_text, _render_baseline(registry))
    say(f"metrics scrape: {samples:,} business samples, {len(ours_text) / 1e6:.1f} MB; "
        "ours and the baseline agree")
    return scrape, registry


def _steady(plan: Plan, scrape: Scrape, registry: CollectorRegistry,
            store: str) -> tuple[float, float]:
    """Milliseconds per scrape: ours, and the baseline's."""
    ours_ms = median_of(plan.runs, lambda: 1000 * seconds(scrape.render))
    base_ms = median_of(plan.runs, lambda: 1000 * seconds(lambda: _render_baseline(registry)))
    say(f"metrics scrape ({store}): ours {ours_ms:.0f} ms, prometheus_client {base_ms:.0f} ms "
        f"per scrape ({base_ms / ours_ms:.2f}×)")
    return ours_ms, base_ms


def _after_reset(plan: Plan, tracker: UsageTracker, now: datetime) -> tuple[float, float]:
    """Milliseconds of the first scrape just after midnight UTC, and of the later ones.

    Then every daily meter is in a new period that no event has touched yet: the first scrape
    counts those periods' usage and saves it.
    """
    after_reset = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(),
                                   UTC) + timedelta(seconds=30)
    stale = _scrape(tracker, lambda: after_reset)
    first_ms = 1000 * seconds(stale.render)
    later_ms = median_of(plan.runs, lambda: 1000 * seconds(stale.render))
    say(f"metrics scrape: just after the daily reset {first_ms:.0f} ms for the first "
        f"scrape (it saves the rollovers), {later_ms:.0f} ms per scrape after it")
    return first_ms, later_ms


def _scrape(tracker: UsageTracker, clock) -> Scrape:
    """The product's scrape (as ``create_app`` builds it), with the cache off."""
    return Scrape(StoreCollector(tracker.db, tracker.settings, clock), ServiceMetrics(), 0.0)


def _fill(engine: Engine, customers: int, now: datetime) -> list[Meter]:
    """Customers, totals, meters, labelled customers and minute rollups, in one
    transaction, on either store."""
    rng = random.Random(42)
    now_us = to_micros(now)
    first_us = now_us - 30 * 86_400_000_000
    minute_now = now_us - now_us % MINUTE_US
    windows = {period: limit_window(LimitPeriod(period), now) for _, period in FEATURES}
    data = []
    for c in range(customers):
        for feature, period in FEATURES:
            window = windows[period]
            events = rng.randint(1, 5000)
            usage = float(rng.randint(events, events * 20))
            minutes = []
            if rng.random() < 0.5:  # half the meters were used in the last few minutes
                minutes = [(minute_now - k * MINUTE_US, float(rng.randint(1, 50)))
                           for k in range(RATE_BUCKETS)]
            data.append(Meter(
                customer=f"customer-{c:05d}", feature=feature, period=period, usage=usage,
                cost_nanos=int(usage) * 1_000_000, events=events,
                limit=float(rng.choice((10_000, 50_000, 100_000))),
                period_start_us=to_micros(window.start), period_end_us=to_micros(window.end),
                period_usage=float(rng.randint(0, int(usage))),
                balance=float(rng.randint(-1000, 100_000)), minutes=minutes))
    customer_ids = [f"customer-{c:05d}" for c in range(customers)]
    with engine.begin() as conn:
        conn.execute(insert(totals), [
            {"customer_id": m.customer, "kind": "usage", "subject": m.feature,
             "events": m.events, "quantity": m.usage, "input_tokens": 0, "output_tokens": 0,
             "cached_tokens": 0, "cost_nanos": m.cost_nanos,
             "first_recorded_us": first_us + i // len(FEATURES)} for i, m in enumerate(data)])
        conn.execute(insert(meters), [
            {"customer_id": m.customer, "feature_id": m.feature, "limit_value": m.limit,
             "period": m.period, "reset_anchor_us": None, "period_start_us": m.period_start_us,
             "period_end_us": m.period_end_us, "period_usage": m.period_usage,
             "credit_metered": True, "credit_balance": m.balance} for m in data])
        conn.execute(insert(customers_table), [{"customer_id": c} for c in customer_ids])
        # As the product does when a limit is set: every customer with one gets its own label
        # for good (no baseline: nothing was folded before).
        conn.execute(insert(labelled_customers),
                     [{"customer_id": c, "since_us": now_us} for c in customer_ids])
        conn.execute(insert(rollups_minute), [
            {"customer_id": m.customer, "bucket_us": bucket, "kind": "usage",
             "subject": m.feature, "events": 1, "quantity": amount, "input_tokens": 0,
             "output_tokens": 0, "cached_tokens": 0, "cost_nanos": 0}
            for m in data for bucket, amount in m.minutes])
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    return data


def _baseline(data: list[Meter], now: datetime) -> CollectorRegistry:
    """The same values in prometheus_client's labelled metrics, as an in-memory exporter."""
    registry = CollectorRegistry()
    meter = ["customer", "feature"]
    usage = Counter("carnil_usage", "Usage (feature units).", meter, registry=registry)
    cost = Counter("carnil_usage_cost", "Cost (USD).", meter, registry=registry)
    current = Gauge("carnil_usage_current", "Usage this period.", meter, registry=registry)
    limit = Gauge("carnil_usage_limit", "Limit.", [*meter, "period"], registry=registry)
    remaining = Gauge("carnil_usage_remaining", "Remaining.", meter, registry=registry)
    ratio = Gauge("carnil_usage_limit_utilization_ratio", "Ratio.", meter, registry=registry)
    reset = Gauge("carnil_usage_limit_reset_timestamp_seconds", "Reset.", meter,
                  registry=registry)
    exhaustion = Gauge("carnil_usage_limit_exhaustion_seconds", "Exhaustion.", meter,
                       registry=registry)
    rate = Gauge("carnil_usage_rate_per_minute", "Rate.", meter, registry=registry)
    balance = Gauge("carnil_credit_balance", "Balance.", meter, registry=registry)
    up = Gauge("carnil_up", "Up.", registry=registry)
    folded = Gauge("carnil_exporter_customers_folded", "Folded.", registry=registry)
    for m in data:
        key = (m.customer, m.feature)
        usage.labels(*key).inc(m.usage)
        cost.labels(*key).inc(m.cost_nanos / 1e9)
        per_minute = sum(amount for _, amount in m.minutes) / WINDOW_MINUTES
        if per_minute > 0:
            rate.labels(*key).set(per_minute)
        balance.labels(*key).set(m.balance)
        left = m.limit - m.period_usage
        current.labels(*key).set(m.period_usage)
        limit.labels(*key, m.period).set(m.limit)
        remaining.labels(*key).set(left)
        ratio.labels(*key).set(m.period_usage / m.limit)
        reset.labels(*key).set(m.period_end_us / 1e6)
        if per_minute > 0:
            exhaustion.labels(*key).set(max(0.0, left) / (per_minute / 60))
    up.set(1)
    folded.set(0)
    return registry


def _render_baseline(registry: CollectorRegistry) -> bytes:
    """``generate_latest`` without the ``_created`` series (which ours does not emit)."""
    was_on = getattr(prometheus_client.metrics, "_use_created", True)
    prometheus_client.disable_created_metrics()
    try:
        return generate_latest(registry)
    finally:
        if was_on:
            prometheus_client.enable_created_metrics()


def _compare(ours: bytes, baseline: bytes) -> int:
    """Both outputs hold the same business samples with the same values; how many."""
    def samples(text: bytes) -> dict:
        out = {}
        for family in text_string_to_metric_families(text.decode()):
            if family.name in ("carnil_exporter_scrape_duration_seconds",
                               "carnil_events_ingested", "carnil_http_request_duration_seconds"):
                continue
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    mine, theirs = samples(ours), samples(baseline)
    if mine.keys() != theirs.keys():
        missing, extra = theirs.keys() - mine.keys(), mine.keys() - theirs.keys()
        raise AssertionError(f"the outputs differ: {len(missing)} samples missing from ours "
                             f"(e.g. {sorted(missing)[:3]}), {len(extra)} extra "
                             f"(e.g. {sorted(extra)[:3]})")
    wrong = [k for k, v in mine.items() if abs(v - theirs[k]) > 1e-9 * max(1.0, abs(v))]
    if wrong:
        raise AssertionError(f"{len(wrong)} samples differ, e.g. "
                             f"{[(k, mine[k], theirs[k]) for k in wrong[:3]]}")
    return len(mine)


def _rss_over(scrape: Scrape, scrapes: int) -> tuple[float, float]:
    """Median RSS in MB after each of the first and of the last tenth of ``scrapes`` scrapes
    (after a few warm-up ones). A single reading swings by tens of MB with the allocator's
    high-water mark of one scrape; a leak shows as the later median above the earlier."""
    for _ in range(WARM_UP_SCRAPES):
        scrape.render()
    readings = []
    for _ in range(scrapes):
        scrape.render()
        gc.collect()
        readings.append(_rss_mb())
    tenth = max(1, scrapes // 10)
    return statistics.median(readings[:tenth]), statistics.median(readings[-tenth:])


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _count(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def profile(customers: int, top: int = 25) -> str:
    """cProfile of one ``StoreCollector.render``, top functions."""
    now = datetime.now(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="carnil-bench-") as tmp:
        path = f"{tmp}/carnil.db"
        config = {"database": {"url": f"sqlite:///{path}"}, "cache": {"ttl": 0}}
        with UsageTracker(config, clock=lambda: now) as tracker:
            _fill(tracker.db.engine, customers, now)
            collector = StoreCollector(tracker.db, tracker.settings, lambda: now)
            collector.render()  # warm-up
            profiler = cProfile.Profile()
            profiler.enable()
            collector.render()
            profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("cumulative")
    stats.print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = plan_parser("python -m benchmarks.metrics_scrape",
                         "Time /metrics of many customers.",
                         quick_help="200 customers, a smoke run")
    parser.add_argument("--profile", action="store_true",
                        help="print a cProfile of one collect + generate_latest instead")
    args = parser.parse_args(argv)
    plan = plan_of(args)
    if args.profile:
        print(profile(plan.pick(10_000, 200)))
        return 0
    results = metrics_scrape(plan) + metrics_scrape_postgresql(plan)
    print()
    print(text_table(results, plan.quick))
    print(RATIO_NOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
