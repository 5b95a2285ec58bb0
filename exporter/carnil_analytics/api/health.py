"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

import logging

from flask import Response

from ..errors import StorageUnavailable
from .context import tracker
from .endpoints import ApiBlueprint
from .schemas import Health

log = logging.getLogger(__name__)
api = ApiBlueprint("health", __name__)


@api.endpoint("GET", "/healthz", "Liveness: the process answers", roles=frozenset(),
              public=True, response=Health, tag="health")
def healthz():
    return Health(status="ok")


@api.endpoint("GET", "/readyz", "Readiness: the store is writable", roles=frozenset(),
              public=True, response=Health, errors=(503,), tag="health")
def readyz():
    try:
        tracker().db.check_writable()
        checks = {"store": "ok"}
    except StorageUnavailable as exc:
        log.warning("not ready: %s", exc)
        body = Health(status="unavailable", checks={"store": "unavailable"})
        return Response(body.model_dump_json(), status=503, mimetype="application/json",
                        headers={"Retry-After": "5"})
    return Health(status="ok", checks=checks)
