"""The ingest transaction: record events with their rollups, totals, limit and credit counters.

One call records a whole batch in the caller's write transaction, all or nothing. Statements
are grouped (one insert of all events, one upsert per rollup row touched), so a batch of a
thousand events costs a handful of statements, not thousands.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Table, select, text

from ..errors import IdempotencyConflict, InsufficientCredits, UsageLimitExceeded
from ..models import AI_COST_METER, AI_TOKENS_METER
from ..money import from_nanos
from . import locks
from .meters import MeterState, load_meters, save_meters
from .prepared import BulkInsert, Prepared
from .schema import MEASURES, customers, events, rollups_hour, rollups_minute, totals

MINUTE_US = 60_000_000
HOUR_US = 3_600_000_000


@dataclass(frozen=True)
class Recordable:
    """An event validated and priced, ready to be written."""

    kind: str  # "usage" | "ai_usage"
    customer_id: str
    subject: str
    ts_us: int
    quantity: float  # usage, or tokens
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_nanos: int
    event_id: str | None
    fingerprint: str | None
    metadata_json: str | None

    def meter_usage(self) -> list[tuple[str, float]]:
        """What this event adds to each of its customer's meters."""
        if self.kind == "usage":
            return [(self.subject, self.quantity)]
        return [(AI_TOKENS_METER, self.quantity), (AI_COST_METER, from_nanos(self.cost_nanos))]

    def sums(self) -> tuple:
        return (1, self.quantity, self.input_tokens, self.output_tokens, self.cached_tokens,
                self.cost_nanos)


@dataclass(frozen=True)
class Recorded:
    """Which events of a batch were new, and which were replays of recorded ones."""

    duplicate: list[bool]

    @property
    def accepted(self) -> int:
        return self.duplicate.count(False)

    @property
    def duplicates(self) -> int:
        return self.duplicate.count(True)


class BatchError(Exception):
    """An event of a batch was refused; carries its index and the domain error."""

    def __init__(self, index: int, error: Exception):
        super().__init__(str(error))
        self.index, self.error = index, error


def record(conn: Connection, batch: list[Recordable], now: datetime, recorded_us: int,
           enforce: bool) -> Recorded:
    """Record ``batch`` in ``conn``'s write transaction (the caller commits or rolls back).

    Raises ``BatchError`` wrapping ``IdempotencyConflict``, ``UsageLimitExceeded`` or
    ``InsufficientCredits`` for the first event that cannot be recorded.
    """
    locks.lock_customers(conn, {event.customer_id for event in batch})
    duplicate = _find_replays(conn, batch)
    fresh = [event for event, dup in zip(batch, duplicate, strict=True) if not dup]
    if fresh:
        keys = {(e.customer_id, feature) for e in fresh for feature, _ in e.meter_usage()}
        states = load_meters(conn, keys, now, for_update=True)
        _count_against_meters(batch, duplicate, states, enforce)
        save_meters(conn, list(states.values()))
        _write(conn, fresh, recorded_us)
    return Recorded(duplicate)


def _find_replays(conn: Connection, batch: list[Recordable]) -> list[bool]:
    """Mark events whose id is already recorded (or repeated earlier in the batch)."""
    seen = _recorded_fingerprints(
        conn, {(e.customer_id, e.event_id) for e in batch if e.event_id is not None})
    duplicate = []
    for index, event in enumerate(batch):
        key = (event.customer_id, event.event_id)
        if event.event_id is None or key not in seen:
            duplicate.append(False)
            if event.event_id is not None:
                seen[key] = event.fingerprint
        elif seen[key] == event.fingerprint:
            duplicate.append(True)
        else:
            raise BatchError(index, IdempotencyConflict(event.customer_id, event.event_id))
    return duplicate


def _recorded_fingerprints(conn: Connection, wanted: set[tuple[str, str]]
                           ) -> dict[tuple[str, str], str]:
    """The fingerprints of the (customer, event id) pairs already recorded.

    PostgreSQL gets every pair in one round trip, joined through ``unnest`` so that each is
    one probe of the unique index. SQLite, in process, is fastest with a query per customer.
    """
    if not wanted:
        return {}
    if conn.dialect.name == "postgresql":
        customers_, ids = zip(*wanted, strict=True)
        rows = _RECORDED_PAIRS.run(conn, {"customers": list(customers_), "ids": list(ids)})
    else:
        by_customer: dict[str, list[str]] = {}
        for customer_id, event_id in wanted:
            by_customer.setdefault(customer_id, []).append(event_id)
        rows = [row for customer_id, ids in by_customer.items() for row in conn.execute(
            select(events.c.customer_id, events.c.event_id, events.c.fingerprint).where(
                events.c.customer_id == customer_id, events.c.event_id.in_(ids)))]
    return {(customer_id, event_id): fp for customer_id, event_id, fp in rows}


