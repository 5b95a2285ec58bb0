"""The metric families of SPEC §6: names, types, help text and labels, in one table."""

from __future__ import annotations

from dataclasses import dataclass

from .exposition import TextFamily


@dataclass(frozen=True)
class Family:
    name: str  # counters without their "_total" suffix
    kind: str  # "counter" | "gauge"
    help: str
    labels: tuple[str, ...]

    def new(self) -> TextFamily:
        return TextFamily(self.name, self.kind, self.help, self.labels)


def business(currency: str) -> dict[str, Family]:
    meter = ("customer", "feature")
    families = [
        Family("carnil_usage", "counter",
               "Usage recorded per customer and feature (feature units).", meter),
        Family("carnil_usage_cost", "counter",
               f"Cost of the usage recorded per customer and feature ({currency}).", meter),
        Family("carnil_ai_tokens", "counter",
               "AI tokens recorded per customer, model and token type (input, output, cached: "
               "part of input, unspecified: not split). Tokens tracked = input + output + "
               "unspecified.", ("customer", "model", "token_type")),
        Family("carnil_ai_cost", "counter",
               f"Cost of the AI usage recorded per customer and model ({currency}).",
               ("customer", "model")),
        Family("carnil_usage_current", "gauge",
               "Usage in the current period of a meter's limit (feature units; meters with a "
               "limit).", meter),
        Family("carnil_usage_limit", "gauge", "A meter's usage limit per period (feature units).",
               (*meter, "period")),
        Family("carnil_usage_remaining", "gauge",
               "Limit minus usage in the current period (feature units; negative: overage).",
               meter),
        Family("carnil_usage_limit_utilization_ratio", "gauge",
               "Usage in the current period divided by the limit (1 = limit reached).", meter),
        Family("carnil_usage_limit_reset_timestamp_seconds", "gauge",
               "When the current limit period ends (Unix time, seconds).", meter),
        Family("carnil_usage_limit_exhaustion_seconds", "gauge",
               "Seconds until the limit is reached at the current rate (absent when the rate "
               "is 0; 0 when already reached).", meter),
        Family("carnil_usage_rate_per_minute", "gauge",
               "Usage per minute over the trailing rate window (feature units per minute).",
               meter),
        Family("carnil_credit_balance", "gauge",
               "Credit balance of a credit-metered meter (feature units; ai_cost in "
               f"{currency}).", meter),
    ]
    return {f.name: f for f in families}


EXPORTER = {f.name: f for f in [
    Family("carnil_up", "gauge", "1 when the last read of the store succeeded, else 0.", ()),
    Family("carnil_exporter_scrape_duration_seconds", "gauge",
           "Seconds the last read of the store for these metrics took.", ()),
    Family("carnil_exporter_customers_folded", "gauge",
           "Customers without their own label, summed under customer=\"__other__\".", ()),
    Family("carnil_influx_outbox_backlog", "gauge",
           "Recorded events the InfluxDB mirror has not shipped yet.", ()),
    Family("carnil_influx_outbox_oldest_age_seconds", "gauge",
           "Age of the oldest event the InfluxDB mirror has not shipped (0 when none).", ()),
    Family("carnil_influx_points_written", "counter",
           "Points the InfluxDB mirror has written.", ()),
    Family("carnil_influx_points_rejected", "counter",
           "Points InfluxDB rejected (logged with their event ids and skipped).", ()),
    Family("carnil_influx_write_errors", "counter",
           "Failed InfluxDB writes (each retried with backoff).", ()),
]}
