"""``check_usage_allowed`` on a meter with a limit and credits."""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable

from carnil_analytics import UsageLimit, UsageTracker

from .harness import Plan, Result, percentile, say

CUSTOMER, FEATURE = "customer-0", "api_calls"


def check_usage_allowed(plan: Plan) -> list[Result]:
    """Median and p99 latency of a check, against a primary-key SELECT of the meter's row."""
    calls = plan.pick(2000, 50)
    with tempfile.TemporaryDirectory(prefix="carnil-bench-") as tmp:
        path = f"{tmp}/carnil.db"
        with UsageTracker({"database": {"url": f"sqlite:///{path}"}}) as tracker:
            tracker.set_usage_limit(CUSTOMER, UsageLimit(FEATURE, 1_000_000, "monthly"))
            tracker.update_credit_balance(CUSTOMER, FEATURE, 500_000)
            for _ in range(10):
                tracker.track_usage(CUSTOMER, FEATURE, 1.0)
            if not tracker.check_usage_allowed(CUSTOMER, FEATURE, 1):
                say("WARNING: the check refused usage that fits the limit and the credits")
            ours = _latencies(plan.runs, calls,
                              lambda: tracker.check_usage_allowed(CUSTOMER, FEATURE, 1))
        say(f"check_usage_allowed: ours median {ours[0]:.3f} ms, p99 {ours[1]:.3f} ms")

        conn = sqlite3.connect(path, isolation_level=None)
        try:
            baseline = _latencies(plan.runs, calls, lambda: conn.execute(
                "SELECT * FROM meters WHERE customer_id = ? AND feature_id = ?",
                (CUSTOMER, FEATURE)).fetchone())
        finally:
            conn.close()
        say(f"check_usage_allowed: raw SELECT median {baseline[0]:.3f} ms, "
            f"p99 {baseline[1]:.3f} ms")
    return [
        Result("check_usage_allowed, median", ours[0], baseline[0], "ms", 0.5,
               higher_is_better=False),
        Result("check_usage_allowed, p99", ours[1], baseline[1], "ms", None,
               higher_is_better=False),
    ]


def _latencies(runs: int, calls: int, action: Callable[[], object]) -> tuple[float, float]:
    """(median, p99) latency in ms of ``action``: each the median over ``runs`` runs."""
    action()  # warm-up
    medians, p99s = [], []
    for _ in range(runs):
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            action()
            samples.append((time.perf_counter() - start) * 1000)
        medians.append(statistics.median(samples))
        p99s.append(percentile(samples, 0.99))
    return statistics.median(medians), statistics.median(p99s)
