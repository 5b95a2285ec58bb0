"""The HTTP service: ``create_app(settings)`` builds the Flask application."""

from __future__ import annotations

from flask import Flask

from ..config import Settings
from ..influx.writers import make_writer
from ..tracker import UsageTracker
from . import customers, health, ingest, keys, logs, problems
from .auth import KeyRing
from .endpoints import ApiBlueprint, SegmentConverter
from .openapi import document

BLUEPRINTS: tuple[ApiBlueprint, ...] = (ingest.api, customers.api, keys.api, health.api)


def create_app(settings: Settings | None = None, tracker: UsageTracker | None = None) -> Flask:
    """The Flask app of the service, on ``tracker`` (or a new one from ``settings``)."""
    tracker = tracker or UsageTracker(settings or Settings.load())
    app = Flask(__name__)
    app.url_map.converters["segment"] = SegmentConverter
    app.config["MAX_CONTENT_LENGTH"] = tracker.settings.server.max_body_bytes
    app.extensions["carnil.tracker"] = tracker
    app.extensions["carnil.keys"] = KeyRing(tracker.db, tracker.settings)
    if tracker.settings.influxdb.enabled:
        app.extensions["carnil.influxdb"] = make_writer(tracker.settings.influxdb)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    openapi = document(e for b in BLUEPRINTS for e in b.endpoints)
    app.add_url_rule("/openapi.json", "openapi", lambda: openapi)
    problems.install(app)
    logs.install(app)
    return app
