"""Customer usage: the seed's CustomerDashboard for one customer.

Summary stats and tables cover the chosen ``period`` (day, week, month, year) and come from the
InfluxDB mirror, which holds every event; history follows the dashboard's time range (InfluxDB);
meters, limits, credits and live rates are real-time (Prometheus).
"""

from __future__ import annotations

from panels import (
    CUSTOMER_DASHBOARD_UID,
    SERIES_TO_ROWS,
    UTILIZATION_STEPS,
    bar_gauge,
    custom_variable,
    dashboard,
    gauge,
    influxql,
    organize,
    override_unit,
    pie,
    prom,
    query_variable,
    row,
    stat,
    table,
    timeseries,
)

# InfluxQL conditions (regex matches, as Grafana formats multi-value variables for InfluxDB).
CUSTOMER = '"customer" =~ /^$customer$/'
FEATURE = '"feature" =~ /^$feature$/'
MODEL = '"model" =~ /^$model$/'
PERIOD = "time > now() - ${period}d"
# PromQL selectors.
METER = 'customer="$customer", feature=~"$feature"'
AI = 'customer="$customer", model=~"$model"'
TRACKED_TOKENS = 'token_type=~"input|output|unspecified"'  # cached is part of input


def variables() -> list[dict]:
    return [
        query_variable("customer", "Customer", "label_values(carnil_usage_total, customer)",
                       description="Customers with usage (folded ones are under __other__)."),
        query_variable("feature", "Feature",
                       'label_values(carnil_usage_total{customer="$customer"}, feature)',
                       multi=True),
        query_variable("model", "Model",
                       'label_values(carnil_ai_cost_total{customer="$customer"}, model)',
                       multi=True),
        custom_variable("period", "Period", [("day", "1"), ("week", "7"), ("month", "30"),
                                             ("year", "365")], default="30",
                        description="Days covered by the summary stats, tables and breakdowns."),
    ]


# ---------------------------------------------------------------------------- summary


def total_usage() -> dict:
    return stat("Total usage", [influxql(
        f'SELECT sum("quantity") FROM "usage" WHERE {CUSTOMER} AND {PERIOD}')],
        description="Usage of every feature in the period (feature units).")


def total_cost(cost_unit: str) -> dict:
    # One series per measurement; seriesToRows + sum adds usage and AI cost, and still works
    # when one of them has no data.
    return stat("Total cost", [influxql(
        f'SELECT sum("cost") FROM "usage", "ai_usage" WHERE {CUSTOMER} AND {PERIOD}')],
        unit=cost_unit, calc="sum", transformations=[SERIES_TO_ROWS],
        description="Cost of usage and AI usage in the period.")


def average_daily_usage() -> dict:
    return stat("Average daily usage", [influxql(
        f'SELECT sum("quantity") / ${{period}} FROM "usage" WHERE {CUSTOMER} AND {PERIOD}')],
        description="Total usage divided by the days in the period.")


def ai_tokens() -> dict:
    return stat("AI tokens", [influxql(
        f'SELECT sum("tokens") FROM "ai_usage" WHERE {CUSTOMER} AND {PERIOD}')],
        description="Tokens tracked in the period, every model.")


# ---------------------------------------------------------------------------- meters (real time)


def current_vs_limit() -> dict:
    return gauge("Current usage vs limit", [prom(
        f"max by (feature) (carnil_usage_limit_utilization_ratio{{{METER}}})", "{{feature}}",
        instant=True)], unit="percentunit", steps=UTILIZATION_STEPS,
        description="Usage in the current period as a share of each limit: orange from 80 %, "
                    "red at the limit (the thresholds of the alerts).")


def remaining() -> dict:
    return stat("Remaining", [prom(
        f"max by (feature) (carnil_usage_remaining{{{METER}}})", "{{feature}}", instant=True)],
        w=4, h=8, steps=[{"color": "red", "value": None}, {"color": "green", "value": 0}],
        description="Limit minus usage in the current period; negative is overage.")


def limit_resets() -> dict:
    return stat("Limit resets", [prom(
        f"max by (feature) (carnil_usage_limit_reset_timestamp_seconds{{{METER}}}) * 1000",
        "{{feature}}", instant=True)], unit="dateTimeFromNow", w=4, h=8,
        description="When each limit's current period ends.")


