"""``python -m benchmarks.bench_server CONFIG``: the service under ``serve`` plus a bare route.

The app is the real one (``create_app``) with one benchmark-only route added,
``POST /bench/noop``: it reads and discards the body and answers 204. It runs in the same
gunicorn workers, behind the same Flask hooks (request log included), so it is the baseline
of the HTTP scenarios: what the server, the framework and the body transfer cost by themselves.
"""

from __future__ import annotations

import sys

from flask import Flask, Response, request

from carnil_analytics.api import create_app
from carnil_analytics.config import Settings
from carnil_analytics.server import serve

NOOP_PATH = "/bench/noop"


def app_with_bare_route(settings: Settings) -> Flask:
    """The service's app with ``POST /bench/noop`` → 204 added."""
    app = create_app(settings)

    def noop() -> Response:
        request.get_data(cache=False)  # pay for the body like the real routes do
        return Response(status=204)

    app.add_url_rule(NOOP_PATH, "bench_noop", noop, methods=["POST"])
    return app


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m benchmarks.bench_server CONFIG", file=sys.stderr)
        return 2
    settings = Settings.load(args[0])
    serve(settings, app_factory=lambda: app_with_bare_route(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
