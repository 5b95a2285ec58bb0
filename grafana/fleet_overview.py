"""Fleet overview: every customer at once — who spends and uses most, who is close to a limit or
out of credits, when limits run out, what the models cost, and which alerts fire.

Business metrics are read from the store by every replica alike, so replicas are collapsed with
``max by`` before anything is summed.
"""

from __future__ import annotations

from panels import (
    CUSTOMER_LINK,
    MERGE,
    UTILIZATION_STEPS,
    bar_gauge,
    custom_variable,
    dashboard,
    influxql,
    organize,
    override_unit,
    prom,
    stat,
    table,
    timeseries,
)

TRACKED_TOKENS = 'token_type=~"input|output|unspecified"'  # cached is part of input
ALERT_STEPS = [{"color": "green", "value": None}, {"color": "red", "value": 1}]


def _cost_by_customer(window: str) -> str:
    """Usage and AI cost per customer over ``window``. The two sides carry different labels
    (feature, model), so ``or`` keeps both and ``sum by (customer)`` adds them."""
    return ("sum by (customer) ("
            f"max by (customer, feature) (increase(carnil_usage_cost_total[{window}])) or "
            f"max by (customer, model) (increase(carnil_ai_cost_total[{window}])))")


def variables() -> list[dict]:
    return [custom_variable("top", "Top", [("5", "5"), ("10", "10"), ("20", "20")],
                            default="10", description="Rows per ranking.")]


# ---------------------------------------------------------------------------- summary


def customers() -> dict:
    return stat("Customers", [prom(
        "count(count by (customer) (carnil_usage_total or carnil_ai_cost_total))",
        instant=True)], w=4, description="Customers with a label of their own, and __other__.")


def spend(cost_unit: str) -> dict:
    return stat("Spend", [prom(
        "(sum(max by (customer, feature) (increase(carnil_usage_cost_total[$__range]))) "
        "or vector(0)) + (sum(max by (customer, model) "
        "(increase(carnil_ai_cost_total[$__range]))) or vector(0))", instant=True)],
        unit=cost_unit, w=4, description="Usage and AI cost of every customer in the time range.")


def tokens() -> dict:
    return stat("AI tokens", [prom(
        "sum(max by (customer, model, token_type) "
        f"(increase(carnil_ai_tokens_total{{{TRACKED_TOKENS}}}[$__range])))", instant=True)],
        w=4, description="Tokens tracked in the time range, every customer and model.")


def meters_near_limit() -> dict:
    return stat("Meters ≥ 80 % of limit", [prom(
        "count(max by (customer, feature) (carnil_usage_limit_utilization_ratio) >= 0.8) "
        "or vector(0)", instant=True)], w=4,
        steps=[{"color": "green", "value": None}, {"color": "orange", "value": 1}])


def credits_exhausted() -> dict:
    return stat("Credit balances ≤ 0", [prom(
        "count(max by (customer, feature) (carnil_credit_balance) <= 0) or vector(0)",
        instant=True)], w=4, steps=ALERT_STEPS)


def alerts_firing() -> dict:
    return stat("Alerts firing", [prom('count(ALERTS{alertstate="firing"}) or vector(0)',
                                       instant=True)], w=4, steps=ALERT_STEPS)


# ---------------------------------------------------------------------------- rankings


def top_customers_by_cost(cost_unit: str) -> dict:
    return bar_gauge("Top customers by cost", [prom(
        f"topk($top, {_cost_by_customer('$__range')})", "{{customer}}", instant=True)],
        unit=cost_unit, links=[CUSTOMER_LINK],
        description="Usage and AI cost in the time range.")


def top_customers_by_usage() -> dict:
    return bar_gauge("Top customers by usage", [prom(
        "topk($top, sum by (customer) (max by (customer, feature) "
        "(increase(carnil_usage_total[$__range]))))", "{{customer}}", instant=True)],
        unit="short", links=[CUSTOMER_LINK],
        description="Usage of every feature in the time range (feature units).")


def closest_to_limits() -> dict:
    return bar_gauge("Closest to their limits", [prom(
        "topk($top, max by (customer, feature) (carnil_usage_limit_utilization_ratio))",
        "{{customer}} · {{feature}}", instant=True)], unit="percentunit", w=8, maximum=1,
        steps=UTILIZATION_STEPS, links=[CUSTOMER_LINK],
        description="Usage in the current period as a share of the limit.")


