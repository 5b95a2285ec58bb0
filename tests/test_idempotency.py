"""Idempotency by event id: replays are reported and not recorded twice; reuse is a conflict."""

from __future__ import annotations

from datetime import timedelta

import pytest

from carnil_analytics import IdempotencyConflict, UsageLimit
from carnil_analytics.store.schema import events

from helpers import count_rows


def test_a_replay_is_reported_and_recorded_once(tracker):
    assert tracker.track_usage("c1", "api", 5, event_id="evt-1") is True
    assert tracker.track_usage("c1", "api", 5, event_id="evt-1") is False
    assert tracker.track_ai_usage("c1", "gpt-4", 100, 0.1, event_id="evt-2") is True
    assert tracker.track_ai_usage("c1", "gpt-4", 100, 0.1, event_id="evt-2") is False
    assert count_rows(tracker, events) == 2
    assert tracker.get_meter("c1", "api").current == 5


def test_a_replay_without_timestamp_later_is_still_a_replay(tracker, clock):
    tracker.track_usage("c1", "api", 5, event_id="evt-1")
    clock.advance(minutes=10)
    assert tracker.track_usage("c1", "api", 5, event_id="evt-1") is False


@pytest.mark.parametrize("changed", [
    {"usage": 6}, {"feature_id": "other"}, {"cost": 0.5}, {"metadata": {"k": "v"}},
    {"timestamp_offset": timedelta(seconds=1)},
])
def test_the_same_id_with_another_payload_is_a_conflict(tracker, clock, changed):
    original = {"feature_id": "api", "usage": 5, "timestamp": clock.now}
    tracker.track_usage("c1", event_id="evt-1", **original)
    other, changed = dict(original), dict(changed)  # the parameter is shared by every store
    offset = changed.pop("timestamp_offset", None)
    other.update(changed)
    if offset:
        other["timestamp"] = clock.now + offset
    with pytest.raises(IdempotencyConflict):
        tracker.track_usage("c1", event_id="evt-1", **other)
    assert count_rows(tracker, events) == 1


def test_event_ids_are_scoped_per_customer(tracker):
    assert tracker.track_usage("c1", "api", 5, event_id="evt-1")
    assert tracker.track_usage("c2", "api", 7, event_id="evt-1")
    assert count_rows(tracker, events) == 2


def test_a_replay_is_not_debited_or_enforced_again(tracker):
    tracker.set_usage_limit("c1", UsageLimit("api", 5, "daily"))
    tracker.update_credit_balance("c1", "api", 5)
    assert tracker.track_usage("c1", "api", 5, event_id="evt-1", enforce=True)
    # the limit and the credits are exhausted, yet the replay is answered, not refused
    assert tracker.track_usage("c1", "api", 5, event_id="evt-1", enforce=True) is False
    meter = tracker.get_meter("c1", "api")
    assert (meter.current, meter.credit_balance) == (5, 0)


def test_replays_inside_a_batch(tracker):
    event = {"type": "usage", "customer_id": "c1", "feature_id": "api", "usage": 1,
             "event_id": "evt-1"}
    result = tracker.track_events([event, event, {**event, "event_id": "evt-2"}])
    assert (result.accepted, result.duplicates) == (2, 1)
    result = tracker.track_events([event, {**event, "event_id": "evt-3"}])
    assert (result.accepted, result.duplicates) == (1, 1)
    with pytest.raises(IdempotencyConflict) as caught:
        tracker.track_events([{**event, "event_id": "evt-9"}, {**event, "usage": 2}])
    assert caught.value.index == 1
    assert count_rows(tracker, events) == 3