def credit_balance() -> dict:
    return stat("Credit balance", [prom(
        f"max by (feature) (carnil_credit_balance{{{METER}}})", "{{feature}}", instant=True)],
        w=4, h=8, steps=[{"color": "red", "value": None}, {"color": "green", "value": 0}],
        description="Credits left per credit-metered feature (ai_cost in currency).")


def usage_rate() -> dict:
    return stat("Usage rate", [prom(
        f"max by (feature) (carnil_usage_rate_per_minute{{{METER}}})", "{{feature}}",
        instant=True)], unit="suffix:/min", w=4, h=8,
        description="Usage per minute over the exporter's trailing rate window.")


# ---------------------------------------------------------------------------- history


def usage_over_time() -> dict:
    return timeseries("Usage over time", [influxql(
        f'SELECT sum("quantity") FROM "usage" WHERE {CUSTOMER} AND {FEATURE} AND $timeFilter '
        'GROUP BY time($__interval), "feature" fill(0)', "$tag_feature")],
        unit="short", bars=True, stacked=True, interval="1m",
        description="Usage per feature (InfluxDB mirror).")


def cost_over_time(cost_unit: str) -> dict:
    return timeseries("Cost over time", [
        influxql(f'SELECT sum("cost") FROM "usage" WHERE {CUSTOMER} AND {FEATURE} AND '
                 '$timeFilter GROUP BY time($__interval), "feature" fill(0)', "$tag_feature"),
        influxql(f'SELECT sum("cost") FROM "ai_usage" WHERE {CUSTOMER} AND {MODEL} AND '
                 '$timeFilter GROUP BY time($__interval), "model" fill(0)', "AI $tag_model"),
    ], unit=cost_unit, bars=True, stacked=True, interval="1m",
        description="Cost per feature and per AI model (InfluxDB mirror).")


def live_usage() -> dict:
    return timeseries("Usage per minute (live)", [prom(
        f"sum by (feature) (max by (customer, feature) "
        f"(rate(carnil_usage_total{{{METER}}}[$__rate_interval]))) * 60", "{{feature}}")],
        unit="short", description="Usage per minute from the Prometheus counters.")


def live_spend(cost_unit: str) -> dict:
    return timeseries("Spend per hour (live)", [
        prom(f"sum by (feature) (max by (customer, feature) "
             f"(rate(carnil_usage_cost_total{{{METER}}}[$__rate_interval]))) * 3600",
             "{{feature}}"),
        prom(f"sum by (model) (max by (customer, model) "
             f"(rate(carnil_ai_cost_total{{{AI}}}[$__rate_interval]))) * 3600", "AI {{model}}"),
    ], unit=cost_unit, stacked=True, description="Cost per hour at the current rate.")


# ---------------------------------------------------------------------------- tops


def _top(kind: str, measurement: str, amount: str, tag: str, where: str,
         cost_unit: str) -> dict:
    return table(f"Top {kind}s", [influxql(
        f'SELECT sum("{amount}") AS "{amount}", sum("cost") AS "cost" FROM "{measurement}" '
        f'WHERE {CUSTOMER} AND {where} AND {PERIOD} GROUP BY "{tag}"', table=True)],
        sort_by="Cost", transformations=[
            {"id": "sortBy", "options": {"sort": [{"desc": True, "field": "cost"}]}},
            {"id": "limit", "options": {"limitField": 10}},
            organize({tag: kind.capitalize(), amount: amount.capitalize(), "cost": "Cost"},
                     hide=["Time"]),
        ], overrides=[override_unit("Cost", cost_unit)],
        description=f"The period's {kind}s by cost, then {amount}.")


def top_features(cost_unit: str) -> dict:
    return _top("feature", "usage", "quantity", "feature", FEATURE, cost_unit)


def top_models(cost_unit: str) -> dict:
    return _top("model", "ai_usage", "tokens", "model", MODEL, cost_unit)


# ---------------------------------------------------------------------------- AI usage row


def tokens_by_model() -> dict:
    return timeseries("Tokens by model", [influxql(
        f'SELECT sum("tokens") FROM "ai_usage" WHERE {CUSTOMER} AND {MODEL} AND $timeFilter '
        'GROUP BY time($__interval), "model" fill(0)', "$tag_model")],
        unit="short", bars=True, stacked=True, interval="1m")


