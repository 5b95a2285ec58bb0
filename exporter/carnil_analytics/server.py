"""``carnil-analytics serve``: the app under gunicorn (pre-forked workers with threads).

Gunicorn's master handles SIGTERM gracefully: workers stop accepting, finish the requests in
flight (up to ``server.graceful_timeout_seconds``) and exit. Each worker builds its own app and
store connections after the fork.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from flask import Flask
from gunicorn.app.base import BaseApplication

from .api import create_app
from .api.auth import KeyRing
from .api.logs import JsonLineFormatter
from .config import Settings
from .influx.shipper import Shipper, ShipperThread
from .tracker import UsageTracker

log = logging.getLogger(__name__)


class _Gunicorn(BaseApplication):
    def __init__(self, app_factory: Callable[[], Flask], options: dict):
        self._app_factory, self._options = app_factory, options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._app_factory()


def _start_shipper(worker) -> None:
    """In every worker: a shipper thread; the store's lease lets one of them ship at a time."""
    app: Flask = worker.wsgi
    tracker = app.extensions["carnil.tracker"]
    settings = tracker.settings.influxdb
    thread = ShipperThread(Shipper(tracker.db, settings, app.extensions["carnil.influxdb"]),
                           settings.shutdown_grace_seconds)
    app.extensions["carnil.shipper"] = thread
    thread.start()


def _stop_shipper(_server, worker) -> None:
    thread = worker.wsgi.extensions.get("carnil.shipper") if worker.wsgi else None
    if thread is not None:
        thread.stop()


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def announce_admin_key(settings: Settings) -> None:
    """On the first start without a configured admin key: create one and print it, once."""
    with UsageTracker(settings) as tracker:
        issued = KeyRing(tracker.db, settings).ensure_admin()
    if issued is not None:
        print("No admin key was configured, so one was created. It is shown only this once;\n"
              f"store it now:\n\n    {issued.key}\n", flush=True)


def serve(settings: Settings, app_factory: Callable[[], Flask] | None = None) -> None:
    """Run the service until SIGTERM/SIGINT."""
    configure_logging()
    announce_admin_key(settings)
    server = settings.server
    options = {
        "bind": f"[{server.host}]:{server.port}" if ":" in server.host
        else f"{server.host}:{server.port}",
        "workers": server.workers,
        "threads": server.threads,
        "worker_class": "gthread",
        "graceful_timeout": max(1, round(server.graceful_timeout_seconds)),
        "timeout": max(30, round(server.graceful_timeout_seconds) + 5),
        "accesslog": None,  # the app logs one structured line per request
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "carnil-analytics",
        "control_socket_disable": True,  # several instances may share a host
    }
    if settings.influxdb.enabled:
        options["post_worker_init"] = _start_shipper
        options["worker_exit"] = _stop_shipper
    log.info("serving on %s with %d workers × %d threads", options["bind"], server.workers,
             server.threads)
    _Gunicorn(app_factory or (lambda: create_app(settings)), options).run()