_RECORDED_PAIRS = Prepared(text(
    "SELECT e.customer_id, e.event_id, e.fingerprint "
    "FROM unnest(CAST(:customers AS text[]), CAST(:ids AS text[])) AS v(customer_id, event_id) "
    "JOIN events e ON e.customer_id = v.customer_id AND e.event_id = v.event_id"))


def _count_against_meters(batch: list[Recordable], duplicate: list[bool],
                          states: dict[tuple[str, str], MeterState], enforce: bool) -> None:
    """Add each new event to its meters' period usage and debit their credits, in order."""
    for index, event in enumerate(batch):
        if duplicate[index]:
            continue
        for feature_id, amount in event.meter_usage():
            state = states.get((event.customer_id, feature_id))
            if state is None:
                continue
            counts = state.has_limit and state.in_period(event.ts_us)
            if enforce and counts and not state.limit_fits(amount):
                raise BatchError(index, UsageLimitExceeded(
                    event.customer_id, feature_id, state.limit_value, state.period_usage, amount))
            if enforce and state.credit_metered and not state.credits_cover(amount):
                raise BatchError(index, InsufficientCredits(
                    event.customer_id, feature_id, state.credit_balance, amount))
            if counts:
                state.period_usage += amount
                state.changed = True
            if state.credit_metered:
                state.credit_balance -= amount
                state.changed = True


def _write(conn: Connection, fresh: list[Recordable], recorded_us: int) -> None:
    _INSERT_EVENTS.run(conn, [
        {"kind": e.kind, "customer_id": e.customer_id, "subject": e.subject, "ts_us": e.ts_us,
         "recorded_us": recorded_us, "quantity": e.quantity, "input_tokens": e.input_tokens,
         "output_tokens": e.output_tokens, "cached_tokens": e.cached_tokens,
         "cost_nanos": e.cost_nanos, "event_id": e.event_id, "fingerprint": e.fingerprint,
         "metadata": e.metadata_json} for e in fresh])
    for upsert, width in ((_UPSERT_MINUTE, MINUTE_US), (_UPSERT_HOUR, HOUR_US)):
        buckets = _sum_by(fresh, lambda e, w=width: (e.customer_id, e.ts_us - e.ts_us % w,
                                                     e.kind, e.subject))
        upsert.run(conn, [
            {"customer_id": c, "bucket_us": b, "kind": k, "subject": s, **sums}
            for (c, b, k, s), sums in buckets.items()])
    _number_customers(conn, list(dict.fromkeys(e.customer_id for e in fresh)))
    lifetime = _sum_by(fresh, lambda e: (e.customer_id, e.kind, e.subject))
    _UPSERT_TOTALS.run(conn, [
        {"customer_id": c, "kind": k, "subject": s, "first_recorded_us": recorded_us, **sums}
        for (c, k, s), sums in lifetime.items()])


def _number_customers(conn: Connection, customer_ids: list[str]) -> None:
    """Give customers seen for the first time the next numbers, in commit order."""
    if not locks.writers_take_turns(conn):  # else commits are already in order
        known = set(conn.execute(select(customers.c.customer_id).where(
            customers.c.customer_id.in_(customer_ids))).scalars())
        customer_ids = [c for c in customer_ids if c not in known]
        if not customer_ids:
            return
        locks.lock_numbering(conn)
    _NUMBER_CUSTOMERS.run(conn, [{"customer_id": c} for c in customer_ids])


def _sum_by(batch: list[Recordable], key) -> dict[tuple, dict[str, float | int]]:
    sums: dict[tuple, list] = {}
    for event in batch:
        row = sums.get(key(event))
        if row is None:
            sums[key(event)] = list(event.sums())
        else:
            for i, value in enumerate(event.sums()):
                row[i] += value
    return {k: dict(zip(MEASURES, v, strict=True)) for k, v in sums.items()}


def _upsert(table: Table, key: tuple[str, ...]) -> BulkInsert:
    """INSERT … ON CONFLICT DO UPDATE that adds the summed columns to an existing row.

    Written as text, in the form SQLite (3.24+) and PostgreSQL both accept, because
    SQLAlchemy's ``on_conflict_do_update`` constructs cannot be compiled once and reused.
    """
    added = ", ".join(f"{c} = {table.name}.{c} + excluded.{c}" for c in MEASURES)
    return BulkInsert(table, [c.name for c in table.columns],
                      f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {added}")


_INSERT_EVENTS = BulkInsert(  # seq and xact: the store's defaults
    events, [c.name for c in events.columns if c.name not in ("seq", "xact")])
_NUMBER_CUSTOMERS = BulkInsert(customers, ["customer_id"], "ON CONFLICT (customer_id) DO NOTHING")
_ROLLUP_KEY = ("customer_id", "bucket_us", "kind", "subject")
_UPSERT_MINUTE = _upsert(rollups_minute, _ROLLUP_KEY)
_UPSERT_HOUR = _upsert(rollups_hour, _ROLLUP_KEY)
_UPSERT_TOTALS = _upsert(totals, ("customer_id", "kind", "subject"))