def lowest_credit_balances() -> dict:
    return bar_gauge("Lowest credit balances", [prom(
        "bottomk($top, max by (customer, feature) (carnil_credit_balance))",
        "{{customer}} · {{feature}}", instant=True)], unit="short", w=8,
        steps=[{"color": "red", "value": None}, {"color": "green", "value": 0}],
        links=[CUSTOMER_LINK], description="Credit-metered meters with the least left.")


def exhaustion_forecast() -> dict:
    soonest = ("bottomk($top, max by (customer, feature) "
               "(carnil_usage_limit_exhaustion_seconds))")
    return table("Forecast limit exhaustion", [
        prom(soonest, instant=True, table=True),
        prom("(max by (customer, feature) (carnil_usage_limit_reset_timestamp_seconds) - "
             f"time()) and on (customer, feature) {soonest}", instant=True, table=True),
    ], w=8, sort_by="Reached in", transformations=[
        MERGE,
        {"id": "sortBy", "options": {"sort": [{"desc": False, "field": "Value #A"}]}},
        organize({"customer": "Customer", "feature": "Feature", "Value #A": "Reached in",
                  "Value #B": "Resets in"}, hide=["Time"]),
    ], overrides=[override_unit("Reached in", "s"), override_unit("Resets in", "s")],
        links=[CUSTOMER_LINK],
        description="At the current rate, when each limit is reached, and when it resets: "
                    "reached before the reset means overage (or rejections under enforce).")


# ---------------------------------------------------------------------------- models


def tokens_by_model() -> dict:
    return timeseries("Tokens per minute by model", [prom(
        "sum by (model) (max by (customer, model, token_type) "
        f"(rate(carnil_ai_tokens_total{{{TRACKED_TOKENS}}}[$__rate_interval]))) * 60",
        "{{model}}")], unit="short", stacked=True)


def spend_by_model(cost_unit: str) -> dict:
    return timeseries("AI spend per hour by model", [prom(
        "sum by (model) (max by (customer, model) "
        "(rate(carnil_ai_cost_total[$__rate_interval]))) * 3600", "{{model}}")],
        unit=cost_unit, stacked=True)


def spend_history(cost_unit: str) -> dict:
    return timeseries("Spend history", [influxql(
        'SELECT sum("cost") FROM "usage", "ai_usage" WHERE $timeFilter '
        "GROUP BY time($__interval) fill(0)", "$measurement")],
        unit=cost_unit, bars=True, stacked=True, interval="1m",
        description="Usage and AI cost of every customer (InfluxDB mirror).")


def token_history() -> dict:
    return timeseries("Token history by model", [influxql(
        'SELECT sum("tokens") FROM "ai_usage" WHERE $timeFilter '
        'GROUP BY time($__interval), "model" fill(0)', "$tag_model")],
        unit="short", bars=True, stacked=True, interval="1m",
        description="Tokens of every customer per model (InfluxDB mirror).")


# ---------------------------------------------------------------------------- alerts


def firing_alerts() -> dict:
    return table("Firing alerts", [prom('ALERTS{alertstate="firing"}', instant=True,
                                        table=True)],
                 w=24, sort_by="Severity", transformations=[organize(
                     {"alertname": "Alert", "severity": "Severity", "customer": "Customer",
                      "feature": "Feature", "model": "Model"},
                     hide=["Time", "Value", "__name__", "alertstate"])],
                 description="Alerts Prometheus is firing now (its rules, with their labels).")


def build(cost_unit: str = "currencyUSD") -> dict:
    return dashboard(
        uid="carnil-fleet-overview", title="Carnil / Fleet overview",
        description="Every customer: top spenders and users, limits, credits, models, alerts.",
        variables=variables(), time_from="now-24h", refresh="30s", tags=["fleet"],
        panels=[
            customers(), spend(cost_unit), tokens(), meters_near_limit(), credits_exhausted(),
            alerts_firing(),
            top_customers_by_cost(cost_unit), top_customers_by_usage(),
            closest_to_limits(), lowest_credit_balances(), exhaustion_forecast(),
            tokens_by_model(), spend_by_model(cost_unit),
            spend_history(cost_unit), token_history(),
            firing_alerts(),
        ],
    )
