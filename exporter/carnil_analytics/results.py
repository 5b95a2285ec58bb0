"""What reads return: the seed's result shapes, in snake_case, as typed (pydantic) dataclasses.

Money is reported in the configured currency as floats computed once from exact nano-unit sums.
"""

from __future__ import annotations

from datetime import datetime

from pydantic.dataclasses import dataclass


@dataclass(frozen=True)
class UsageMetrics:
    """A feature's usage and cost in one time bucket."""

    customer_id: str
    feature_id: str
    usage: float
    cost: float
    timestamp: datetime  # start of the bucket
    period: str  # "hour" | "day": the bucket's length


@dataclass(frozen=True)
class AIUsageMetrics:
    """A model's tokens and cost in one time bucket."""

    customer_id: str
    model_id: str
    tokens: int
    cost: float
    timestamp: datetime
    period: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True)
class ReportSummary:
    total_usage: float  # feature usage (AI tokens are reported under ai_usage)
    total_cost: float  # feature cost + AI cost
    average_daily_usage: float


@dataclass(frozen=True)
class UsagePoint:
    date: str  # "YYYY-MM-DD" for daily buckets, RFC 3339 for hourly ones
    usage: float
    cost: float


@dataclass(frozen=True)
class AIUsagePoint:
    date: str
    tokens: int
    cost: float


@dataclass(frozen=True)
class FeatureUsage:
    feature_id: str
    usage: float
    cost: float


@dataclass(frozen=True)
class ModelUsage:
    model_id: str
    tokens: int
    cost: float


@dataclass(frozen=True)
class CustomerReport:
    """What the seed's ``useAnalytics`` hook showed, for one customer and period."""

    customer_id: str
    period: str
    start: datetime
    end: datetime
    currency: str
    summary: ReportSummary
    usage: list[UsagePoint]
    ai_usage: list[AIUsagePoint]
    top_features: list[FeatureUsage]
    top_models: list[ModelUsage]


@dataclass(frozen=True)
class UsageTrend:
    date: str
    usage: float
    cost: float
    change_pct: float | None  # vs the previous bucket; None when that was 0 or absent
    moving_average: float  # mean usage of the trailing 7 buckets (fewer at the start)


@dataclass(frozen=True)
class FeatureCost:
    feature_id: str
    usage: float
    cost: float
    share: float  # of total_cost, 0..1


@dataclass(frozen=True)
class ModelCost:
    model_id: str
    tokens: int
    cost: float
    share: float
    cost_per_1k_tokens: float | None  # None when no tokens


@dataclass(frozen=True)
class DailyCost:
    date: str
    usage_cost: float
    ai_cost: float
    cost: float


@dataclass(frozen=True)
class CostAnalysis:
    customer_id: str
    period: str
    start: datetime
    end: datetime
    currency: str
    total_cost: float
    usage_cost: float
    ai_cost: float
    by_feature: list[FeatureCost]
    by_model: list[ModelCost]
    daily: list[DailyCost]
    projected_month_cost: float  # month-to-date cost extrapolated to the calendar month


@dataclass(frozen=True)
class MeterReading:
    """What the seed's ``useUsageMeter`` hook showed: a meter's state right now."""

    customer_id: str
    feature_id: str
    current: float
    limit: float | None
    remaining: float | None
    reset_at: datetime | None
    rate_per_minute: float
    credit_balance: float
    credit_metered: bool


@dataclass(frozen=True)
class UsageCheck:
    """The answer to "may this customer use ``required`` more of this feature now?"."""

    allowed: bool
    reason: str | None  # "limit_exceeded" | "insufficient_credits" | None
    remaining: float | None
    balance: float | None


@dataclass(frozen=True)
class BatchResult:
    accepted: int
    duplicates: int
