"""``GET /metrics`` for Prometheus."""

from __future__ import annotations

from flask import Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST

from .endpoints import ApiBlueprint

api = ApiBlueprint("metrics", __name__)


@api.endpoint("GET", "/metrics", "Prometheus metrics (text exposition format)",
              roles=frozenset({"metrics", "read"}),
              public_when=lambda settings: settings.prometheus.public,
              response_media_type=CONTENT_TYPE_LATEST, tag="metrics")
def metrics():
    return Response(current_app.extensions["carnil.scrape"].render(),
                    mimetype=None, content_type=CONTENT_TYPE_LATEST)
