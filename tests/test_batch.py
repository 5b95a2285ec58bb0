"""The batch write path: one transaction, all or nothing, errors name the failing event."""

from __future__ import annotations

from datetime import timedelta

import pytest

from carnil_analytics import (
    AIUsageEvent,
    InsufficientCredits,
    UsageEvent,
    UsageLimit,
    UsageLimitExceeded,
    ValidationError,
)

from helpers import assert_nothing_recorded


def usage(customer="c1", feature="api", amount=1.0, **extra):
    return {"type": "usage", "customer_id": customer, "feature_id": feature, "usage": amount,
            **extra}


def ai(customer="c1", model="gpt-4", tokens=100, **extra):
    return {"type": "ai_usage", "customer_id": customer, "model_id": model, "tokens": tokens,
            **extra}


def test_a_mixed_batch_is_recorded(tracker, clock):
    batch = [usage(amount=2), ai(cost=0.5), usage("c2", "storage", 3.5),
             UsageEvent(customer_id="c1", feature_id="api", usage=1.0),
             AIUsageEvent(customer_id="c1", model_id="gpt-4", input_tokens=10, output_tokens=5),
             usage(amount=1, timestamp=clock.now - timedelta(days=2))]
    result = tracker.track_events(batch)
    assert (result.accepted, result.duplicates) == (6, 0)
    report = tracker.reports.customer_report("c1", "week")
    assert report.summary.total_usage == 4
    assert [m.tokens for m in report.top_models] == [115]


@pytest.mark.parametrize("bad, loc", [
    (usage(amount=-1), (2, "usage", "usage")),
    (usage(customer="bad id"), (2, "usage", "customer_id")),
    ({"type": "other", "customer_id": "c1"}, (2,)),
    ({"customer_id": "c1", "feature_id": "api", "usage": 1}, (2,)),
    (usage(extra_field=1), (2, "usage", "extra_field")),
    (ai(tokens=None), (2, "ai_usage")),
    ("not an event", (2,)),
])
def test_one_bad_event_rejects_the_batch_with_its_index(tracker, bad, loc):
    with pytest.raises(ValidationError) as caught:
        tracker.track_events([usage(), ai(), bad, usage()])
    assert caught.value.index == 2
    assert caught.value.errors[0].loc[:len(loc)] == loc
    assert_nothing_recorded(tracker)


def test_a_timestamp_out_of_window_rejects_the_batch(tracker, clock):
    with pytest.raises(ValidationError) as caught:
        tracker.track_events([usage(), usage(timestamp=clock.now + timedelta(hours=1))])
    assert caught.value.index == 1
    assert caught.value.errors[0].loc == (1, "timestamp")
    assert_nothing_recorded(tracker)


def test_enforced_batch_is_checked_event_by_event_and_all_or_nothing(tracker):
    tracker.set_usage_limit("c1", UsageLimit("api", 10, "daily"))
    with pytest.raises(UsageLimitExceeded) as caught:
        tracker.track_events([usage(amount=4), usage("c2", amount=100), usage(amount=6),
                              usage(amount=0.5)], enforce=True)
    assert caught.value.index == 3
    assert tracker.get_meter("c1", "api").current == 0
    tracker.update_credit_balance("c2", "api", 5)
    with pytest.raises(InsufficientCredits) as caught:
        tracker.track_events([usage("c2", amount=5), usage("c2", amount=1)], enforce=True)
    assert caught.value.index == 1
    assert tracker.get_credit_balance("c2", "api") == 5
    result = tracker.track_events([usage(amount=4), usage(amount=6)], enforce=True)
    assert result.accepted == 2


def test_an_empty_batch_records_nothing(tracker):
    result = tracker.track_events([])
    assert (result.accepted, result.duplicates) == (0, 0)
    assert_nothing_recorded(tracker)


def test_a_batch_of_one_still_names_the_index(tracker):
    tracker.set_usage_limit("c1", UsageLimit("api", 1, "daily"))
    with pytest.raises(UsageLimitExceeded) as caught:
        tracker.track_events([usage(amount=2)], enforce=True)
    assert caught.value.index == 0
    with pytest.raises(UsageLimitExceeded) as caught:
        tracker.track_usage("c1", "api", 2, enforce=True)
    assert caught.value.index is None
