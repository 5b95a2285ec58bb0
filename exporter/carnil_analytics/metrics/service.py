"""Self metrics of the service: events ingested by outcome, request durations by route.

Under ``serve`` several worker processes answer requests, so these use prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by ``serve``): every worker writes its
samples to files there, and a scrape of any worker sums them all.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from ..config import multiprocess_metrics_dir

# Request latency buckets, seconds: the HTTP targets are a few milliseconds to tens of them.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.events_ingested = Counter(
            "carnil_events_ingested", "Events received over HTTP, by type and outcome "
            "(accepted, duplicate, rejected).", ["type", "outcome"], registry=self.registry)
        self.request_duration = Histogram(
            "carnil_http_request_duration_seconds", "HTTP request duration by route template, "
            "method and status (seconds).", ["route", "method", "status"],
            buckets=LATENCY_BUCKETS, registry=self.registry)

    def render(self) -> bytes:
        directory = multiprocess_metrics_dir()
        if directory is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=directory)
        return generate_latest(merged)
