"""One scrape: the store-backed metrics (rendered at most once per ``cache.ttl``, so a burst
of scrapes costs one read of the store) followed by the service's own metrics."""

from __future__ import annotations

import threading
import time

from .collector import StoreCollector
from .service import ServiceMetrics


class Scrape:
    def __init__(self, collector: StoreCollector, service: ServiceMetrics, ttl_seconds: float):
        self._collector = collector
        self._service, self._ttl = service, ttl_seconds
        self._lock = threading.Lock()
        self._rendered_at, self._business = float("-inf"), b""

    def render(self) -> bytes:
        with self._lock:  # concurrent scrapes wait for one read instead of each doing one
            if time.monotonic() - self._rendered_at >= self._ttl:
                self._business = self._collector.render()
                self._rendered_at = time.monotonic()
            business = self._business
        return business + self._service.render()
