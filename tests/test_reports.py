"""Reads: usage metrics, AI metrics, customer reports, trends, cost analysis, rates."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carnil_analytics import CarnilAnalytics, RealTimeUsageMeter, UsageAnalyticsEngine


def at(*parts) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize("period, buckets, resolution, first", [
    ("day", 24, "hour", at(2026, 3, 17, 13)),
    ("week", 7, "day", at(2026, 3, 12)),
    ("month", 30, "day", at(2026, 2, 17)),
    ("year", 365, "day", at(2025, 3, 19)),
])
def test_usage_metrics_cover_every_bucket_of_the_period(tracker, period, buckets, resolution,
                                                        first):
    tracker.track_usage("c1", "api", 3, cost=0.3)
    metrics = tracker.get_usage_metrics("c1", "api", period)
    assert len(metrics) == buckets
    assert metrics[0].timestamp == first
    assert {m.period for m in metrics} == {resolution}
    assert [m.usage for m in metrics[-1:]] == [3] and sum(m.usage for m in metrics) == 3
    assert metrics[-1].cost == 0.3


def test_events_land_in_their_buckets(tracker, clock):
    tracker.track_usage("c1", "api", 1, timestamp=at(2026, 3, 18, 9, 59, 59, 999999))
    tracker.track_usage("c1", "api", 2, timestamp=at(2026, 3, 18, 10))
    tracker.track_usage("c1", "api", 4, timestamp=at(2026, 3, 16, 23, 59))
    hourly = {m.timestamp: m.usage for m in tracker.get_usage_metrics("c1", "api", "day")}
    assert (hourly[at(2026, 3, 18, 9)], hourly[at(2026, 3, 18, 10)]) == (1, 2)
    daily = {m.timestamp: m.usage for m in tracker.get_usage_metrics("c1", "api", "week")}
    assert (daily[at(2026, 3, 18)], daily[at(2026, 3, 16)], daily[at(2026, 3, 17)]) == (3, 4, 0)


def test_explicit_ranges(tracker):
    tracker.track_usage("c1", "api", 5, timestamp=at(2026, 3, 10, 8, 30))
    tracker.track_usage("c1", "api", 7, timestamp=at(2026, 3, 11, 8, 30))
    hourly = tracker.get_usage_metrics("c1", "api", start=at(2026, 3, 10, 8, 15),
                                       end=at(2026, 3, 10, 9, 45))
    assert [(m.timestamp, m.usage, m.period) for m in hourly] == [
        (at(2026, 3, 10, 8), 5, "hour"), (at(2026, 3, 10, 9), 0, "hour")]
    daily = tracker.get_usage_metrics("c1", "api", start=at(2026, 3, 1), end=at(2026, 3, 15))
    assert len(daily) == 14 and sum(m.usage for m in daily) == 12
    report = tracker.reports.customer_report("c1", start=at(2026, 3, 1), end=at(2026, 3, 15))
    assert report.period == "custom"
    assert report.summary.average_daily_usage == 12 / 14


def test_a_customer_with_no_data_gets_zeros(tracker):
    report = CarnilAnalytics(tracker).get_customer_report("nobody")
    assert (report.summary.total_usage, report.summary.total_cost,
            report.summary.average_daily_usage) == (0, 0, 0)
    assert report.top_features == [] and report.top_models == []
    assert len(report.usage) == 30 and all(p.usage == 0 and p.cost == 0 for p in report.usage)
    assert all(p.tokens == 0 for p in report.ai_usage)
    analysis = UsageAnalyticsEngine(tracker).generate_cost_analysis("nobody")
    assert (analysis.total_cost, analysis.by_feature, analysis.by_model, analysis.daily,
            analysis.projected_month_cost) == (0, [], [], [], 0)
    trends = UsageAnalyticsEngine(tracker).generate_usage_trends("nobody", "api", "week")
    assert [t.change_pct for t in trends] == [None] * 7
    assert tracker.get_ai_usage_metrics("nobody") == []
    meter = RealTimeUsageMeter(tracker)
    assert (meter.get_current_usage("nobody", "api"), meter.get_usage_rate("nobody", "api")) == \
        (0, 0)


def test_customer_report(tracker, clock):
    day = timedelta(days=1)
    tracker.track_usage("c1", "api", 100, cost=1.0, timestamp=clock.now - 2 * day)
    tracker.track_usage("c1", "api", 50, cost=0.5)
    tracker.track_usage("c1", "sms", 10, cost=2.0)
    tracker.track_usage("c1", "free", 500)
    tracker.track_usage("c2", "api", 9999, cost=99)  # someone else
    tracker.track_ai_usage("c1", "gpt-4", 1000, 0.03)
    tracker.track_ai_usage("c1", "mini", 9000, 0.01, timestamp=clock.now - day)
    tracker.track_ai_usage("c1", "claude", 4000, 0.03)
    report = CarnilAnalytics(tracker).get_customer_report("c1", "week")
    assert report.summary.total_usage == 660
    assert report.summary.total_cost == 3.57
    assert report.summary.average_daily_usage == 660 / 7
    assert [(p.date, p.usage, p.cost) for p in report.usage[-3:]] == [
        ("2026-03-16", 100, 1.0), ("2026-03-17", 0, 0), ("2026-03-18", 560, 2.5)]
    assert [(p.date, p.tokens, p.cost) for p in report.ai_usage[-2:]] == [
        ("2026-03-17", 9000, 0.01), ("2026-03-18", 5000, 0.06)]
    # by cost, then usage/tokens, descending
    assert [(f.feature_id, f.usage, f.cost) for f in report.top_features] == [
        ("sms", 10, 2.0), ("api", 150, 1.5), ("free", 500, 0)]
    assert [m.model_id for m in report.top_models] == ["claude", "gpt-4", "mini"]
    assert "ai_tokens" not in {f.feature_id for f in report.top_features}


def test_top_lists_are_capped(tracker):
    for i in range(12):
        tracker.track_usage("c1", f"f{i:02}", i + 1)
    report = tracker.reports.customer_report("c1", "day")
    assert [f.feature_id for f in report.top_features] == [f"f{i:02}" for i in range(11, 1, -1)]
    assert len(tracker.reports.customer_report("c1", "day", top=3).top_features) == 3


def test_ai_usage_metrics(tracker, clock):
    tracker.track_ai_usage("c1", "gpt-4", input_tokens=700, output_tokens=300, cached_tokens=100,
                           cost=0.2)
    tracker.track_ai_usage("c1", "mini", 50, 0.001, timestamp=clock.now - timedelta(hours=3))
    one = tracker.get_ai_usage_metrics("c1", "gpt-4", "day")
    assert len(one) == 24
    last = one[-1]
    assert (last.tokens, last.input_tokens, last.output_tokens, last.cached_tokens, last.cost) == \
        (1000, 700, 300, 100, 0.2)
    every = tracker.get_ai_usage_metrics("c1", period="day")
    assert len(every) == 48 and {m.model_id for m in every} == {"gpt-4", "mini"}
    assert len(tracker.get_ai_usage_metrics("c1", "never-used", "day")) == 24


def test_ai_meters_have_usage_metrics_too(tracker):
    tracker.track_ai_usage("c1", "gpt-4", 1000, 0.25)
    tracker.track_ai_usage("c1", "mini", 500, 0.5)
    assert sum(m.usage for m in tracker.get_usage_metrics("c1", "ai_tokens", "day")) == 1500
    assert sum(m.usage for m in tracker.get_usage_metrics("c1", "ai_cost", "day")) == 0.75
    assert tracker.get_meter("c1", "ai_cost").current == 0.75


def test_trends(tracker, clock):
    start = clock.now - timedelta(days=8)
    for day, amount in enumerate([0, 10, 20, 5, 0, 7, 7, 14, 28]):
        if amount:
            tracker.track_usage("c1", "api", amount, cost=amount / 10,
                                timestamp=start + timedelta(days=day))
    trends = UsageAnalyticsEngine(tracker).generate_usage_trends("c1", "api", "month")
    last9 = trends[-9:]
    assert [t.usage for t in last9] == [0, 10, 20, 5, 0, 7, 7, 14, 28]
    assert [t.change_pct for t in last9] == [None, None, 100, -75, -100, None, 0, 100, 100]
    assert last9[-1].moving_average == pytest.approx((20 + 5 + 0 + 7 + 7 + 14 + 28) / 7)
    assert last9[-1].date == "2026-03-18" and last9[-1].cost == 2.8


def test_cost_analysis(tracker, clock):
    tracker.track_usage("c1", "api", 100, cost=6.0)
    tracker.track_usage("c1", "sms", 10, cost=2.0, timestamp=clock.now - timedelta(days=20))
    tracker.track_ai_usage("c1", "gpt-4", 4000, 2.0)
    analysis = UsageAnalyticsEngine(tracker).generate_cost_analysis("c1", "month")
    assert (analysis.total_cost, analysis.usage_cost, analysis.ai_cost) == (10, 8, 2)
    assert [(f.feature_id, f.cost, f.share) for f in analysis.by_feature] == [
        ("api", 6, 0.6), ("sms", 2, 0.2)]
    (model,) = analysis.by_model
    assert (model.model_id, model.tokens, model.share, model.cost_per_1k_tokens) == \
        ("gpt-4", 4000, 0.2, 0.5)
    assert [(d.date, d.usage_cost, d.ai_cost, d.cost) for d in analysis.daily] == [
        ("2026-02-26", 2, 0, 2), ("2026-03-18", 6, 2, 8)]
    # March to date (the 18th, 12:00 = 17.5 of 31 days) cost 8, extrapolated to all of March
    assert analysis.projected_month_cost == pytest.approx(8 * 31 / 17.5, abs=1e-9)


def test_usage_rate_over_the_trailing_window(tracker, clock):
    clock.now = at(2026, 3, 18, 12, 0, 30)
    meter = RealTimeUsageMeter(tracker)
    meter.track_usage("c1", "api", 60, timestamp=at(2026, 3, 18, 11, 55, 10))  # half outside
    meter.track_usage("c1", "api", 100, timestamp=at(2026, 3, 18, 11, 58))
    meter.track_usage("c1", "api", 1000, timestamp=at(2026, 3, 18, 11, 50))  # outside
    # window: 11:55:30–12:00:30, 5 min; the 11:55 minute is half inside: (30 + 100) / 5
    assert meter.get_usage_rate("c1", "api") == pytest.approx(26)
    assert meter.get_current_usage("c1", "api") == 1160


def test_rate_window_is_configurable(make_tracker, clock):
    tracker = make_tracker({"real_time": {"rate_window_seconds": 60}})
    clock.now = at(2026, 3, 18, 12, 0, 0)
    tracker.track_usage("c1", "api", 30, timestamp=at(2026, 3, 18, 11, 59, 5))
    tracker.track_usage("c1", "api", 30, timestamp=at(2026, 3, 18, 11, 58))
    assert RealTimeUsageMeter(tracker).get_usage_rate("c1", "api") == 30


events_strategy = st.lists(
    st.tuples(st.integers(0, 29 * 24 * 3600 - 1),  # seconds before now
              st.sampled_from(["api", "sms", "storage"]),
              st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
              st.integers(0, 10**6)),  # cost in micro-units
    max_size=40)


_EXAMPLES = itertools.count()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=events_strategy)
def test_report_buckets_sum_to_what_was_tracked(make_tracker, clock, events):
    tracker = make_tracker(name=f"prop{next(_EXAMPLES)}")  # a fresh store per example
    batch = [{"type": "usage", "customer_id": "c1", "feature_id": feature, "usage": usage,
              "cost": cost / 1e6, "timestamp": clock.now - timedelta(seconds=ago)}
             for ago, feature, usage, cost in events]
    tracker.track_events(batch)
    report = tracker.reports.customer_report("c1", "month")
    tracked_usage = math.fsum(e["usage"] for e in batch)
    tracked_micros = sum(cost for *_, cost in events)
    assert math.isclose(math.fsum(p.usage for p in report.usage), tracked_usage,
                        rel_tol=1e-12, abs_tol=1e-9)
    assert round(sum(p.cost for p in report.usage) * 1e6) == tracked_micros
    assert report.summary.total_cost == tracked_micros / 1e6
    for feature in ("api", "sms", "storage"):
        per_feature = math.fsum(e["usage"] for e in batch if e["feature_id"] == feature)
        series = tracker.get_usage_metrics("c1", feature, "month")
        assert math.isclose(math.fsum(m.usage for m in series), per_feature,
                            rel_tol=1e-12, abs_tol=1e-9)
