"""The seed's read-side classes, each a thin view over one ``UsageTracker``."""

from __future__ import annotations

import functools

from .results import CostAnalysis, CustomerReport, UsageTrend
from .tracker import UsageTracker


def _tracker_method(name: str):
    """A method that runs ``UsageTracker.<name>`` on ``self.tracker`` (same signature, docs)."""
    method = getattr(UsageTracker, name)

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return method(self.tracker, *args, **kwargs)
    return call


class CarnilAnalytics:
    """The seed's facade: tracking, metrics, credits and limits, plus customer reports."""

    def __init__(self, tracker: UsageTracker):
        self.tracker = tracker

    track_usage = _tracker_method("track_usage")
    track_ai_usage = _tracker_method("track_ai_usage")
    get_usage_metrics = _tracker_method("get_usage_metrics")
    get_ai_usage_metrics = _tracker_method("get_ai_usage_metrics")
    get_credit_balance = _tracker_method("get_credit_balance")
    update_credit_balance = _tracker_method("update_credit_balance")
    set_usage_limit = _tracker_method("set_usage_limit")
    check_usage_allowed = _tracker_method("check_usage_allowed")

    def get_customer_report(self, customer_id: str, period: str = "month") -> CustomerReport:
        return self.tracker.reports.customer_report(customer_id, period)


class RealTimeUsageMeter:
    """Live usage of a meter: what it has used this period and how fast it is using it."""

    def __init__(self, tracker: UsageTracker):
        self.tracker = tracker

    track_usage = _tracker_method("track_usage")
    track_ai_usage = _tracker_method("track_ai_usage")

    def get_current_usage(self, customer_id: str, feature_id: str) -> float:
        """Usage in the current limit period (the calendar month when there is no limit)."""
        return self.tracker.reports.meter(customer_id, feature_id).current

    def get_usage_rate(self, customer_id: str, feature_id: str) -> float:
        """Usage per minute over the trailing ``real_time.rate_window_seconds``."""
        return self.tracker.reports.meter(customer_id, feature_id).rate_per_minute


class UsageAnalyticsEngine:
    """Reports, trends and cost analyses."""

    def __init__(self, tracker: UsageTracker):
        self.tracker = tracker

    def generate_customer_report(self, customer_id: str, period: str = "month") -> CustomerReport:
        return self.tracker.reports.customer_report(customer_id, period)

    def generate_usage_trends(self, customer_id: str, feature_id: str,
                              period: str = "month") -> list[UsageTrend]:
        return self.tracker.reports.usage_trends(customer_id, feature_id, period)

    def generate_cost_analysis(self, customer_id: str, period: str = "month") -> CostAnalysis:
        return self.tracker.reports.cost_analysis(customer_id, period)
