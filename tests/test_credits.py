"""Credit balances: the ledger, debits by later usage, and enforcement."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from carnil_analytics import InsufficientCredits, UsageLimit, UsageLimitExceeded
from carnil_analytics.store.schema import credit_ledger, events

from helpers import count_rows


def test_a_pair_never_credited_has_zero_balance_and_is_not_metered(tracker):
    tracker.track_usage("c1", "api", 10)
    assert tracker.get_credit_balance("c1", "api") == 0
    assert tracker.get_meter("c1", "api").credit_metered is False
    assert tracker.check_usage_allowed("c1", "api", 10**6)


def test_grants_and_adjustments_are_kept_in_the_ledger(tracker):
    assert tracker.update_credit_balance("c1", "api", 100, reason="welcome") is True
    assert tracker.update_credit_balance("c1", "api", -30) is True
    assert tracker.update_credit_balance("c1", "api", 2.5, reason="refund\tticket #12\n") is True
    assert tracker.get_credit_balance("c1", "api") == 72.5
    with tracker.db.reading() as conn:
        ledger = conn.execute(select(credit_ledger.c.amount, credit_ledger.c.balance_after,
                                     credit_ledger.c.reason)
                              .order_by(credit_ledger.c.entry_id)).all()
    assert ledger == [(100, 100, "welcome"), (-30, 70, None), (2.5, 72.5, "refund\tticket #12\n")]


def test_only_later_usage_is_debited(tracker):
    tracker.track_usage("c1", "api", 40)
    tracker.update_credit_balance("c1", "api", 100)
    tracker.track_usage("c1", "api", 15)
    tracker.track_usage("c2", "api", 15)  # another customer's meter
    assert tracker.get_credit_balance("c1", "api") == 85
    assert tracker.get_credit_balance("c2", "api") == 0


def test_ai_credits_are_debited_by_cost_and_by_tokens(tracker):
    tracker.update_credit_balance("c1", "ai_cost", 10)
    tracker.update_credit_balance("c1", "ai_tokens", 5_000)
    tracker.track_ai_usage("c1", "gpt-4", 1_200, 0.75)
    tracker.track_ai_usage("c1", "claude", input_tokens=300, output_tokens=100, cost=0.25)
    assert tracker.get_credit_balance("c1", "ai_cost") == 9
    assert tracker.get_credit_balance("c1", "ai_tokens") == 3_400


def test_enforce_rejects_insufficient_credits_and_records_nothing(tracker):
    tracker.update_credit_balance("c1", "api", 10)
    assert tracker.track_usage("c1", "api", 10, enforce=True)  # exactly the balance
    with pytest.raises(InsufficientCredits) as caught:
        tracker.track_usage("c1", "api", 0.5, enforce=True)
    assert (caught.value.balance, caught.value.required) == (0, 0.5)
    assert count_rows(tracker, events) == 1
    assert tracker.get_credit_balance("c1", "api") == 0


def test_without_enforce_the_balance_goes_negative(tracker):
    tracker.update_credit_balance("c1", "api", 10)
    tracker.track_usage("c1", "api", 25)
    assert tracker.get_credit_balance("c1", "api") == -15
    check = tracker.check_usage("c1", "api", 1)
    assert (check.allowed, check.reason, check.balance, check.remaining) == \
        (False, "insufficient_credits", -15, None)


def test_limit_and_credits_together(tracker):
    tracker.set_usage_limit("c1", UsageLimit("api", 100, "monthly"))
    tracker.update_credit_balance("c1", "api", 20)
    assert tracker.check_usage("c1", "api", 20).allowed
    check = tracker.check_usage("c1", "api", 21)
    assert (check.allowed, check.reason, check.remaining, check.balance) == \
        (False, "insufficient_credits", 100, 20)
    tracker.update_credit_balance("c1", "api", 1000)
    tracker.track_usage("c1", "api", 90, enforce=True)
    with pytest.raises(UsageLimitExceeded):
        tracker.track_usage("c1", "api", 11, enforce=True)
    meter = tracker.get_meter("c1", "api")
    assert (meter.remaining, meter.credit_balance) == (10, 930)
    # removing the limit keeps the credits
    tracker.remove_usage_limit("c1", "api")
    assert tracker.get_credit_balance("c1", "api") == 930
    assert tracker.get_meter("c1", "api").credit_metered is True


def test_fractional_debits_land_exactly_on_the_balance(tracker):
    tracker.update_credit_balance("c1", "ai_cost", 0.3)
    for _ in range(3):
        tracker.track_ai_usage("c1", "gpt-4", 10, 0.1, enforce=True)
    with pytest.raises(InsufficientCredits):
        tracker.track_ai_usage("c1", "gpt-4", 10, 0.000001, enforce=True)
