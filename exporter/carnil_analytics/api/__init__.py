"""The HTTP service: ``create_app(settings)`` builds the Flask application."""

from __future__ import annotations

from flask import Flask, g

from ..config import Settings
from ..influx.writers import make_writer
from ..metrics.collector import StoreCollector
from ..metrics.scrape import Scrape
from ..metrics.service import ServiceMetrics
from ..tracker import UsageTracker
from . import customers, health, ingest, keys, logs, metrics, problems
from .auth import KeyRing
from .endpoints import ApiBlueprint, SegmentConverter
from .openapi import document

BLUEPRINTS: tuple[ApiBlueprint, ...] = (ingest.api, customers.api, keys.api, metrics.api,
                                         health.api)


def _route(template: str, answer):
    g.route = template  # for the request log and histogram
    return answer


def create_app(settings: Settings | None = None, tracker: UsageTracker | None = None) -> Flask:
    """The Flask app of the service, on ``tracker`` (or a new one from ``settings``)."""
    tracker = tracker or UsageTracker(settings or Settings.load())
    app = Flask(__name__)
    app.url_map.converters["segment"] = SegmentConverter
    # "%2Fc1" must reach validation as "/c1", not be merged away into "c1".
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = tracker.settings.server.max_body_bytes
    app.extensions["carnil.tracker"] = tracker
    app.extensions["carnil.keys"] = KeyRing(tracker.db, tracker.settings)
    service_metrics = ServiceMetrics()
    app.extensions["carnil.metrics"] = service_metrics
    cache = tracker.settings.cache
    app.extensions["carnil.scrape"] = Scrape(
        StoreCollector(tracker.db, tracker.settings, tracker.clock), service_metrics,
        cache.ttl if cache.enabled else 0.0)
    if tracker.settings.influxdb.enabled:
        app.extensions["carnil.influxdb"] = make_writer(tracker.settings.influxdb)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    openapi = document(e for b in BLUEPRINTS for e in b.endpoints)
    app.add_url_rule("/openapi.json", "openapi", lambda: _route("/openapi.json", openapi))
    problems.install(app)
    logs.install(app)
    return app
