"""The store-backed collector: every business metric read from the store at scrape time,
written in the Prometheus text format (``exposition.py`` says why not through
prometheus_client's renderer).

Counters come from durable lifetime totals, so they survive restarts and every replica reports
the same values. Nothing per customer is kept between scrapes. A scrape never fails: if the
store cannot be read it answers ``carnil_up 0`` and logs why.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection, func, or_, select

from ..config import Settings
from ..models import AI_COST_METER, AI_TOKENS_METER, to_micros
from ..money import from_nanos
from ..store import labels, outbox
from ..store.database import Database
from ..store.meters import MeterState, due_for_rollover, roll_over, save_rollovers
from ..store.queries import trailing_rate
from ..store.schema import MEASURES, meters, rollups_minute, totals
from .exposition import TextFamily
from .families import EXPORTER, business

log = logging.getLogger(__name__)

ROLLOVERS_PER_TRANSACTION = 200


class StoreCollector:
    def __init__(self, db: Database, settings: Settings, clock: Callable[[], datetime]):
        self._db, self._clock = db, clock
        self._max_customers = settings.prometheus.max_customers
        self._rate_window_us = settings.real_time.rate_window_seconds * 1_000_000
        self._families = business(settings.pricing.currency)
        self._mirror = settings.influxdb.enabled

    def render(self) -> bytes:
        """The business metrics in the Prometheus text format."""
        started = time.perf_counter()
        now = self._clock()
        self._save_rollovers(now)
        try:
            with self._db.reading() as conn:
                families = self._read(conn, now)
            up = 1
        except Exception:  # a scrape must still answer; the reason goes to the log
            log.exception("cannot read the store for /metrics")
            families, up = [], 0
        families.append(_single(EXPORTER["carnil_up"], up))
        families.append(_single(EXPORTER["carnil_exporter_scrape_duration_seconds"],
                                time.perf_counter() - started))
        return "".join(family.text() for family in families).encode()

    def _save_rollovers(self, now: datetime) -> None:
        """After a reset, recount each meter's new period once and save it, a few meters per
        transaction (so ingest never waits long for them); otherwise every scrape would
        recount every meter that has not seen an event since the reset. If the store cannot
        be written, the read below rolls them over in memory all the same."""
        try:
            with self._db.reading() as conn:
                due = due_for_rollover(conn, to_micros(now))
            for start in range(0, len(due), ROLLOVERS_PER_TRANSACTION):
                with self._db.writing() as conn:
                    save_rollovers(conn, due[start:start + ROLLOVERS_PER_TRANSACTION], now)
        except Exception as exc:  # never fails a scrape: the read below decides about up
            log.warning("cannot save the meters' rollover: %s", exc)

    def _read(self, conn: Connection, now: datetime) -> list[TextFamily]:
        family = {name: f.new() for name, f in self._families.items()}
        own_label = labels.labelled(conn, self._max_customers)
        folded = self._counters(conn, family, own_label)
        self._meters(conn, family, own_label, now)
        out = list(family.values())
        out.append(_single(EXPORTER["carnil_exporter_customers_folded"], folded))
        if self._mirror:
            out.extend(_mirror(conn, now))
        return out

    def _counters(self, conn: Connection, family: dict, own_label: set[str]) -> int:
        """Lifetime counters; returns how many customers were folded into "__other__"."""
        baselines = labels.baselines(conn)
        other: dict[tuple[str, str], list] = defaultdict(lambda: [0] * len(MEASURES))
        folded = set()
        rows = conn.execute(select(totals.c.customer_id, totals.c.kind, totals.c.subject,
                                   *(totals.c[m] for m in MEASURES)))
        for customer, kind, subject, *sums in rows:
            if customer in own_label:
                base = baselines.get((customer, kind, subject))
                if base is not None:
                    _add(other[(kind, subject)], base)
                    sums = [value - b for value, b in zip(sums, base, strict=True)]
                _emit_totals(family, customer, kind, subject, sums)
            else:
                folded.add(customer)
                _add(other[(kind, subject)], sums)
        for (kind, subject), sums in other.items():
            _emit_totals(family, labels.OTHER, kind, subject, sums)
        return len(folded)

    def _meters(self, conn: Connection, family: dict, own_label: set[str],
                now: datetime) -> None:
        now_us = to_micros(now)
        rates = self._rates(conn, now_us, own_label)
        for (customer, feature), rate in rates.items():
            family["carnil_usage_rate_per_minute"].add([customer, feature], rate)
        states = [MeterState.from_row(row) for row in conn.execute(select(meters).where(
            or_(meters.c.limit_value.is_not(None), meters.c.credit_metered)))]
        roll_over(conn, states, now)  # in memory: those whose rollover could not be saved
        for state in states:
            labels_ = [state.customer_id, state.feature_id]
            if state.credit_metered:
                family["carnil_credit_balance"].add(labels_, state.credit_balance)
            if not state.has_limit:
                continue
            remaining = state.limit_value - state.period_usage
            family["carnil_usage_current"].add(labels_, state.period_usage)
            family["carnil_usage_limit"].add([*labels_, state.period], state.limit_value)
            family["carnil_usage_remaining"].add(labels_, remaining)
            family["carnil_usage_limit_utilization_ratio"].add(
                labels_, _ratio(state.period_usage, state.limit_value))
            family["carnil_usage_limit_reset_timestamp_seconds"].add(
                labels_, state.period_end_us / 1e6)
            rate = rates.get(tuple(labels_), 0.0)
            if rate > 0:
                family["carnil_usage_limit_exhaustion_seconds"].add(
                    labels_, max(0.0, remaining) / (rate / 60))

    def _rates(self, conn: Connection, now_us: int,
               own_label: set[str]) -> dict[tuple[str, str], float]:
        """Usage per minute of every meter active in the trailing window."""
        since = now_us - self._rate_window_us
        since -= since % 60_000_000
        per_minute: dict[tuple[str, str], dict[int, float]] = \
            defaultdict(lambda: defaultdict(float))
        rows = conn.execute(
            select(rollups_minute.c.customer_id, rollups_minute.c.kind,
                   rollups_minute.c.subject, rollups_minute.c.bucket_us,
                   func.sum(rollups_minute.c.quantity), func.sum(rollups_minute.c.cost_nanos))
            .where(rollups_minute.c.bucket_us >= since)
            .group_by(rollups_minute.c.customer_id, rollups_minute.c.kind,
                      rollups_minute.c.subject, rollups_minute.c.bucket_us))
        for customer, kind, subject, bucket, quantity, cost_nanos in rows:
            customer = customer if customer in own_label else labels.OTHER
            if kind == "usage":
                per_minute[(customer, subject)][bucket] += quantity
            else:
                per_minute[(customer, AI_TOKENS_METER)][bucket] += quantity
                per_minute[(customer, AI_COST_METER)][bucket] += from_nanos(cost_nanos)
        return {key: trailing_rate(list(minutes.items()), now_us, self._rate_window_us)
                for key, minutes in per_minute.items()}


def _emit_totals(family: dict, customer: str, kind: str, subject: str, sums) -> None:
    sums = dict(zip(MEASURES, sums, strict=True))
    cost = from_nanos(int(sums["cost_nanos"]))
    if kind == "usage":
        family["carnil_usage"].add([customer, subject], sums["quantity"])
        family["carnil_usage_cost"].add([customer, subject], cost)
        return
    tokens = family["carnil_ai_tokens"]
    unspecified = sums["quantity"] - sums["input_tokens"] - sums["output_tokens"]
    for token_type, value in (("input", sums["input_tokens"]), ("output", sums["output_tokens"]),
                              ("cached", sums["cached_tokens"]), ("unspecified", unspecified)):
        tokens.add([customer, subject, token_type], value)
    family["carnil_ai_cost"].add([customer, subject], cost)


def _add(into: list, values) -> None:
    for i, value in enumerate(values):
        into[i] += value


def _ratio(current: float, limit: float) -> float:
    if limit > 0:
        return current / limit
    return math.inf if current > 0 else 0.0


def _single(definition, value: float) -> TextFamily:
    family = definition.new()
    family.add((), value)
    return family


def _mirror(conn: Connection, now: datetime) -> list[TextFamily]:
    mark = outbox.read_mark(conn)
    backlog = outbox.backlog(conn)
    oldest_age = 0.0 if backlog.oldest_recorded_us is None else \
        max(0.0, (to_micros(now) - backlog.oldest_recorded_us) / 1e6)
    return [
        _single(EXPORTER["carnil_influx_outbox_backlog"], backlog.events),
        _single(EXPORTER["carnil_influx_outbox_oldest_age_seconds"], oldest_age),
        _single(EXPORTER["carnil_influx_points_written"], mark.points_written),
        _single(EXPORTER["carnil_influx_points_rejected"], mark.points_rejected),
        _single(EXPORTER["carnil_influx_write_errors"], mark.write_errors),
    ]

