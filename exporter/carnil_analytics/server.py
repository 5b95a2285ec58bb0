"""``carnil-analytics serve``: the app under gunicorn (pre-forked workers with threads), and,
with the InfluxDB mirror enabled, a shipper process beside them.

Gunicorn's master handles SIGTERM gracefully: workers stop accepting, finish the requests in
flight (up to ``server.graceful_timeout_seconds``) and exit; then the shipper ships what it can
within ``influxdb.shutdown_grace_seconds``. Each worker builds its own app and store
connections after the fork.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
import threading
from collections.abc import Callable

from flask import Flask
from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker

from .api import create_app
from .api.auth import KeyRing
from .api.logs import JsonLineFormatter
from .api.problems import PROBLEM_JSON, Problem
from .config import Settings
from .influx.shipper import Shipper
from .influx.writers import make_writer
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


class ProblemWorker(ThreadWorker):
    """Gunicorn's threaded worker, whose own refusals are problem documents like the app's.

    Gunicorn answers what it refuses before the app sees it — a request line over
    ``limit_request_line`` (414), a header field over ``limit_request_field_size`` (431), HTTP
    it cannot parse (400) — with an HTML page. Gunicorn still chooses the status and logs the
    refusal; only the page it writes is replaced.
    """

    def handle_error(self, req, client, addr, exc) -> None:
        page = _CapturedWrite(client)
        super().handle_error(req, page, addr, exc)
        status, reason = page.status_line()
        problem = Problem(status, reason.lower().replace(" ", "-"), reason,
                          self._detail(status, reason))
        body = problem.document().encode()
        head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
                f"Content-Type: {PROBLEM_JSON}\r\nContent-Length: {len(body)}\r\n\r\n")
        try:
            util.write_nonblock(client, head.encode("latin-1") + body)
        except Exception:  # the client is gone: nobody to tell, as in gunicorn's own
            self.log.debug("Failed to send error message.")

    def _detail(self, status: int, reason: str) -> str:
        if status == 414:
            return f"the request line is longer than {self.cfg.limit_request_line} bytes"
        if status == 431:
            return (f"a request header field is longer than "
                    f"{self.cfg.limit_request_field_size} bytes, or there are more than "
                    f"{self.cfg.limit_request_fields} of them")
        if status == 400:
            return "the request is not valid HTTP"
        return reason


class _CapturedWrite:
    """Stands in for the client socket while gunicorn writes its error page, and keeps it."""

    def __init__(self, client):
        self._client, self._written = client, b""

    def sendall(self, data: bytes) -> None:
        self._written += data

    def setblocking(self, _flag) -> None:
        pass  # the page is kept, not sent

    def status_line(self) -> tuple[int, str]:
        """The status and reason of the page written (500 if none was)."""
        first = self._written.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        if len(first) == 3 and first[1].isdigit():
            return int(first[1]), first[2]
        return 500, "Internal Server Error"

    def __getattr__(self, name):
        return getattr(self._client, name)  # gettimeout, fileno ... of the real socket


def run_shipper(settings: Settings) -> None:
    """The shipper process of ``serve``: ships until SIGTERM, then drains within the grace.

    It runs apart from the workers so that building points never holds the GIL that request
    threads wait for; the store's lease keeps it the only shipper, replicas included.
    """
    configure_logging()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with UsageTracker(settings) as tracker:
        shipper = Shipper(tracker.db, settings.influxdb, make_writer(settings.influxdb))
        shipper.run(stop)
        shipper.drain(settings.influxdb.shutdown_grace_seconds)


class _ShipperProcess:
    """Starts the shipper process when gunicorn is ready and stops it when gunicorn exits."""

    def __init__(self, settings: Settings):
        self._settings, self._process = settings, None

    def start(self, _arbiter) -> None:
        context = multiprocessing.get_context("spawn")  # nothing of the master's state
        self._process = context.Process(target=run_shipper, args=(self._settings,),
                                        name="carnil-shipper")
        self._process.start()

    def stop(self, _arbiter) -> None:
        if self._process is None or not self._process.is_alive():
            return
        self._process.terminate()  # SIGTERM: it drains what it can within the grace period
        self._process.join(self._settings.influxdb.shutdown_grace_seconds + 5)
        if self._process.is_alive():
            self._process.kill()


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
        "worker_class": ProblemWorker,
        "graceful_timeout": max(1, round(server.graceful_timeout_seconds)),
        "timeout": max(30, round(server.graceful_timeout_seconds) + 5),
        "accesslog": None,  # the app logs one structured line per request
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "carnil-analytics",
        "control_socket_disable": True,  # several instances may share a host
    }
    if settings.influxdb.enabled:
        shipper = _ShipperProcess(settings)
        options["when_ready"], options["on_exit"] = shipper.start, shipper.stop
    log.info("serving on %s with %d workers × %d threads", options["bind"], server.workers,
             server.threads)
    _Gunicorn(app_factory or (lambda: create_app(settings)), options).run()
