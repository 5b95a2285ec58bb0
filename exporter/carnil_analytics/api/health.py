"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

import logging

from flask import Response, current_app

from ..errors import StorageUnavailable
from .context import settings, tracker
from .endpoints import ApiBlueprint
from .schemas import Health

log = logging.getLogger(__name__)
api = ApiBlueprint("health", __name__)


@api.endpoint("GET", "/healthz", "Liveness: the process answers", roles=frozenset(),
              public=True, response=Health, tag="health")
def healthz():
    return Health(status="ok")


@api.endpoint("GET", "/readyz", "Readiness: the store is writable, InfluxDB reachable",
              roles=frozenset(), public=True, response=Health, errors=(503,), tag="health")
def readyz():
    checks, ready = {}, True
    try:
        tracker().db.check_writable()
        checks["store"] = "ok"
    except StorageUnavailable as exc:
        log.warning("not ready: %s", exc)
        checks["store"], ready = "unavailable", False
    influxdb = current_app.extensions.get("carnil.influxdb")
    if influxdb is not None:
        reachable = influxdb.ping()
        checks["influxdb"] = "ok" if reachable else "unreachable"
        ready = ready and (reachable or not settings().influxdb.required_for_readiness)
    if not ready:
        body = Health(status="unavailable", checks=checks)
        return Response(body.model_dump_json(), status=503, mimetype="application/json",
                        headers={"Retry-After": "5"})
    return Health(status="ok", checks=checks)
