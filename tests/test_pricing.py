"""Cost: explicit cost wins, else the price list, else zero; sums are exact to 1e-9."""

from __future__ import annotations

from decimal import Decimal

import pytest

from carnil_analytics.money import from_nanos, to_nanos

PRICING = {"pricing": {
    "currency": "EUR",
    "features": {"api": {"unit_price": 0.0004}, "sms": {"unit_price": 0.07}},
    "models": {
        "split": {"input_per_1k": 0.003, "output_per_1k": 0.015, "cached_input_per_1k": 0.0003},
        "flat": {"per_1k": 0.002},
        "mixed": {"input_per_1k": 0.01, "output_per_1k": 0.03, "per_1k": 0.02},
        "input_only": {"input_per_1k": 0.004},
    },
}}


@pytest.fixture
def priced(make_tracker):
    return make_tracker(PRICING)


def cost_of_day(tracker, customer="c1") -> float:
    return tracker.reports.customer_report(customer, "day").summary.total_cost


@pytest.mark.parametrize("call, expected", [
    (lambda t: t.track_usage("c1", "api", 2500), Decimal("1")),
    (lambda t: t.track_usage("c1", "api", 2500, cost=0.25), Decimal("0.25")),  # explicit wins
    (lambda t: t.track_usage("c1", "unpriced", 99), Decimal("0")),
    (lambda t: t.track_usage("c1", "sms", 3), Decimal("0.21")),
    # (input − cached)·in + cached·cached + output·out = 800·0.003 + 200·0.0003 + 500·0.015
    (lambda t: t.track_ai_usage("c1", "split", input_tokens=1000, output_tokens=500,
                                cached_tokens=200), Decimal("0.00996")),
    (lambda t: t.track_ai_usage("c1", "flat", 1500), Decimal("0.003")),
    (lambda t: t.track_ai_usage("c1", "flat", input_tokens=1000, output_tokens=1000),
     Decimal("0.004")),
    # 500·0.01 + 500·0.03 + 1000 unsplit·0.02 (per_1k)
    (lambda t: t.track_ai_usage("c1", "mixed", 2000, input_tokens=500, output_tokens=500),
     Decimal("0.04")),
    # no output price and no per_1k: output is free, unsplit tokens take the input price
    (lambda t: t.track_ai_usage("c1", "input_only", 3000, output_tokens=1000),
     Decimal("0.008")),
    (lambda t: t.track_ai_usage("c1", "split", 1000, 0.5), Decimal("0.5")),
    (lambda t: t.track_ai_usage("c1", "unknown", 1000), Decimal("0")),
])
def test_cost_of_an_event(priced, call, expected):
    call(priced)
    assert cost_of_day(priced) == float(expected)
    assert priced.reports.customer_report("c1").currency == "EUR"


def test_ten_thousand_tenths_sum_to_exactly_one_thousand(tracker):
    batch = [{"type": "usage", "customer_id": "c1", "feature_id": "api", "usage": 1,
              "cost": 0.1} for _ in range(10_000)]
    tracker.track_events(batch)
    assert sum(0.1 for _ in range(10_000)) != 1000  # what float accumulation would give
    assert cost_of_day(tracker) == 1000
    assert tracker.reports.cost_analysis("c1").total_cost == 1000


def test_three_tenths_are_three_tenths(tracker):
    for _ in range(3):
        tracker.track_usage("c1", "api", 1, cost=0.1)
    assert 0.1 + 0.1 + 0.1 != 0.3
    assert cost_of_day(tracker) == 0.3


def test_priced_costs_sum_exactly(priced):
    for _ in range(7):
        priced.track_usage("c1", "sms", 1)  # 0.07 each
    assert cost_of_day(priced) == 0.49


@pytest.mark.parametrize("amount, nanos", [
    (0.1, 100_000_000), (1e-9, 1), (4e-10, 0), (6e-10, 1), (5e-10, 0), (1.5e-9, 2),
    (1e9, 10**18), (Decimal("0.123456789123"), 123_456_789), (0, 0), (7, 7 * 10**9),
])
def test_money_rounds_once_to_nano_units(amount, nanos):
    assert to_nanos(amount) == nanos
    assert from_nanos(nanos) == float(Decimal(nanos) / 10**9)
