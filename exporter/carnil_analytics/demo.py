"""Synthetic traffic for a few customers over the last 30 days, so every report has data.

Traffic follows a daily rhythm (busiest in the afternoon, UTC) and a weekly one (quiet
weekends), with noise from a seeded generator: the same seed gives the same history.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import datetime, timedelta

from tqdm import tqdm

from .models import UsageLimit
from .tracker import UsageTracker

DAYS = 30
EVENTS_PER_BATCH = 1000

# customer -> how busy it is relative to the others
CUSTOMERS = {"acme": 1.0, "globex": 0.6, "initech": 0.3, "umbrella": 1.6, "hooli": 0.15}
# feature -> (mean usage per event, unit price)
FEATURES = {"api_calls": (40, 0.0005), "messages": (6, 0.002), "storage_gb": (0.5, 0.02),
            "webhooks": (3, 0.0001)}
# model -> (mean tokens per call, input price per 1k, output price per 1k)
MODELS = {"gpt-4o": (1800, 0.0025, 0.01), "gpt-4o-mini": (1200, 0.00015, 0.0006),
          "claude-sonnet-4": (2200, 0.003, 0.015)}
EVENTS_PER_HOUR = 3  # per customer and feature/model, at full activity


def activity(moment: datetime) -> float:
    """How busy an hour is, 0.1–1: peaks at 14:00 UTC, weekends at 40 %."""
    daily = 0.55 + 0.45 * math.cos((moment.hour - 14) / 24 * 2 * math.pi)
    weekly = 0.4 if moment.weekday() >= 5 else 1.0
    return max(0.1, daily * weekly)


def synthetic_events(now: datetime, rng: random.Random) -> Iterator[dict]:
    """Events for every customer over the last ``DAYS`` days, oldest first."""
    start = (now - timedelta(days=DAYS)).replace(minute=0, second=0, microsecond=0)
    hour = start + timedelta(hours=1)
    while hour < now:
        busy = activity(hour)
        for customer, scale in CUSTOMERS.items():
            yield from _hour_of(customer, hour, busy * scale, now, rng)
        hour += timedelta(hours=1)


def _hour_of(customer: str, hour: datetime, busy: float, now: datetime,
             rng: random.Random) -> Iterator[dict]:
    def moments():
        for _ in range(_poisson(rng, EVENTS_PER_HOUR * busy)):
            moment = hour + timedelta(seconds=rng.uniform(0, 3600))
            if moment < now:
                yield moment

    for feature, (mean, price) in FEATURES.items():
        for moment in moments():
            usage = round(rng.expovariate(1 / mean), 3) if mean < 1 else \
                float(max(1, round(rng.expovariate(1 / mean))))
            yield {"type": "usage", "customer_id": customer, "feature_id": feature,
                   "usage": usage, "cost": round(usage * price, 9), "timestamp": moment}
    for model, (mean, input_price, output_price) in MODELS.items():
        for moment in moments():
            tokens = max(10, round(rng.expovariate(1 / mean)))
            output = round(tokens * rng.uniform(0.1, 0.4))
            cost = (tokens - output) / 1000 * input_price + output / 1000 * output_price
            yield {"type": "ai_usage", "customer_id": customer, "model_id": model,
                   "input_tokens": tokens - output, "output_tokens": output,
                   "cost": round(cost, 9), "timestamp": moment}


def _poisson(rng: random.Random, mean: float) -> int:
    count, threshold, product = 0, math.exp(-mean), rng.random()
    while product > threshold:
        count += 1
        product *= rng.random()
    return count


def fill(tracker: UsageTracker, now: datetime, seed: int = 7, progress: bool = True) -> int:
    """Record the synthetic history, limits and credits; returns the number of events."""
    rng = random.Random(seed)
    hours = DAYS * 24
    recorded, batch = 0, []
    with tqdm(total=hours, unit="h", desc="demo traffic", disable=not progress) as bar:
        last_hour = None
        for event in synthetic_events(now, rng):
            batch.append(event)
            if len(batch) >= EVENTS_PER_BATCH:
                recorded += tracker.track_events(batch).accepted
                batch = []
            hour = event["timestamp"].replace(minute=0, second=0, microsecond=0)
            if hour != last_hour:
                bar.update(0 if last_hour is None else 1)
                last_hour = hour
        if batch:
            recorded += tracker.track_events(batch).accepted
        bar.update(hours - bar.n)
    _limits_and_credits(tracker)
    return recorded


def _limits_and_credits(tracker: UsageTracker) -> None:
    """Limits that some customers are close to, and credit balances, one of them running low."""
    tracker.set_usage_limit("acme", UsageLimit("api_calls", 100_000, "monthly"))
    tracker.set_usage_limit("acme", UsageLimit("ai_cost", 50, "monthly"))
    tracker.set_usage_limit("umbrella", UsageLimit("messages", 600, "daily"))
    tracker.set_usage_limit("globex", UsageLimit("ai_tokens", 2_000_000, "weekly"))
    tracker.update_credit_balance("initech", "api_calls", 50_000, reason="demo: starter pack")
    tracker.update_credit_balance("hooli", "ai_cost", 5, reason="demo: prepaid AI budget")
