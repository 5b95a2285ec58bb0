"""Every rule of SPEC §3 on input: bad ids, quantities, timestamps and payloads are refused with
a clear error and leave nothing behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from carnil_analytics import UsageLimit, ValidationError
from carnil_analytics.store.schema import events

from helpers import assert_nothing_recorded, count_rows

GOOD_IDS = ["a", "customer_123", "A.b:c@d/e+f-g_h", "9" * 128, "org/team:42"]
BAD_IDS = ["", "_leading", "-x", " space", "a b", "a\nb", "tab\t", "x" * 129, "é", "ａ",
           "quote'", 'dq"', "semi;colon", "comma,", "eq=", "brace{", "a$", "star*",
           "back\\slash", "../etc/passwd", "a\x00b", None, 42, True, b"bytes"]


@pytest.mark.parametrize("good", GOOD_IDS)
def test_valid_identifiers_are_accepted(tracker, good):
    assert tracker.track_usage(good, good, 1) is True
    assert tracker.track_ai_usage(good, good, 10) is True


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("field", ["customer_id", "feature_id", "model_id"])
def test_invalid_identifiers_are_rejected_and_nothing_recorded(tracker, bad, field):
    args = {"customer_id": "c1", "feature_id": "f1", "model_id": "m1"}
    args[field] = bad
    with pytest.raises(ValidationError) as caught:
        if field == "model_id":
            tracker.track_ai_usage(args["customer_id"], args["model_id"], 10)
        else:
            tracker.track_usage(args["customer_id"], args["feature_id"], 1)
    assert caught.value.errors[0].loc == (field,)
    assert_nothing_recorded(tracker)


BAD_USAGE = [-1, -0.0001, float("nan"), float("inf"), float("-inf"), 1e15 + 1e3, True, False,
             "5", None, [1]]


@pytest.mark.parametrize("usage", BAD_USAGE)
def test_invalid_usage_is_rejected(tracker, usage):
    with pytest.raises(ValidationError) as caught:
        tracker.track_usage("c1", "f1", usage)
    assert caught.value.errors[0].loc == ("usage",)
    assert_nothing_recorded(tracker)


@pytest.mark.parametrize("usage", [0, 0.0, 1, 2.5, 1e15])
def test_usage_bounds_are_inclusive(tracker, usage):
    assert tracker.track_usage("c1", "f1", usage)
    assert tracker.get_meter("c1", "f1").current == usage


@pytest.mark.parametrize("tokens", [-1, 1.5, 10.0, 10**12 + 1, True, "10", float("nan")])
def test_invalid_tokens_are_rejected(tracker, tokens):
    with pytest.raises(ValidationError):
        tracker.track_ai_usage("c1", "m1", tokens)
    with pytest.raises(ValidationError):
        tracker.track_ai_usage("c1", "m1", input_tokens=tokens)
    assert_nothing_recorded(tracker)


@pytest.mark.parametrize("cost", [-0.01, float("nan"), float("inf"), 1e9 + 1, "0.1", True])
def test_invalid_cost_is_rejected(tracker, cost):
    with pytest.raises(ValidationError) as caught:
        tracker.track_usage("c1", "f1", 1, cost=cost)
    assert caught.value.errors[0].loc == ("cost",)
    with pytest.raises(ValidationError):
        tracker.track_ai_usage("c1", "m1", 10, cost)
    assert_nothing_recorded(tracker)


def test_token_split_must_be_consistent(tracker):
    with pytest.raises(ValidationError, match="exceed tokens"):
        tracker.track_ai_usage("c1", "m1", 100, input_tokens=80, output_tokens=30)
    with pytest.raises(ValidationError, match="cached_tokens"):
        tracker.track_ai_usage("c1", "m1", input_tokens=10, cached_tokens=11)
    with pytest.raises(ValidationError, match="give tokens"):
        tracker.track_ai_usage("c1", "m1")
    assert_nothing_recorded(tracker)


def test_tokens_default_to_input_plus_output(tracker):
    tracker.track_ai_usage("c1", "m1", input_tokens=300, output_tokens=200, cached_tokens=100)
    (bucket,) = [m for m in tracker.get_ai_usage_metrics("c1", "m1", "day") if m.tokens]
    assert (bucket.tokens, bucket.input_tokens, bucket.output_tokens, bucket.cached_tokens) == \
        (500, 300, 200, 100)


def test_builtin_ai_meters_cannot_be_tracked_as_features(tracker):
    for meter in ("ai_tokens", "ai_cost"):
        with pytest.raises(ValidationError, match="built-in AI meter"):
            tracker.track_usage("c1", meter, 1)
    assert_nothing_recorded(tracker)


def test_timestamp_window(tracker, clock):
    now = clock.now
    assert tracker.track_usage("c1", "f1", 1, timestamp=now + timedelta(minutes=5))
    assert tracker.track_usage("c1", "f1", 1, timestamp=now - timedelta(days=35) +
                               timedelta(seconds=1))
    assert tracker.track_usage("c1", "f1", 1,
                               timestamp=now.astimezone(timezone(timedelta(hours=-7))))
    for bad, reason in [(now + timedelta(minutes=5, seconds=1), "future"),
                        (now - timedelta(days=35, seconds=1), "older than 35 days")]:
        with pytest.raises(ValidationError, match=reason):
            tracker.track_usage("c1", "f1", 1, timestamp=bad)
    with pytest.raises(ValidationError, match="timezone"):
        tracker.track_usage("c1", "f1", 1, timestamp=datetime(2026, 3, 18, 11))
    with pytest.raises(ValidationError):
        tracker.track_usage("c1", "f1", 1, timestamp="2026-03-18T11:00:00Z")
    assert count_rows(tracker, events) == 3


def test_max_event_age_is_configurable(make_tracker, clock):
    tracker = make_tracker({"ingest": {"max_event_age_days": 40}})
    assert tracker.track_usage("c1", "f1", 1, timestamp=clock.now - timedelta(days=39))


@pytest.mark.parametrize("metadata", [
    {"k": 1}, {1: "v"}, {"": "v"}, {"k" * 65: "v"}, {"k": "v" * 257},
    {f"k{i}": "v" for i in range(17)}, ["k", "v"], "k=v",
])
def test_invalid_metadata_is_rejected(tracker, metadata):
    with pytest.raises(ValidationError):
        tracker.track_usage("c1", "f1", 1, metadata=metadata)
    assert_nothing_recorded(tracker)


def test_metadata_is_stored(tracker):
    from sqlalchemy import select

    assert tracker.track_usage("c1", "f1", 1, metadata={"request": "r-1", "region": "eu"})
    with tracker.db.reading() as conn:
        stored = conn.execute(select(events.c.metadata)).scalar()
    assert stored == '{"region": "eu", "request": "r-1"}'


@pytest.mark.parametrize("event_id", ["", "has space", "x" * 256, "tab\tid", "é", 12])
def test_invalid_event_ids_are_rejected(tracker, event_id):
    with pytest.raises(ValidationError) as caught:
        tracker.track_usage("c1", "f1", 1, event_id=event_id)
    assert caught.value.errors[0].loc == ("event_id",)
    assert_nothing_recorded(tracker)


@pytest.mark.parametrize("call", [
    lambda t: t.update_credit_balance("c1", "f1", float("nan")),
    lambda t: t.update_credit_balance("c1", "f1", "10"),
    lambda t: t.update_credit_balance("c1", "f1", True),
    lambda t: t.update_credit_balance("c 1", "f1", 10),
    lambda t: t.update_credit_balance("c1", "f1", 10, reason="r" * 257),
    lambda t: t.update_credit_balance("c1", "f1", 10, reason="nul\x00inside"),
    lambda t: t.update_credit_balance("c1", "f1", 10, reason="escape\x1b[31m"),
    lambda t: t.update_credit_balance("c1", "f1", 10, reason=7),
    lambda t: t.set_usage_limit("c1", {"feature_id": "f1", "limit": 10}),
    lambda t: t.set_usage_limit("bad id", UsageLimit("f1", 10, "daily")),
    lambda t: t.check_usage_allowed("c1", "f1", -1),
    lambda t: t.check_usage_allowed("c1", "f1", float("inf")),
    lambda t: t.get_usage_metrics("c1", "f1", "fortnight"),
    lambda t: t.get_usage_metrics("c1", "f1", start=datetime(2026, 3, 1, tzinfo=UTC)),
    lambda t: t.get_usage_metrics("c1", "f1", start=datetime(2026, 3, 2, tzinfo=UTC),
                                  end=datetime(2026, 3, 1, tzinfo=UTC)),
    lambda t: t.get_usage_metrics("c1", "f1", start=datetime(2026, 3, 1),
                                  end=datetime(2026, 3, 2)),
])
def test_invalid_arguments_of_other_calls_are_rejected(tracker, call):
    with pytest.raises(ValidationError):
        call(tracker)
    assert_nothing_recorded(tracker)


@pytest.mark.parametrize("fields", [
    {"feature_id": "f", "limit": -1, "period": "daily"},
    {"feature_id": "f", "limit": float("nan"), "period": "daily"},
    {"feature_id": "f", "limit": True, "period": "daily"},
    {"feature_id": "f", "limit": 10, "period": "hourly"},
    {"feature_id": "bad id", "limit": 10, "period": "daily"},
    {"feature_id": "f", "limit": 10, "period": "daily", "reset_at": datetime(2026, 3, 20)},
])
def test_invalid_limits_are_rejected(fields):
    from pydantic import ValidationError as PydanticError
    with pytest.raises(PydanticError):
        UsageLimit(**fields)
