"""Self metrics of the service: events ingested by outcome, request durations by route.

Under ``serve`` several worker processes answer requests, so these use prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by ``serve``): every worker writes its
samples to files there, and a scrape of any worker sums them all.
"""

from __future__ import annotations

import contextlib
import logging

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from ..config import multiprocess_metrics_dir

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _never_failing():
    """Counting must never fail the request it counts: in multiprocess mode a new label value
    grows a file, which fails when the disk is full."""
    try:
        yield
    except OSError as exc:
        log.warning("could not record a self metric: %s", exc)


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

    def count_event(self, event_type: str, outcome: str) -> None:
        with _never_failing():
            self.events_ingested.labels(event_type, outcome).inc()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        with _never_failing():
            self.request_duration.labels(route, method, str(status)).observe(seconds)

    def render(self) -> bytes:
        directory = multiprocess_metrics_dir()
        if directory is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=directory)
        return generate_latest(merged)
