"""Render the Carnil recording and alerting rules (SPEC §7) from the one table of thresholds.

    python provisioning/prometheus/build_rules.py          # rewrite rules/carnil.rules.yml
    python provisioning/prometheus/build_rules.py --check  # exit 1 if the committed file differs

Change a threshold or a ``for:`` here, never in the YAML: the YAML is this script's output and a
test checks that the committed copy equals it. The promtool tests in ``tests/`` pin the current
values, so they change together with this table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

# Every alert's severity, ``for:`` and thresholds. Rates are per second, ages and runways in
# seconds. Severity routes the alert: critical pages, warning and info do not
# (provisioning/alertmanager/alertmanager.yml).
THRESHOLDS: dict[str, dict] = {
    "CarnilUsageLimitNearlyReached": {"severity": "warning", "for": "5m", "utilization": 0.8},
    "CarnilUsageLimitReached": {"severity": "critical", "for": "1m", "utilization": 1},
    # At the current rate the limit runs out before it resets (and has not run out yet).
    "CarnilUsageLimitExhaustionForecast": {"severity": "warning", "for": "15m"},
    # Credits last less than this at the current rate of use (and are still above zero).
    "CarnilCreditBalanceLow": {"severity": "warning", "for": "15m", "runway_seconds": 86400},
    "CarnilCreditBalanceExhausted": {"severity": "critical", "for": "1m", "balance": 0},
    # The 5m rate is above `factor` x the 1d average and above `min_per_second`, so a customer
    # going from nearly idle to slightly busy does not alert.
    "CarnilUsageSpike": {"severity": "info", "for": "10m", "factor": 3, "min_per_second": 1},
    "CarnilAISpendSpike": {"severity": "warning", "for": "10m", "factor": 3,
                           "min_per_second": 0.001},
    "CarnilExporterDown": {"severity": "critical", "for": "5m"},
    "CarnilInfluxOutboxBacklog": {"severity": "warning", "for": "5m", "oldest_age_seconds": 900},
    "CarnilInfluxWriteFailing": {"severity": "warning", "for": "10m"},
}

JOB = "carnil"  # the scrape job of the exporter (provisioning/prometheus/prometheus.yml)
RUNBOOK = "https://github.com/carnil/carnil-analytics/blob/main/docs/runbook.md"
OUTPUT = Path(__file__).parent / "rules" / "carnil.rules.yml"


def _n(value: float) -> str:
    """A threshold as PromQL and prose write it: 1, not 1.0."""
    return format(value, "g")


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def recording_rules() -> list[dict]:
    """Series the alerts and dashboards share, each deduplicated across replicas.

    Every replica reads the same store, so it exposes the same business and mirror values;
    ``max by`` keeps one of them (a sum would count each replica once more)."""
    meter = "customer, feature"
    rules = [
        ("customer_feature:carnil_usage:rate5m",
         f"max by ({meter}) (rate(carnil_usage_total[5m]))"),
        ("customer_feature:carnil_usage_cost:rate5m",
         f"max by ({meter}) (rate(carnil_usage_cost_total[5m]))"),
        ("customer_model:carnil_ai_cost:rate5m",
         "max by (customer, model) (rate(carnil_ai_cost_total[5m]))"),
        ("customer:carnil_ai_cost:rate5m",
         "sum by (customer) (customer_model:carnil_ai_cost:rate5m)"),
        # Tokens tracked = input + output + unspecified ("cached" is part of input). Summed per
        # replica first, then deduplicated.
        ("customer_model:carnil_ai_tokens:rate5m",
         "max by (customer, model) (\n"
         "  sum without (token_type) (rate(carnil_ai_tokens_total{token_type!=\"cached\"}[5m]))\n"
         ")"),
    ]
    rules += [(f"customer_feature:{gauge}:max", f"max by ({meter}) ({gauge})") for gauge in (
        "carnil_usage_limit_utilization_ratio",
        "carnil_usage_limit_exhaustion_seconds",
        "carnil_usage_limit_reset_timestamp_seconds",
        "carnil_usage_remaining",
        "carnil_usage_rate_per_minute",
        "carnil_credit_balance",
    )]
    rules += [
        ("job:carnil_influx_outbox_backlog:max", "max by (job) (carnil_influx_outbox_backlog)"),
        ("job:carnil_influx_outbox_oldest_age_seconds:max",
         "max by (job) (carnil_influx_outbox_oldest_age_seconds)"),
        ("job:carnil_influx_points_written:rate5m",
         "max by (job) (rate(carnil_influx_points_written_total[5m]))"),
        ("job:carnil_influx_write_errors:rate5m",
         "max by (job) (rate(carnil_influx_write_errors_total[5m]))"),
    ]
    return [{"record": name, "expr": expr} for name, expr in rules]


def baseline_rules() -> list[dict]:
    """Each customer's own 1-day average rate, the baseline of the spike alerts.

    An average of the 5m rate over the samples there are, so a customer seen for an hour has an
    hour's baseline (``rate(...[1d])`` would divide its first hour by a whole day and call every
    new customer a spike)."""
    return [{"record": f"{level}:{metric}:rate5m_avg1d",
             "expr": f"avg_over_time({level}:{metric}:rate5m[1d])"}
            for level, metric in (("customer_feature", "carnil_usage"),
                                  ("customer_model", "carnil_ai_cost"))]


def _alert(name: str, expr: str, summary: str, description: str) -> dict:
    return {
        "alert": name,
        "expr": expr,
        "for": THRESHOLDS[name]["for"],
        "labels": {"severity": THRESHOLDS[name]["severity"]},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{RUNBOOK}#{name.lower()}",
        },
    }


def limit_alerts() -> list[dict]:
    nearly = _n(THRESHOLDS["CarnilUsageLimitNearlyReached"]["utilization"])
    reached = _n(THRESHOLDS["CarnilUsageLimitReached"]["utilization"])
    utilization = "customer_feature:carnil_usage_limit_utilization_ratio:max"
    return [
        _alert("CarnilUsageLimitNearlyReached", f"{utilization} >= {nearly}",
               "A customer has nearly used up a usage limit.",
               "Customer {{ $labels.customer }} has used {{ $value | humanizePercentage }} of "
               "its {{ $labels.feature }} limit for the current period."),
        _alert("CarnilUsageLimitReached", f"{utilization} >= {reached}",
               "A customer has reached a usage limit.",
               "Customer {{ $labels.customer }} has used {{ $value | humanizePercentage }} of "
               "its {{ $labels.feature }} limit for the current period; enforced usage is "
               "rejected until the limit resets."),
        _alert("CarnilUsageLimitExhaustionForecast",
               "(\n"
               "  customer_feature:carnil_usage_limit_exhaustion_seconds:max\n"
               "    < on (customer, feature)\n"
               "  (customer_feature:carnil_usage_limit_reset_timestamp_seconds:max - time())\n"
               ")\n"
               f"and on (customer, feature)\n{utilization} < {reached}\n",
               "A customer will reach a usage limit before it resets.",
               "At its current rate customer {{ $labels.customer }} reaches its "
               "{{ $labels.feature }} limit in {{ $value | humanizeDuration }}, before the "
               "limit resets."),
    ]


def credit_alerts() -> list[dict]:
    runway = THRESHOLDS["CarnilCreditBalanceLow"]["runway_seconds"]
    empty = _n(THRESHOLDS["CarnilCreditBalanceExhausted"]["balance"])
    balance = "customer_feature:carnil_credit_balance:max"
    return [
        _alert("CarnilCreditBalanceLow",
               "(\n"
               f"  {balance}\n"
               "    / on (customer, feature)\n"
               "  (customer_feature:carnil_usage_rate_per_minute:max / 60)\n"
               f") < {runway}\n"
               f"and on (customer, feature)\n{balance} > {empty}\n",
               f"A customer's credits run out within {_duration(runway)} at the current rate.",
               "At its current rate customer {{ $labels.customer }} uses up its "
               "{{ $labels.feature }} credits in {{ $value | humanizeDuration }} (less than "
               f"{_duration(runway)})."),
        _alert("CarnilCreditBalanceExhausted", f"{balance} <= {empty}",
               "A customer has run out of credits.",
               "The {{ $labels.feature }} credit balance of customer {{ $labels.customer }} "
               "is {{ $value | humanize }}; enforced usage is rejected until credits are "
               "added."),
    ]


def _spike(series: str, labels: str, name: str) -> str:
    factor = _n(THRESHOLDS[name]["factor"])
    floor = _n(THRESHOLDS[name]["min_per_second"])
    return (f"(\n  {series}:rate5m\n    / on ({labels})\n  {series}:rate5m_avg1d\n) > {factor}\n"
            f"and on ({labels})\n{series}:rate5m > {floor}\n")


def spike_alerts() -> list[dict]:
    usage, ai = THRESHOLDS["CarnilUsageSpike"], THRESHOLDS["CarnilAISpendSpike"]
    return [
        _alert("CarnilUsageSpike",
               _spike("customer_feature:carnil_usage", "customer, feature", "CarnilUsageSpike"),
               "A customer's usage is far above its own baseline.",
               "Customer {{ $labels.customer }} uses {{ $labels.feature }} at "
               "{{ $value | humanize }} times its 1-day average rate (alerting above "
               f"{_n(usage['factor'])} times, when above {_n(usage['min_per_second'])} per "
               "second)."),
        _alert("CarnilAISpendSpike",
               _spike("customer_model:carnil_ai_cost", "customer, model", "CarnilAISpendSpike"),
               "A customer's AI spend is far above its own baseline.",
               "Customer {{ $labels.customer }} spends on model {{ $labels.model }} at "
               "{{ $value | humanize }} times its 1-day average rate (alerting above "
               f"{_n(ai['factor'])} times, when above {_n(ai['min_per_second'])} per second)."),
    ]


def exporter_alerts() -> list[dict]:
    age = THRESHOLDS["CarnilInfluxOutboxBacklog"]["oldest_age_seconds"]
    return [
        _alert("CarnilExporterDown",
               f'label_replace(up{{job="{JOB}"}} == 0, "reason", "scrape failed", "", "")\n'
               f'or label_replace(carnil_up{{job="{JOB}"}} == 0, "reason", "store unreadable",'
               ' "", "")\n'
               f'or label_replace(absent(up{{job="{JOB}"}}), "reason", "no target", "", "")\n',
               "The Carnil exporter is down; usage and limit alerts are blind.",
               "{{ if $labels.instance }}Carnil exporter {{ $labels.instance }}{{ else }}"
               "Job {{ $labels.job }}{{ end }} is down ({{ $labels.reason }}); its business "
               "metrics are missing, so limit, credit and spend alerts cannot fire."),
        _alert("CarnilInfluxOutboxBacklog",
               f"job:carnil_influx_outbox_oldest_age_seconds:max > {age}",
               "Events are waiting too long to be mirrored to InfluxDB.",
               "The oldest event of job {{ $labels.job }} not yet written to InfluxDB is "
               "{{ $value | humanizeDuration }} old (alerting above "
               f"{_duration(age)}); InfluxDB dashboards lag behind."),
        _alert("CarnilInfluxWriteFailing", "job:carnil_influx_write_errors:rate5m * 60 > 0",
               "Writes to InfluxDB keep failing.",
               "Job {{ $labels.job }} fails {{ $value | humanize }} InfluxDB writes per minute; "
               "events stay in the outbox and are retried with backoff."),
    ]


def rules() -> dict:
    return {"groups": [
        {"name": "carnil.rules", "rules": recording_rules()},
        # A day of samples per series and evaluation: once a minute is plenty for a baseline.
        {"name": "carnil.baselines", "interval": "1m", "rules": baseline_rules()},
        {"name": "carnil.limits", "rules": limit_alerts()},
        {"name": "carnil.credits", "rules": credit_alerts()},
        {"name": "carnil.spikes", "rules": spike_alerts()},
        {"name": "carnil.exporter", "rules": exporter_alerts()},
    ]}


class _Dumper(yaml.SafeDumper):
    """Multi-line expressions as literal blocks, so the YAML reads like hand-written PromQL."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)

HEADER = ("# Generated by provisioning/prometheus/build_rules.py from its THRESHOLDS table.\n"
          "# Do not edit: change the table and run the script.\n")


def render() -> str:
    return HEADER + yaml.dump(rules(), Dumper=_Dumper, sort_keys=False, width=4096,
                              allow_unicode=True, default_flow_style=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the committed rules differ from the generated ones")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
