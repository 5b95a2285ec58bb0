"""The read side: usage metrics, reports, trends, cost analyses, meters and checks.

Everything here reads one snapshot of the store and builds result types; nothing writes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from .config import Settings
from .errors import FieldError, ValidationError
from .models import (
    UsageLimit,
    from_micros,
    to_micros,
    validate_amount,
    validate_identifier,
)
from .money import from_nanos
from .periods import (
    LimitPeriod,
    ReportPeriod,
    ReportWindow,
    Resolution,
    calendar_window,
    range_window,
    report_window,
)
from .results import (
    AIUsageMetrics,
    AIUsagePoint,
    CostAnalysis,
    CustomerReport,
    DailyCost,
    FeatureCost,
    FeatureUsage,
    MeterReading,
    ModelCost,
    ModelUsage,
    ReportSummary,
    UsageCheck,
    UsageMetrics,
    UsagePoint,
    UsageTrend,
)
from .store.database import Database
from .store.meters import MeterSource, load_meter
from .store.queries import BucketSums, bucket_sums, meter_minutes, meter_total, trailing_rate

TOP_DEFAULT = 10
MOVING_AVERAGE_BUCKETS = 7


class Reports:
    """Answers every read of the library API from one store."""

    def __init__(self, db: Database, settings: Settings, clock: Callable[[], datetime]):
        self._db = db
        self._currency = settings.pricing.currency
        self._rate_window = timedelta(seconds=settings.real_time.rate_window_seconds)
        self._rate_window_us = settings.real_time.rate_window_seconds * 1_000_000
        self._clock = clock

    # -------------------------------------------------------------- windows

    def window(self, period: str | None = "month", start: datetime | None = None,
               end: datetime | None = None) -> ReportWindow:
        """The window of a named period, or of an explicit ``start``/``end``."""
        if start is not None or end is not None:
            return _explicit_window(start, end)
        if period not in {p.value for p in ReportPeriod}:
            allowed = ", ".join(p.value for p in ReportPeriod)
            raise ValidationError([FieldError(("period",), f"should be one of {allowed}")])
        return report_window(period, self._clock())

    # -------------------------------------------------------------- series

    def usage_metrics(self, customer_id: str, feature_id: str, period: str = "month", *,
                      start: datetime | None = None,
                      end: datetime | None = None) -> list[UsageMetrics]:
        """A feature's (or AI meter's) usage and cost in every bucket of the window."""
        customer_id = validate_identifier(customer_id, "customer_id")
        feature_id = validate_identifier(feature_id, "feature_id")
        window = self.window(period, start, end)
        series = self._meter_series(customer_id, feature_id, window)
        return [UsageMetrics(customer_id, feature_id, usage, from_nanos(cost), moment,
                             window.resolution.value)
                for moment, (usage, cost) in series.items()]

    def ai_usage_metrics(self, customer_id: str, model_id: str | None = None,
                         period: str = "month", *, start: datetime | None = None,
                         end: datetime | None = None) -> list[AIUsageMetrics]:
        """Tokens and cost per bucket for ``model_id``, or for every model used in the window."""
        customer_id = validate_identifier(customer_id, "customer_id")
        if model_id is not None:
            model_id = validate_identifier(model_id, "model_id")
        window = self.window(period, start, end)
        rows = self._sums(customer_id, window, kind="ai_usage", subject=model_id)
        by_model: dict[str, dict[int, BucketSums]] = defaultdict(dict)
        for row in rows:
            by_model[row.subject][row.bucket_us] = row
        models = [model_id] if model_id is not None else sorted(by_model)
        out = []
        for model in models:
            for moment in window.buckets():
                row = by_model[model].get(to_micros(moment))
                out.append(AIUsageMetrics(
                    customer_id, model, int(row.quantity) if row else 0,
                    from_nanos(row.cost_nanos) if row else 0.0, moment, window.resolution.value,
                    row.input_tokens if row else 0, row.output_tokens if row else 0,
                    row.cached_tokens if row else 0))
        return out

    def usage_trends(self, customer_id: str, feature_id: str,
                     period: str = "month", *, start: datetime | None = None,
                     end: datetime | None = None) -> list[UsageTrend]:
        """Per bucket: usage, cost, change against the previous bucket and a moving average."""
        customer_id = validate_identifier(customer_id, "customer_id")
        feature_id = validate_identifier(feature_id, "feature_id")
        window = self.window(period, start, end)
        series = list(self._meter_series(customer_id, feature_id, window).items())
        trends = []
        for i, (moment, (usage, cost)) in enumerate(series):
            previous = series[i - 1][1][0] if i else 0.0
            recent = [u for _, (u, _) in series[max(0, i - MOVING_AVERAGE_BUCKETS + 1):i + 1]]
            trends.append(UsageTrend(
                date=_label(moment, window.resolution), usage=usage, cost=from_nanos(cost),
                change_pct=(usage - previous) / previous * 100 if previous else None,
                moving_average=sum(recent) / len(recent)))
        return trends

    # -------------------------------------------------------------- reports

    def customer_report(self, customer_id: str, period: str = "month", *,
                        start: datetime | None = None, end: datetime | None = None,
                        top: int = TOP_DEFAULT) -> CustomerReport:
        """Totals, usage over time, AI usage over time, top features and top models."""
        customer_id = validate_identifier(customer_id, "customer_id")
        window = self.window(period, start, end)
        rows = self._sums(customer_id, window)
        usage = _per_bucket(window, (r for r in rows if r.kind == "usage"))
        ai = _per_bucket(window, (r for r in rows if r.kind == "ai_usage"))
        features = _per_subject(r for r in rows if r.kind == "usage")
        models = _per_subject(r for r in rows if r.kind == "ai_usage")
        total_usage = sum(q for q, _ in features.values())
        total_nanos = sum(n for _, n in features.values()) + sum(n for _, n in models.values())
        return CustomerReport(
            customer_id=customer_id, period=window.label, start=window.start, end=window.end,
            currency=self._currency,
            summary=ReportSummary(total_usage, from_nanos(total_nanos),
                                  total_usage / window.days if window.days else 0.0),
            usage=[UsagePoint(_label(m, window.resolution), q, from_nanos(n))
                   for m, (q, n) in usage.items()],
            ai_usage=[AIUsagePoint(_label(m, window.resolution), int(q), from_nanos(n))
                      for m, (q, n) in ai.items()],
            top_features=[FeatureUsage(f, q, from_nanos(n))
                          for f, (q, n) in _ranked(features)[:top]],
            top_models=[ModelUsage(m, int(q), from_nanos(n))
                        for m, (q, n) in _ranked(models)[:top]],
        )

    def cost_analysis(self, customer_id: str, period: str = "month", *,
                      start: datetime | None = None, end: datetime | None = None) -> CostAnalysis:
        """Where the money went: by feature, by model, per day, and the month's projection."""
        customer_id = validate_identifier(customer_id, "customer_id")
        window = self.window(period, start, end)
        now = self._clock()
        month = calendar_window(LimitPeriod.MONTHLY, now)
        with self._db.reading() as conn:
            rows = bucket_sums(conn, customer_id, to_micros(window.start), to_micros(window.end),
                               daily=True)
            month_rows = bucket_sums(conn, customer_id, to_micros(month.start),
                                     to_micros(month.end), daily=True)
        features = _per_subject(r for r in rows if r.kind == "usage")
        models = _per_subject(r for r in rows if r.kind == "ai_usage")
        usage_nanos = sum(n for _, n in features.values())
        ai_nanos = sum(n for _, n in models.values())
        total = usage_nanos + ai_nanos
        daily: dict[int, list[int]] = {}
        for row in sorted(rows, key=lambda r: r.bucket_us):
            costs = daily.setdefault(row.bucket_us, [0, 0])
            costs[row.kind == "ai_usage"] += row.cost_nanos
        month_nanos = sum(r.cost_nanos for r in month_rows)
        elapsed = (now - month.start) / (month.end - month.start)
        return CostAnalysis(
            customer_id=customer_id, period=window.label, start=window.start, end=window.end,
            currency=self._currency, total_cost=from_nanos(total),
            usage_cost=from_nanos(usage_nanos), ai_cost=from_nanos(ai_nanos),
            by_feature=[FeatureCost(f, q, from_nanos(n), n / total if total else 0.0)
                        for f, (q, n) in _ranked(features)],
            by_model=[ModelCost(m, int(q), from_nanos(n), n / total if total else 0.0,
                                from_nanos(n) * 1000 / q if q else None)
                      for m, (q, n) in _ranked(models)],
            daily=[DailyCost(_label(from_micros(b), Resolution.DAY), from_nanos(u),
                             from_nanos(a), from_nanos(u + a)) for b, (u, a) in daily.items()],
            projected_month_cost=from_nanos(round(month_nanos / elapsed)) if elapsed else 0.0,
        )

    # -------------------------------------------------------------- meters

    def meter(self, customer_id: str, feature_id: str) -> MeterReading:
        """A meter right now: period usage, limit, remaining, reset, rate and credits."""
        customer_id = validate_identifier(customer_id, "customer_id")
        feature_id = validate_identifier(feature_id, "feature_id")
        now = self._clock()
        since = (now - self._rate_window).replace(second=0, microsecond=0)
        with self._db.reading() as conn:
            state = load_meter(conn, customer_id, feature_id, now)
            if state is not None and state.has_limit:
                current, reset_at = state.period_usage, from_micros(state.period_end_us)
            else:
                month = calendar_window(LimitPeriod.MONTHLY, now)
                current = meter_total(conn, customer_id, feature_id, to_micros(month.start))
                reset_at = month.end
            minutes = meter_minutes(conn, customer_id, feature_id, to_micros(since))
        limited = state is not None and state.has_limit
        return MeterReading(
            customer_id=customer_id, feature_id=feature_id, current=current,
            limit=state.limit_value if limited else None,
            remaining=state.limit_value - current if limited else None,
            reset_at=reset_at,
            rate_per_minute=trailing_rate(minutes, to_micros(now), self._rate_window_us),
            credit_balance=state.credit_balance if state is not None else 0.0,
            credit_metered=state is not None and state.credit_metered)

    def credit_balance(self, customer_id: str, feature_id: str) -> float:
        """A meter's credit balance; 0 when it was never credited."""
        customer_id = validate_identifier(customer_id, "customer_id")
        feature_id = validate_identifier(feature_id, "feature_id")
        with self._db.reading() as conn:
            state = load_meter(conn, customer_id, feature_id, self._clock())
        return state.credit_balance if state is not None else 0.0

    def usage_limit(self, customer_id: str, feature_id: str) -> UsageLimit | None:
        customer_id = validate_identifier(customer_id, "customer_id")
        feature_id = validate_identifier(feature_id, "feature_id")
        with self._db.reading() as conn:
            state = load_meter(conn, customer_id, feature_id, self._clock())
        return state.as_limit() if state is not None and state.has_limit else None

    def check(self, customer_id: str, feature_id: str, required: float) -> UsageCheck:
        """Allowed iff the usage fits the limit (if any) and the balance covers it (if metered)."""
        required = validate_amount(required, "required")
        if required < 0:
            raise ValidationError([FieldError(("required",), "should be ≥ 0")])
        customer_id = validate_identifier(customer_id, "customer_id")
        feature_id = validate_identifier(feature_id, "feature_id")
        with self._db.reading() as conn:
            state = load_meter(conn, customer_id, feature_id, self._clock())
        if state is None:
            return UsageCheck(True, None, None, None)
        remaining = state.limit_value - state.period_usage if state.has_limit else None
        balance = state.credit_balance if state.credit_metered else None
        reason = None
        if state.has_limit and not state.limit_fits(required):
            reason = "limit_exceeded"
        elif state.credit_metered and not state.credits_cover(required):
            reason = "insufficient_credits"
        return UsageCheck(reason is None, reason, remaining, balance)

    # -------------------------------------------------------------- helpers

    def _sums(self, customer_id: str, window: ReportWindow, **filters) -> list[BucketSums]:
        with self._db.reading() as conn:
            return bucket_sums(conn, customer_id, to_micros(window.start), to_micros(window.end),
                               daily=window.resolution is Resolution.DAY, **filters)

    def _meter_series(self, customer_id: str, feature_id: str,
                      window: ReportWindow) -> dict[datetime, tuple[float, int]]:
        """(usage, cost in nanos) of a meter in every bucket of the window, zeros included."""
        source = MeterSource.of(feature_id)
        rows = self._sums(customer_id, window, kind=source.kind, subject=source.subject)
        return _per_bucket(window, rows, lambda row: source.amount(getattr(row, source.column)))


