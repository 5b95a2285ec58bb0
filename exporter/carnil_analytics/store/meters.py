"""The limit and credit state of meters: loading, rollover, limits and the credit ledger.

A meter is a customer's feature, or one of its built-in ``ai_tokens``/``ai_cost`` meters. Its
row holds the usage of the current limit period as a running counter, so a check reads one row.
When the period has ended the counter is rebuilt from the raw events of the new period.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    tuple_,
    update,
)

from ..models import AI_COST_METER, AI_TOKENS_METER, UsageLimit, from_micros, to_micros
from ..money import from_nanos
from ..periods import LimitPeriod, Window, limit_window
from . import labels, locks
from .prepared import Prepared
from .schema import credit_ledger, events, meters


@dataclass
class MeterState:
    """One meter's row, as the current transaction sees it."""

    customer_id: str
    feature_id: str
    limit_value: float | None
    period: str | None
    reset_anchor_us: int | None
    period_start_us: int | None
    period_end_us: int | None
    period_usage: float
    credit_metered: bool
    credit_balance: float
    changed: bool = False

    @classmethod
    def from_row(cls, row) -> MeterState:
        """From a row of ``select(meters)`` (its columns are in this class's field order)."""
        state = cls(*row)
        state.credit_metered = bool(state.credit_metered)  # the raw driver gives 0/1
        return state

    @property
    def key(self) -> tuple[str, str]:
        return self.customer_id, self.feature_id

    @property
    def has_limit(self) -> bool:
        return self.limit_value is not None

    def window(self, now: datetime) -> Window:
        anchor = None if self.reset_anchor_us is None else from_micros(self.reset_anchor_us)
        return limit_window(LimitPeriod(self.period), now, anchor)

    def new_period(self, now: datetime) -> tuple[int, int] | None:
        """The limit period containing ``now`` as (start, end), if it is not the stored one."""
        if not self.has_limit:
            return None
        window = self.window(now)
        period = (to_micros(window.start), to_micros(window.end))
        return None if period == (self.period_start_us, self.period_end_us) else period

    def roll_over(self, conn: Connection, now: datetime) -> None:
        """Move the counter to the period containing ``now``, if that period has changed."""
        roll_over(conn, [self], now)

    def limit_fits(self, amount: float) -> bool:
        """Whether ``amount`` more usage stays within the limit this period."""
        return self.period_usage + amount <= self.limit_value + _slack(self.limit_value)

    def credits_cover(self, amount: float) -> bool:
        """Whether the balance covers ``amount``."""
        return self.credit_balance + _slack(amount) >= amount

    def in_period(self, ts_us: int) -> bool:
        return self.period_start_us <= ts_us < self.period_end_us

    def as_limit(self) -> UsageLimit:
        return UsageLimit(self.feature_id, self.limit_value, LimitPeriod(self.period),
                          from_micros(self.period_end_us))


def _slack(scale: float) -> float:
    """Period usage and balances are running sums of doubles (0.1 + 0.1 + 0.1 is a hair above
    0.3), so what lands within a billionth of the cap, relatively, still fits it."""
    return 1e-9 * max(1.0, abs(scale))


_MUTABLE = ("limit_value", "period", "reset_anchor_us", "period_start_us", "period_end_us",
            "period_usage", "credit_metered", "credit_balance")


def load_meters(conn: Connection, keys: set[tuple[str, str]], now: datetime,
                for_update: bool = False) -> dict[tuple[str, str], MeterState]:
    """The meters among ``keys`` that have a row, rolled over to the period of ``now``."""
    if not keys:
        return {}
    if len(keys) == 1:  # the common case, run as a prepared statement
        ((customer_id, feature_id),) = keys
        query = _SELECT_ONE_FOR_UPDATE if for_update else _SELECT_ONE
        rows = query.run(conn, {"b_customer": customer_id, "b_feature": feature_id})
    else:
        query = select(meters).where(
            tuple_(meters.c.customer_id, meters.c.feature_id).in_(list(keys)))
        rows = conn.execute(query.with_for_update() if for_update else query).all()
    states = [MeterState.from_row(row) for row in rows]
    roll_over(conn, states, now)
    return {state.key: state for state in states}


