"""Usage limits: calendar and anchored periods, rollover, what counts, and enforcement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carnil_analytics import UsageLimit, UsageLimitExceeded
from carnil_analytics.store.schema import events

from helpers import count_rows


def at(*parts) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_usage_already_in_the_period_counts_when_a_limit_is_set(tracker, clock):
    tracker.track_usage("c1", "api", 30, timestamp=clock.now - timedelta(hours=11))  # today
    tracker.track_usage("c1", "api", 500, timestamp=clock.now - timedelta(hours=13))  # yesterday
    tracker.set_usage_limit("c1", UsageLimit("api", 100, "daily"))
    meter = tracker.get_meter("c1", "api")
    assert (meter.current, meter.limit, meter.remaining) == (30, 100, 70)
    assert meter.reset_at == at(2026, 3, 19)


@pytest.mark.parametrize("period, inside, outside, reset", [
    # clock: Wednesday 2026-03-18 12:00 UTC
    ("daily", at(2026, 3, 18), at(2026, 3, 17, 23, 59, 59), at(2026, 3, 19)),
    ("weekly", at(2026, 3, 16), at(2026, 3, 15, 23, 59, 59), at(2026, 3, 23)),
    ("monthly", at(2026, 3, 1), at(2026, 2, 28, 23, 59, 59), at(2026, 4, 1)),
])
def test_calendar_periods(tracker, period, inside, outside, reset):
    tracker.track_usage("c1", "api", 7, timestamp=inside)
    tracker.track_usage("c1", "api", 1000, timestamp=outside)
    tracker.set_usage_limit("c1", UsageLimit("api", 10, period))
    tracker.track_usage("c1", "api", 1, timestamp=inside)
    tracker.track_usage("c1", "api", 1000, timestamp=outside)  # late: recorded, not counted
    meter = tracker.get_meter("c1", "api")
    assert (meter.current, meter.remaining, meter.reset_at) == (8, 2, reset)
    assert count_rows(tracker, events) == 4


def test_explicit_reset_at_mid_day_and_rollover(tracker, clock):
    reset_at = at(2026, 3, 18, 14, 37, 12)
    tracker.track_usage("c1", "api", 100, timestamp=at(2026, 3, 17, 14, 37, 11))  # before period
    tracker.track_usage("c1", "api", 5, timestamp=at(2026, 3, 17, 14, 37, 12))  # period start
    tracker.set_usage_limit("c1", UsageLimit("api", 10, "daily", reset_at))
    assert tracker.get_usage_limit("c1", "api").reset_at == reset_at
    assert tracker.get_meter("c1", "api").current == 5

    clock.now = reset_at - timedelta(microseconds=1)
    tracker.track_usage("c1", "api", 4)
    assert tracker.get_meter("c1", "api").current == 9

    clock.now = reset_at  # the period is half-open: at reset_at it has rolled over
    meter = tracker.get_meter("c1", "api")
    assert (meter.current, meter.remaining, meter.reset_at) == (0, 10, reset_at + timedelta(1))
    tracker.track_usage("c1", "api", 10, enforce=True)
    with pytest.raises(UsageLimitExceeded):
        tracker.track_usage("c1", "api", 1, enforce=True)

    clock.now = reset_at + timedelta(days=3, hours=1)  # several periods later
    limit = tracker.get_usage_limit("c1", "api")
    assert limit.reset_at == reset_at + timedelta(days=4)
    assert tracker.get_meter("c1", "api").current == 0


def test_future_dated_event_counts_in_the_period_it_belongs_to(tracker, clock):
    reset_at = clock.now + timedelta(minutes=2)
    tracker.set_usage_limit("c1", UsageLimit("api", 10, "weekly", reset_at))
    tracker.track_usage("c1", "api", 3, timestamp=clock.now + timedelta(minutes=4))
    assert tracker.get_meter("c1", "api").current == 0
    clock.advance(minutes=5)
    assert tracker.get_meter("c1", "api").current == 3


def test_monthly_reset_keeps_its_day_through_short_months(tracker, clock):
    clock.now = at(2027, 1, 20)
    tracker.set_usage_limit("c1", UsageLimit("api", 10, "monthly", at(2027, 1, 31, 9)))
    assert tracker.get_usage_limit("c1", "api").reset_at == at(2027, 1, 31, 9)
    clock.now = at(2027, 2, 1)
    assert tracker.get_usage_limit("c1", "api").reset_at == at(2027, 2, 28, 9)
    clock.now = at(2027, 3, 1)
    assert tracker.get_usage_limit("c1", "api").reset_at == at(2027, 3, 31, 9)


def test_reset_at_far_ahead_still_yields_the_current_period(tracker, clock):
    tracker.track_usage("c1", "api", 2)
    tracker.set_usage_limit("c1", UsageLimit("api", 10, "daily", clock.now + timedelta(days=30)))
    meter = tracker.get_meter("c1", "api")
    assert meter.reset_at == clock.now + timedelta(days=1)
    assert meter.current == 2


def test_calendar_rollover_restarts_usage(tracker, clock):
    tracker.set_usage_limit("c1", UsageLimit("api", 10, "daily"))
    tracker.track_usage("c1", "api", 10, enforce=True)
    assert not tracker.check_usage_allowed("c1", "api", 1)
    clock.now = at(2026, 3, 19)
    assert tracker.check_usage_allowed("c1", "api", 10)
    tracker.track_usage("c1", "api", 10, enforce=True)
    assert tracker.get_meter("c1", "api").remaining == 0


def test_meters_rolling_over_together_count_their_new_periods_apart(tracker, clock):
    """A batch whose meters all moved to a new day recounts them in one query over the
    customers' events; each meter must still take only its own part (its feature, or every
    model for the AI meters, tokens or cost) and only events of the new day."""
    clock.now = at(2026, 3, 18, 23, 58)
    for customer, feature in (("c1", "api"), ("c1", "sms"), ("c1", "ai_tokens"),
                              ("c1", "ai_cost"), ("c2", "api")):
        tracker.set_usage_limit(customer, UsageLimit(feature, 10**6, "daily"))
    tomorrow = at(2026, 3, 19, 0, 2)  # dated ahead, within the allowed clock skew
    tracker.track_events([
        {"type": "usage", "customer_id": "c1", "feature_id": "api", "usage": 10},
        {"type": "usage", "customer_id": "c1", "feature_id": "api", "usage": 7,
         "timestamp": tomorrow},
        {"type": "usage", "customer_id": "c1", "feature_id": "sms", "usage": 2,
         "timestamp": tomorrow},
        {"type": "ai_usage", "customer_id": "c1", "model_id": "m1", "tokens": 50, "cost": 1.0},
        {"type": "ai_usage", "customer_id": "c1", "model_id": "m1", "tokens": 100,
         "cost": 0.25, "timestamp": tomorrow},
        {"type": "ai_usage", "customer_id": "c1", "model_id": "m2", "tokens": 30,
         "cost": 0.5, "timestamp": tomorrow},
        {"type": "usage", "customer_id": "c2", "feature_id": "api", "usage": 3,
         "timestamp": tomorrow}])
    clock.now = at(2026, 3, 19, 0, 10)
    tracker.track_events([  # one event on each meter: all five roll over in this batch
        {"type": "usage", "customer_id": "c1", "feature_id": "api", "usage": 1},
        {"type": "usage", "customer_id": "c1", "feature_id": "sms", "usage": 1},
        {"type": "ai_usage", "customer_id": "c1", "model_id": "m3", "tokens": 1, "cost": 0.125},
        {"type": "usage", "customer_id": "c2", "feature_id": "api", "usage": 1}])
    current = {(c, f): tracker.get_meter(c, f).current for c, f in (
        ("c1", "api"), ("c1", "sms"), ("c1", "ai_tokens"), ("c1", "ai_cost"), ("c2", "api"))}
    assert current == {("c1", "api"): 8, ("c1", "sms"): 3, ("c1", "ai_tokens"): 131,
                       ("c1", "ai_cost"): 0.875, ("c2", "api"): 4}


def test_enforce_allows_exactly_the_limit_and_rejects_without_recording(tracker):
    tracker.set_usage_limit("c1", UsageLimit("api", 10, "monthly"))
    assert tracker.track_usage("c1", "api", 6, enforce=True)
    with pytest.raises(UsageLimitExceeded) as caught:
        tracker.track_usage("c1", "api", 4.5, enforce=True)
    assert (caught.value.limit, caught.value.current, caught.value.required) == (10, 6, 4.5)
    assert count_rows(tracker, events) == 1
    assert tracker.track_usage("c1", "api", 4, enforce=True)
    assert tracker.get_meter("c1", "api").remaining == 0


def test_without_enforce_metering_never_drops_data(tracker):
    tracker.set_usage_limit("c1", UsageLimit("api", 10, "monthly"))
    assert tracker.track_usage("c1", "api", 25)
    assert tracker.get_meter("c1", "api").remaining == -15
    assert not tracker.check_usage_allowed("c1", "api", 0.001)


def test_check_usage_allowed(tracker):
    assert tracker.check_usage_allowed("c1", "api", 1e15)  # no limit, no credits
    tracker.set_usage_limit("c1", UsageLimit("api", 10, "monthly"))
    tracker.track_usage("c1", "api", 4)
    assert tracker.check_usage_allowed("c1", "api", 6)
    assert not tracker.check_usage_allowed("c1", "api", 6.01)
    check = tracker.check_usage("c1", "api", 7)
    assert (check.allowed, check.reason, check.remaining, check.balance) == \
        (False, "limit_exceeded", 6, None)


def test_ai_budget_limits_ai_cost_and_tokens(tracker):
    tracker.set_usage_limit("c1", UsageLimit("ai_cost", 50, "monthly"))
    tracker.set_usage_limit("c1", UsageLimit("ai_tokens", 10_000, "daily"))
    tracker.track_ai_usage("c1", "gpt-4", 4_000, 30.0, enforce=True)
    tracker.track_ai_usage("c1", "claude", 4_000, 19.5, enforce=True)
    assert tracker.get_meter("c1", "ai_cost").remaining == pytest.approx(0.5)
    with pytest.raises(UsageLimitExceeded) as caught:
        tracker.track_ai_usage("c1", "gpt-4", 100, 0.6, enforce=True)
    assert caught.value.feature_id == "ai_cost"
    with pytest.raises(UsageLimitExceeded) as caught:
        tracker.track_ai_usage("c1", "gpt-4", 2_001, 0.1, enforce=True)
    assert caught.value.feature_id == "ai_tokens"
    assert tracker.get_meter("c1", "ai_tokens").current == 8_000
    assert count_rows(tracker, events) == 2


def test_replacing_and_removing_a_limit(tracker):
    tracker.track_usage("c1", "api", 5)
    tracker.set_usage_limit("c1", UsageLimit("api", 10, "daily"))
    tracker.set_usage_limit("c1", UsageLimit("api", 3, "monthly"))
    limit = tracker.get_usage_limit("c1", "api")
    assert (limit.limit, limit.period.value, limit.reset_at) == (3, "monthly", at(2026, 4, 1))
    assert tracker.get_meter("c1", "api").remaining == -2
    assert tracker.remove_usage_limit("c1", "api") is True
    assert tracker.get_usage_limit("c1", "api") is None
    assert tracker.remove_usage_limit("c1", "api") is False
    meter = tracker.get_meter("c1", "api")
    assert (meter.limit, meter.remaining, meter.current) == (None, None, 5)


def test_limits_are_per_customer_and_feature(tracker):
    tracker.set_usage_limit("c1", UsageLimit("api", 10, "daily"))
    tracker.track_usage("c2", "api", 50, enforce=True)
    tracker.track_usage("c1", "other", 50, enforce=True)
    assert tracker.get_meter("c1", "api").current == 0


def test_without_a_limit_current_usage_is_the_calendar_month(tracker, clock):
    tracker.track_usage("c1", "api", 2, timestamp=at(2026, 3, 1))
    tracker.track_usage("c1", "api", 40, timestamp=at(2026, 2, 28, 23))
    meter = tracker.get_meter("c1", "api")
    assert (meter.current, meter.limit, meter.remaining, meter.reset_at) == \
        (2, None, None, at(2026, 4, 1))


def test_fractional_usage_lands_exactly_on_the_limit(tracker):
    tracker.set_usage_limit("c1", UsageLimit("ai_cost", 0.3, "monthly"))
    tracker.set_usage_limit("c1", UsageLimit("storage", 1, "daily"))
    for _ in range(3):
        tracker.track_ai_usage("c1", "gpt-4", 10, 0.1, enforce=True)  # 0.1 + 0.1 + 0.1 fits 0.3
    for _ in range(10):
        tracker.track_usage("c1", "storage", 0.1, enforce=True)
    with pytest.raises(UsageLimitExceeded):
        tracker.track_ai_usage("c1", "gpt-4", 10, 0.000001, enforce=True)
    with pytest.raises(UsageLimitExceeded):
        tracker.track_usage("c1", "storage", 0.000001, enforce=True)
    assert not tracker.check_usage_allowed("c1", "storage", 0.000001)