def _explicit_window(start: datetime | None, end: datetime | None) -> ReportWindow:
    errors = [FieldError((name,), "should be a timezone-aware datetime")
              for name, value in (("start", start), ("end", end))
              if not isinstance(value, datetime) or value.tzinfo is None]
    if not errors and end <= start:
        errors.append(FieldError(("end",), "should be after start"))
    if not errors and end - start > timedelta(days=3660):
        errors.append(FieldError(("end",), "the range should be at most 3660 days"))
    if errors:
        raise ValidationError(errors)
    return range_window(start, end)


def _per_bucket(window: ReportWindow, rows: Iterable[BucketSums],
                usage_of: Callable[[BucketSums], float] = lambda row: row.quantity,
                ) -> dict[datetime, tuple[float, int]]:
    """(usage, cost in nanos) summed per bucket of the window, zeros included."""
    sums = {moment: [0.0, 0] for moment in window.buckets()}
    for row in rows:
        bucket = sums[from_micros(row.bucket_us)]
        bucket[0] += usage_of(row)
        bucket[1] += row.cost_nanos
    return {moment: (usage, cost) for moment, (usage, cost) in sums.items()}


def _per_subject(rows) -> dict[str, tuple[float, int]]:
    sums: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for row in rows:
        sums[row.subject][0] += row.quantity
        sums[row.subject][1] += row.cost_nanos
    return {subject: (q, n) for subject, (q, n) in sums.items()}


def _ranked(sums: dict[str, tuple[float, int]]) -> list[tuple[str, tuple[float, int]]]:
    """By cost, then quantity, descending; ties by name so the order is stable."""
    return sorted(sums.items(), key=lambda item: (-item[1][1], -item[1][0], item[0]))


def _label(moment: datetime, resolution: Resolution) -> str:
    moment = moment.astimezone(UTC)
    if resolution is Resolution.DAY:
        return moment.date().isoformat()
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