def ai_cost_by_model(cost_unit: str) -> dict:
    return timeseries("AI cost by model", [influxql(
        f'SELECT sum("cost") FROM "ai_usage" WHERE {CUSTOMER} AND {MODEL} AND $timeFilter '
        'GROUP BY time($__interval), "model" fill(0)', "$tag_model")],
        unit=cost_unit, bars=True, stacked=True, interval="1m")


def token_split() -> dict:
    return timeseries("Input / output tokens", [influxql(
        'SELECT sum("input_tokens") AS "input", sum("output_tokens") AS "output", '
        f'sum("cached_tokens") AS "cached (part of input)" FROM "ai_usage" WHERE {CUSTOMER} '
        f'AND {MODEL} AND $timeFilter GROUP BY time($__interval) fill(0)', "$col")],
        unit="short", w=8, interval="1m",
        description="Tokens sent and generated; cached is the part of input served from a cache.")


def cost_per_1k_tokens(cost_unit: str) -> dict:
    return bar_gauge("Cost per 1k tokens", [influxql(
        f'SELECT sum("cost") / sum("tokens") * 1000 FROM "ai_usage" WHERE {CUSTOMER} AND '
        f'{MODEL} AND {PERIOD} GROUP BY "model"', "$tag_model")], unit=cost_unit, w=8,
        description="The period's AI cost per thousand tokens, per model.")


def live_tokens() -> dict:
    return timeseries("Tokens per minute (live)", [prom(
        f"sum by (model) (max by (customer, model, token_type) (rate(carnil_ai_tokens_total"
        f"{{{AI}, {TRACKED_TOKENS}}}[$__rate_interval]))) * 60", "{{model}}")],
        unit="short", w=8)


# ---------------------------------------------------------------------------- cost breakdown row


def cost_by_feature(cost_unit: str) -> dict:
    return pie("Cost by feature", [influxql(
        f'SELECT sum("cost") FROM "usage" WHERE {CUSTOMER} AND {FEATURE} AND {PERIOD} '
        'GROUP BY "feature"', "$tag_feature")], unit=cost_unit)


def cost_by_model(cost_unit: str) -> dict:
    return pie("Cost by model", [influxql(
        f'SELECT sum("cost") FROM "ai_usage" WHERE {CUSTOMER} AND {MODEL} AND {PERIOD} '
        'GROUP BY "model"', "$tag_model")], unit=cost_unit)


def usage_vs_ai_cost(cost_unit: str) -> dict:
    return pie("Usage vs AI cost", [influxql(
        f'SELECT sum("cost") FROM "usage", "ai_usage" WHERE {CUSTOMER} AND {PERIOD}',
        "$measurement")], unit=cost_unit)


def daily_cost(cost_unit: str) -> dict:
    return timeseries("Daily cost", [
        influxql(f'SELECT sum("cost") FROM "usage" WHERE {CUSTOMER} AND {FEATURE} AND '
                 f'{PERIOD} GROUP BY time(1d), "feature" fill(0)', "$tag_feature"),
        influxql(f'SELECT sum("cost") FROM "ai_usage" WHERE {CUSTOMER} AND {MODEL} AND '
                 f'{PERIOD} GROUP BY time(1d), "model" fill(0)', "AI $tag_model"),
    ], unit=cost_unit, w=24, bars=True, stacked=True,
        description="Cost per UTC day over the period, by feature and model.")


# ---------------------------------------------------------------------------- the dashboard


def build(cost_unit: str = "currencyUSD") -> dict:
    return dashboard(
        uid=CUSTOMER_DASHBOARD_UID, title="Carnil / Customer usage",
        description="Usage, cost, limits, credits and AI usage of one customer.",
        variables=variables(), time_from="now-30d", refresh="1m", tags=["customer"],
        panels=[
            total_usage(), total_cost(cost_unit), average_daily_usage(), ai_tokens(),
            current_vs_limit(), remaining(), limit_resets(), credit_balance(), usage_rate(),
            usage_over_time(), cost_over_time(cost_unit),
            live_usage(), live_spend(cost_unit),
            top_features(cost_unit), top_models(cost_unit),
            row("AI usage", collapsed=True, panels=[
                tokens_by_model(), ai_cost_by_model(cost_unit), token_split(),
                cost_per_1k_tokens(cost_unit), live_tokens()]),
            row("Cost breakdown", collapsed=True, panels=[
                cost_by_feature(cost_unit), cost_by_model(cost_unit),
                usage_vs_ai_cost(cost_unit), daily_cost(cost_unit)]),
        ],
    )
