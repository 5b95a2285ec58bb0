"""Exporter health: is the service up, how fast it answers, what it ingests, and whether the
InfluxDB mirror keeps up.

Request and ingest counters are per replica (summed); the store-backed gauges and mirror
counters are the same on every replica (``max``).
"""

from __future__ import annotations

from panels import dashboard, prom, query_variable, stat, timeseries

JOB = 'job="$job"'
UP_STEPS = [{"color": "red", "value": None}, {"color": "green", "value": 1}]
UP_MAPPINGS = [{"options": {"0": {"color": "red", "index": 0, "text": "DOWN"},
                            "1": {"color": "green", "index": 1, "text": "UP"}},
                "type": "value"}]
BAD_STEPS = [{"color": "green", "value": None}, {"color": "red", "value": 1}]


def variables() -> list[dict]:
    return [query_variable("job", "Job", "label_values(carnil_up, job)",
                           description="The Prometheus job that scrapes the exporter.")]


# ---------------------------------------------------------------------------- summary


def exporter_up() -> dict:
    return stat("Exporter up", [prom(f"min(carnil_up{{{JOB}}})", instant=True)], w=4,
                steps=UP_STEPS, mappings=UP_MAPPINGS,
                description="1 when every replica's last read of the store succeeded.")


def targets_down() -> dict:
    return stat("Targets down", [prom(f"count(up{{{JOB}}} == 0) or vector(0)", instant=True)],
                w=4, steps=BAD_STEPS, description="Replicas Prometheus cannot scrape.")


def folded_customers() -> dict:
    return stat("Folded customers", [prom(
        f"max(carnil_exporter_customers_folded{{{JOB}}})", instant=True)], w=4,
        description='Customers summed under customer="__other__" (prometheus.max_customers).')


def backlog() -> dict:
    return stat("InfluxDB backlog", [prom(f"max(carnil_influx_outbox_backlog{{{JOB}}})",
                                          instant=True)], w=4,
                description="Recorded events not yet mirrored to InfluxDB.")


def oldest_unshipped() -> dict:
    return stat("Oldest unshipped event", [prom(
        f"max(carnil_influx_outbox_oldest_age_seconds{{{JOB}}})", instant=True)], unit="s",
        w=4, steps=[{"color": "green", "value": None}, {"color": "orange", "value": 300}])


def rejected_points() -> dict:
    return stat("Points rejected", [prom(
        f"max(increase(carnil_influx_points_rejected_total{{{JOB}}}[$__range]))",
        instant=True)], w=4, decimals=0, steps=BAD_STEPS,
        description="Points InfluxDB refused in the time range (logged with their event ids).")


# ---------------------------------------------------------------------------- ingest and HTTP


def ingest_by_outcome() -> dict:
    return timeseries("Events ingested by outcome", [prom(
        f"sum by (type, outcome) (rate(carnil_events_ingested_total{{{JOB}}}"
        "[$__rate_interval]))", "{{type}} {{outcome}}")], unit="ops", stacked=True)


def _latency(quantile: str, by: str = "") -> str:
    return (f"histogram_quantile({quantile}, sum by (le{by}) "
            f"(rate(carnil_http_request_duration_seconds_bucket{{{JOB}}}[$__rate_interval])))")


def latency_percentiles() -> dict:
    return timeseries("HTTP latency", [prom(_latency("0.5"), "p50"),
                                       prom(_latency("0.9"), "p90"),
                                       prom(_latency("0.99"), "p99")], unit="s")


def latency_by_route() -> dict:
    return timeseries("HTTP p99 latency by route", [prom(
        _latency("0.99", ", method, route"), "{{method}} {{route}}")], unit="s")


def requests_by_status() -> dict:
    return timeseries("HTTP requests by status", [prom(
        f"sum by (status) (rate(carnil_http_request_duration_seconds_count{{{JOB}}}"
        "[$__rate_interval]))", "{{status}}")], unit="reqps", stacked=True)


# ---------------------------------------------------------------------------- InfluxDB mirror


def backlog_over_time() -> dict:
    return timeseries("InfluxDB outbox backlog", [
        prom(f"max(carnil_influx_outbox_backlog{{{JOB}}})", "events")], unit="short", w=8)


def oldest_age_over_time() -> dict:
    return timeseries("Oldest unshipped event age", [
        prom(f"max(carnil_influx_outbox_oldest_age_seconds{{{JOB}}})", "age")], unit="s", w=8)


def mirror_writes() -> dict:
    return timeseries("InfluxDB points and errors", [
        prom(f"max(rate(carnil_influx_points_written_total{{{JOB}}}[$__rate_interval]))",
             "written"),
        prom(f"max(rate(carnil_influx_points_rejected_total{{{JOB}}}[$__rate_interval]))",
             "rejected"),
        prom(f"max(rate(carnil_influx_write_errors_total{{{JOB}}}[$__rate_interval]))",
             "write errors"),
    ], unit="ops", w=8, description="Per second; failed writes are retried with backoff.")


# ---------------------------------------------------------------------------- the exporter


def scrape_duration() -> dict:
    return timeseries("Store read per scrape", [prom(
        f"max by (instance) (carnil_exporter_scrape_duration_seconds{{{JOB}}})",
        "{{instance}}")], unit="s", w=8,
        description="Seconds the last read of the store for the metrics took.")


def folded_over_time() -> dict:
    return timeseries("Folded customers over time", [prom(
        f"max(carnil_exporter_customers_folded{{{JOB}}})", "folded")], unit="short", w=8)


def up_over_time() -> dict:
    return timeseries("carnil_up by instance", [prom(f"carnil_up{{{JOB}}}", "{{instance}}")],
                      unit="short", w=8)


def build() -> dict:
    return dashboard(
        uid="carnil-exporter-health", title="Carnil / Exporter health",
        description="The service, its HTTP API, ingest and the InfluxDB mirror.",
        variables=variables(), time_from="now-6h", refresh="30s", tags=["health"],
        panels=[
            exporter_up(), targets_down(), folded_customers(), backlog(), oldest_unshipped(),
            rejected_points(),
            ingest_by_outcome(), requests_by_status(),
            latency_percentiles(), latency_by_route(),
            backlog_over_time(), oldest_age_over_time(), mirror_writes(),
            scrape_duration(), folded_over_time(), up_over_time(),
        ],
    )
