"""One structured (JSON) log line per request — what was asked, by which key, how it ended —
and its duration in the request histogram.

Never the key itself, never a body: only the key's id, the route template and the outcome.
"""

from __future__ import annotations

import json
import logging
import time

from flask import Flask, Response, g, request

access_log = logging.getLogger("carnil_analytics.access")


def install(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _log(response: Response) -> Response:
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        route = g.get("route", "unmatched")
        app.extensions["carnil.metrics"].observe_request(
            route, request.method, response.status_code, seconds)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(json.dumps({
                "method": request.method,
                "route": route,
                "status": response.status_code,
                "duration_ms": round(seconds * 1000, 3),
                "key_id": g.get("key_id"),
                "bytes_in": request.content_length,
                "remote": request.remote_addr,
            }, separators=(",", ":")))
        return response


class JsonLineFormatter(logging.Formatter):
    """Log records as JSON lines; access records carry their fields already."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                "logger": record.name}
        message = record.getMessage()
        if record.name == access_log.name:
            line.update(json.loads(message))
        else:
            line["message"] = message
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"))