def roll_over(conn: Connection, states: list[MeterState], now: datetime) -> None:
    """Move each meter whose period has changed to the period containing ``now``, its usage
    counted from the raw events: one query per new period, whatever the number of meters
    (after a reset, every daily meter moves to the same new day)."""
    due: dict[tuple[int, int], list[MeterState]] = defaultdict(list)
    for state in states:
        period = state.new_period(now)
        if period is not None:
            due[period].append(state)
    for (start_us, end_us), group in due.items():
        usage = meters_usage_between(conn, [state.key for state in group], start_us, end_us)
        for state in group:
            state.period_start_us, state.period_end_us = start_us, end_us
            state.period_usage = usage[state.key]
            state.changed = True


_ONE_METER = select(meters).where(meters.c.customer_id == bindparam("b_customer"),
                                  meters.c.feature_id == bindparam("b_feature"))
_SELECT_ONE = Prepared(_ONE_METER)
_SELECT_ONE_FOR_UPDATE = Prepared(_ONE_METER.with_for_update())


def load_meter(conn: Connection, customer_id: str, feature_id: str, now: datetime,
               for_update: bool = False) -> MeterState | None:
    return load_meters(conn, {(customer_id, feature_id)}, now, for_update).get(
        (customer_id, feature_id))


def save_meters(conn: Connection, states: list[MeterState]) -> None:
    """Write back the meters whose state changed in this transaction."""
    changed = [s for s in states if s.changed]
    if not changed:
        return
    _UPDATE_METER.run_many(conn, [{"b_customer": s.customer_id, "b_feature": s.feature_id,
                                    **{name: getattr(s, name) for name in _MUTABLE}}
                                   for s in changed])


_UPDATE_METER = Prepared(
    update(meters).where(meters.c.customer_id == bindparam("b_customer"),
                         meters.c.feature_id == bindparam("b_feature"))
    .values({name: bindparam(name) for name in _MUTABLE}))


@dataclass(frozen=True)
class MeterSource:
    """Where a meter's usage lives in the events and rollup tables (they share column names)."""

    kind: str
    subject: str | None  # None: every subject of the kind (the AI meters sum all models)
    column: str  # "quantity", or "cost_nanos" for the ai_cost meter

    @classmethod
    def of(cls, feature_id: str) -> MeterSource:
        if feature_id == AI_COST_METER:
            return cls("ai_usage", None, "cost_nanos")
        if feature_id == AI_TOKENS_METER:
            return cls("ai_usage", None, "quantity")
        return cls("usage", feature_id, "quantity")

    def where(self, table, customer_id: str) -> list:
        clauses = [table.c.customer_id == customer_id, table.c.kind == self.kind]
        if self.subject is not None:
            clauses.append(table.c.subject == self.subject)
        return clauses

    def amount(self, total: float | int | None) -> float:
        """A summed column as the meter's quantity (nano-units become currency)."""
        total = total or 0
        return from_nanos(int(total)) if self.column == "cost_nanos" else float(total)


def meters_usage_between(conn: Connection, keys: list[tuple[str, str]], start_us: int,
                         end_us: int) -> dict[tuple[str, str], float]:
    """The usage of each meter (customer, feature) from the raw events dated in [start, end).

    One meter is one indexed sum over its own events. Several are one query over their
    customers' events, summed per kind and subject, from which each meter takes its part.
    """
    if len(keys) == 1:
        ((customer_id, feature_id),) = keys
        source = MeterSource.of(feature_id)
        total = conn.execute(select(func.sum(events.c[source.column])).where(
            *source.where(events, customer_id),
            events.c.ts_us >= start_us, events.c.ts_us < end_us)).scalar()
        return {keys[0]: source.amount(total)}
    sums: dict[str, list[tuple[str, str, float, int]]] = defaultdict(list)
    for customer_id, kind, subject, quantity, cost_nanos in conn.execute(
            select(events.c.customer_id, events.c.kind, events.c.subject,
                   func.sum(events.c.quantity), func.sum(events.c.cost_nanos))
            .where(events.c.customer_id.in_({customer_id for customer_id, _ in keys}),
                   events.c.ts_us >= start_us, events.c.ts_us < end_us)
            .group_by(events.c.customer_id, events.c.kind, events.c.subject)):
        sums[customer_id].append((kind, subject, quantity or 0.0, int(cost_nanos or 0)))
    usage = {}
    for customer_id, feature_id in keys:
        source = MeterSource.of(feature_id)
        usage[(customer_id, feature_id)] = source.amount(sum(
            cost_nanos if source.column == "cost_nanos" else quantity
            for kind, subject, quantity, cost_nanos in sums[customer_id]
            if kind == source.kind and source.subject in (None, subject)))
    return usage


