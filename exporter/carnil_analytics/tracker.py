"""UsageTracker: the one write path (validate → price → one store transaction), plus the reads
of the seed's ``UsageTracker`` API, which it delegates to ``Reports``."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import Field, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import delete

from .config import Settings
from .errors import FieldError, ValidationError
from .models import (
    AIUsageEvent,
    Event,
    UsageEvent,
    UsageLimit,
    parse,
    to_micros,
    validate_amount,
    validate_identifier,
    validate_reason,
)
from .pricing import PriceList
from .reports import Reports
from .results import AIUsageMetrics, BatchResult, MeterReading, UsageCheck, UsageMetrics
from .store import meters, outbox
from .store.database import Database
from .store.ingest import BatchError, Recordable, Recorded, record
from .store.schema import events, rollups_minute

log = logging.getLogger(__name__)

_ANY_EVENT = TypeAdapter(Annotated[UsageEvent | AIUsageEvent, Field(discriminator="type")])
# Minute rollups only feed usage rates and short charts; hour rollups are kept.
MINUTE_ROLLUP_RETENTION = timedelta(days=2)
PRUNE_EVERY = timedelta(hours=1)

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class UsageTracker:
    """Records usage, AI usage, limits and credits in the store, and answers reads on them.

    ``config`` is a dict shaped like the YAML file (or ``Settings``); environment variables are
    only read by ``UsageTracker.from_file``. ``clock`` returns the current aware time.
    """

    def __init__(self, config: Mapping[str, Any] | Settings | None = None, *,
                 clock: Clock = _utc_now):
        self.settings = config if isinstance(config, Settings) else Settings.from_mapping(config)
        self.db = Database(self.settings.database)
        self.prices = PriceList(self.settings.pricing)
        self.reports = Reports(self.db, self.settings, clock)
        self.clock = clock
        self._next_prune = datetime.min.replace(tzinfo=UTC)
        self._prune_lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str | None = None, **kwargs) -> UsageTracker:
        """A tracker configured from a YAML file (or ``$CARNIL_CONFIG``) and ``CARNIL_*``."""
        return cls(Settings.load(path), **kwargs)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> UsageTracker:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # ----------------------------------------------------------------- writes

    def track_usage(self, customer_id: str, feature_id: str, usage: float, *,
                    cost: float | None = None, timestamp: datetime | None = None,
                    event_id: str | None = None, metadata: Mapping[str, str] | None = None,
                    enforce: bool = False) -> bool:
        """Record usage of a feature. True when recorded, False when ``event_id`` was a replay."""
        event = parse(UsageEvent, _given(
            customer_id=customer_id, feature_id=feature_id, usage=usage, cost=cost,
            timestamp=timestamp, event_id=event_id, metadata=metadata))
        return self.track_event(event, enforce=enforce)

    def track_ai_usage(self, customer_id: str, model_id: str, tokens: int | None = None,
                       cost: float | None = None, *, input_tokens: int | None = None,
                       output_tokens: int | None = None, cached_tokens: int | None = None,
                       timestamp: datetime | None = None, event_id: str | None = None,
                       metadata: Mapping[str, str] | None = None, enforce: bool = False) -> bool:
        """Record tokens spent on a model. True when recorded, False when a replay."""
        event = parse(AIUsageEvent, _given(
            customer_id=customer_id, model_id=model_id, tokens=tokens, cost=cost,
            input_tokens=input_tokens, output_tokens=output_tokens, cached_tokens=cached_tokens,
            timestamp=timestamp, event_id=event_id, metadata=metadata))
        return self.track_event(event, enforce=enforce)

    def track_event(self, event: Event, *, enforce: bool = False) -> bool:
        """Record one validated event. True when recorded, False when a replay."""
        return self.record([event], enforce=enforce, located=False).accepted == 1

    def record(self, batch: list[Event], *, enforce: bool = False,
               located: bool = True) -> Recorded:
        """Record validated events in one transaction; which of them were replays.

        With ``located``, an error names the failing event in ``error.index``.
        """
        return self._record(batch, enforce, located)

    def track_events(self, batch: Iterable[Mapping[str, Any] | Event], *,
                     enforce: bool = False) -> BatchResult:
        """Record many events in one transaction, all or nothing.

        Each item is a ``UsageEvent``/``AIUsageEvent`` or a dict with ``type`` ``"usage"`` or
        ``"ai_usage"`` and the keyword arguments of the matching track method. An error names
        the failing event in ``error.index``.
        """
        parsed = []
        for index, item in enumerate(batch):
            if isinstance(item, UsageEvent | AIUsageEvent):
                parsed.append(item)
                continue
            try:
                parsed.append(_ANY_EVENT.validate_python(item, strict=True))
            except PydanticValidationError as exc:
                raise ValidationError([FieldError(tuple(e["loc"]), e["msg"])
                                       for e in exc.errors()]).at_index(index) from None
        result = self._record(parsed, enforce, located=True)
        return BatchResult(accepted=result.accepted, duplicates=result.duplicates)

    def _record(self, batch: list[Event], enforce: bool, located: bool):
        """Prepare and record ``batch``; with ``located``, errors carry the event's index."""
        now = self.clock()
        prepared = []
        for index, event in enumerate(batch):
            try:
                prepared.append(self._prepare(event, now))
            except ValidationError as exc:
                raise (exc.at_index(index) if located else exc) from None
        try:
            with self.db.writing() as conn:
                result = record(conn, prepared, now, to_micros(now), enforce)
        except BatchError as exc:
            exc.error.index = exc.index if located else None
            raise exc.error from None
        self._prune_if_due(now)
        return result

    def _prepare(self, event: Event, now: datetime) -> Recordable:
        ingest = self.settings.ingest
        timestamp = event.timestamp or now
        if timestamp > now + timedelta(seconds=ingest.max_clock_skew_seconds):
            raise ValidationError([FieldError(("timestamp",), (
                f"is more than {ingest.max_clock_skew_seconds} s in the future"))])
        if timestamp < now - timedelta(days=ingest.max_event_age_days):
            raise ValidationError([FieldError(("timestamp",), (
                f"is older than {ingest.max_event_age_days} days (ingest.max_event_age_days)"))])
        ai = isinstance(event, AIUsageEvent)
        return Recordable(
            kind=event.type, customer_id=event.customer_id, subject=event.subject,
            ts_us=to_micros(timestamp),
            quantity=float(event.tokens) if ai else event.usage,
            input_tokens=(event.input_tokens or 0) if ai else 0,
            output_tokens=(event.output_tokens or 0) if ai else 0,
            cached_tokens=(event.cached_tokens or 0) if ai else 0,
            cost_nanos=self.prices.cost_nanos(event),
            event_id=event.event_id,
            fingerprint=_fingerprint(event) if event.event_id is not None else None,
            metadata_json=json.dumps(event.metadata, sort_keys=True) if event.metadata else None,
        )

    def update_credit_balance(self, customer_id: str, feature_id: str, amount: float, *,
                              reason: str | None = None) -> bool:
        """Add ``amount`` credits (negative adjusts down); the pair becomes credit-metered."""
        self.add_credits(customer_id, feature_id, amount, reason=reason)
        return True

    def add_credits(self, customer_id: str, feature_id: str, amount: float, *,
                    reason: str | None = None) -> float:
        """Like ``update_credit_balance``, returning the new balance."""
        customer_id = validate_identifier(customer_id, "customer_id")
        feature_id = validate_identifier(feature_id, "feature_id")
        amount = validate_amount(amount, "amount")
        if reason is not None:
            reason = validate_reason(reason, "reason")
        with self.db.writing() as conn:
            return meters.add_credits(conn, customer_id, feature_id, amount, reason,
                                      self.clock(), self.settings.prometheus.max_customers)

    def set_usage_limit(self, customer_id: str, limit: UsageLimit) -> bool:
        """Create or replace the limit of ``limit.feature_id`` for a customer."""
        customer_id = validate_identifier(customer_id, "customer_id")
        if not isinstance(limit, UsageLimit):
            raise ValidationError([FieldError(("limit",), "should be a UsageLimit")])
        with self.db.writing() as conn:
            meters.set_limit(conn, customer_id, limit, self.clock(),
                             self.settings.prometheus.max_customers)
        return True

    def remove_usage_limit(self, customer_id: str, feature_id: str) -> bool:
        """Drop a limit; False when there was none."""
        customer_id = validate_identifier(customer_id, "customer_id")
        feature_id = validate_identifier(feature_id, "feature_id")
        with self.db.writing() as conn:
            return meters.remove_limit(conn, customer_id, feature_id, self.clock())

    def prune(self, now: datetime | None = None) -> int:
        """Delete raw events past ``ingest.max_event_age_days`` (but none the InfluxDB mirror
        has yet to ship) and old minute rollups."""
        now = now or self.clock()
        events_before = to_micros(now - timedelta(days=self.settings.ingest.max_event_age_days))
        minutes_before = to_micros(now - MINUTE_ROLLUP_RETENTION)
        with self.db.writing() as conn:
            expired = events.c.ts_us < events_before
            if self.settings.influxdb.enabled:  # the store keeps what the mirror still needs
                expired = expired & outbox.shipped(conn)
            deleted = conn.execute(delete(events).where(expired)).rowcount
            conn.execute(delete(rollups_minute).where(rollups_minute.c.bucket_us < minutes_before))
        return deleted

    def _prune_if_due(self, now: datetime) -> None:
        if now < self._next_prune or not self._prune_lock.acquire(blocking=False):
            return
        try:
            self._next_prune = now + PRUNE_EVERY
            self.prune(now)
        finally:
            self._prune_lock.release()

    # ------------------------------------------------------------------ reads

    def get_usage_metrics(self, customer_id: str, feature_id: str, period: str = "month", *,
                          start: datetime | None = None,
                          end: datetime | None = None) -> list[UsageMetrics]:
        return self.reports.usage_metrics(customer_id, feature_id, period, start=start, end=end)

    def get_ai_usage_metrics(self, customer_id: str, model_id: str | None = None,
                             period: str = "month", *, start: datetime | None = None,
                             end: datetime | None = None) -> list[AIUsageMetrics]:
        return self.reports.ai_usage_metrics(customer_id, model_id, period, start=start, end=end)

    def get_credit_balance(self, customer_id: str, feature_id: str) -> float:
        return self.reports.credit_balance(customer_id, feature_id)

    def get_usage_limit(self, customer_id: str, feature_id: str) -> UsageLimit | None:
        """The limit with ``reset_at`` = the end of its current period, or None."""
        return self.reports.usage_limit(customer_id, feature_id)

    def get_meter(self, customer_id: str, feature_id: str) -> MeterReading:
        return self.reports.meter(customer_id, feature_id)

    def check_usage(self, customer_id: str, feature_id: str, required: float) -> UsageCheck:
        """Whether ``required`` more usage fits the limit and the credits, and why not."""
        return self.reports.check(customer_id, feature_id, required)

    def check_usage_allowed(self, customer_id: str, feature_id: str, required: float) -> bool:
        return self.check_usage(customer_id, feature_id, required).allowed


def _given(**fields: Any) -> dict[str, Any]:
    """The arguments that were passed (None means "not given")."""
    return {name: value for name, value in fields.items() if value is not None}


def _fingerprint(event: Event) -> str:
    """A hash of the payload, to tell a replay of an event from another event with its id."""
    canonical = json.dumps(event.model_dump(mode="json", exclude_none=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
