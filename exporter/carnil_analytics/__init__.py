"""Carnil Analytics: usage metering, AI-cost tracking, limits and credits."""

from .analytics import CarnilAnalytics, RealTimeUsageMeter, UsageAnalyticsEngine
from .config import Settings
from .errors import (
    CarnilError,
    ConfigError,
    IdempotencyConflict,
    InsufficientCredits,
    StorageUnavailable,
    UsageLimitExceeded,
    ValidationError,
)
from .models import AIUsageEvent, UsageEvent, UsageLimit
from .periods import LimitPeriod
from .results import (
    AIUsageMetrics,
    BatchResult,
    CostAnalysis,
    CustomerReport,
    MeterReading,
    UsageCheck,
    UsageMetrics,
    UsageTrend,
)
from .tracker import UsageTracker

__all__ = [
    "AIUsageEvent", "AIUsageMetrics", "BatchResult", "CarnilAnalytics", "CarnilError",
    "ConfigError", "CostAnalysis", "CustomerReport", "IdempotencyConflict",
    "InsufficientCredits", "LimitPeriod", "MeterReading", "RealTimeUsageMeter", "Settings",
    "StorageUnavailable", "UsageAnalyticsEngine", "UsageCheck", "UsageEvent", "UsageLimit",
    "UsageLimitExceeded", "UsageMetrics", "UsageTracker", "UsageTrend", "ValidationError",
]