def due_for_rollover(conn: Connection, now_us: int) -> list[tuple[str, str]]:
    """The meters with a limit whose stored period has ended."""
    return [tuple(row) for row in conn.execute(
        select(meters.c.customer_id, meters.c.feature_id).where(
            meters.c.limit_value.is_not(None), meters.c.period_end_us <= now_us))]


def save_rollovers(conn: Connection, keys: list[tuple[str, str]], now: datetime) -> None:
    """Move these meters to the period of ``now`` and save them: their new period's usage is
    counted from the raw events once, instead of by every reader until their next event."""
    locks.lock_customers(conn, {customer_id for customer_id, _ in keys})
    save_meters(conn, list(load_meters(conn, set(keys), now, for_update=True).values()))


def set_limit(conn: Connection, customer_id: str, limit: UsageLimit, now: datetime,
              max_customers: int) -> MeterState:
    """Create or replace a meter's limit; usage already in the current period counts."""
    locks.lock_customers(conn, [customer_id])
    state = load_meter(conn, customer_id, limit.feature_id, now, for_update=True)
    if state is None:
        labels.ensure_labelled(conn, customer_id, max_customers, to_micros(now))
        state = MeterState(customer_id, limit.feature_id, None, None, None, None, None, 0.0,
                           False, 0.0)
        conn.execute(insert(meters).values(
            customer_id=customer_id, feature_id=limit.feature_id, period_usage=0.0,
            credit_metered=False, credit_balance=0.0))
    state.limit_value, state.period = limit.limit, limit.period.value
    state.reset_anchor_us = None if limit.reset_at is None else to_micros(limit.reset_at)
    state.period_start_us = state.period_end_us = None  # forces a recount for the new period
    state.roll_over(conn, now)
    save_meters(conn, [state])
    return state


def remove_limit(conn: Connection, customer_id: str, feature_id: str, now: datetime) -> bool:
    """Drop a meter's limit; False when it had none."""
    locks.lock_customers(conn, [customer_id])
    state = load_meter(conn, customer_id, feature_id, now, for_update=True)
    if state is None or not state.has_limit:
        return False
    if not state.credit_metered:
        conn.execute(delete(meters).where(and_(meters.c.customer_id == customer_id,
                                               meters.c.feature_id == feature_id)))
        return True
    state.limit_value = state.period = state.reset_anchor_us = None
    state.period_start_us = state.period_end_us = None
    state.period_usage, state.changed = 0.0, True
    save_meters(conn, [state])
    return True


def add_credits(conn: Connection, customer_id: str, feature_id: str, amount: float,
                reason: str | None, now: datetime, max_customers: int) -> float:
    """Add ``amount`` (negative adjusts down) to a meter's balance and the ledger."""
    locks.lock_customers(conn, [customer_id])
    state = load_meter(conn, customer_id, feature_id, now, for_update=True)
    if state is None:
        labels.ensure_labelled(conn, customer_id, max_customers, to_micros(now))
        conn.execute(insert(meters).values(
            customer_id=customer_id, feature_id=feature_id, period_usage=0.0,
            credit_metered=True, credit_balance=amount))
        balance = amount
    else:
        state.credit_metered, state.changed = True, True
        state.credit_balance += amount
        balance = state.credit_balance
        save_meters(conn, [state])
    conn.execute(insert(credit_ledger).values(
        customer_id=customer_id, feature_id=feature_id, amount=amount, balance_after=balance,
        reason=reason, created_us=to_micros(now)))
    return balance
