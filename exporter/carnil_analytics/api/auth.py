"""Who may call what: bearer keys, roles, and the customer scope of customer keys.

Roles: ``admin`` (everything), ``ingest`` (write events, check), ``read`` (all reads),
``metrics`` (``GET /metrics``), ``customer`` (reads and checks of its own customer only).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

from flask import request

from ..config import Settings
from ..store import keys
from ..store.database import Database
from ..store.keys import IssuedKey, Principal
from .problems import Problem

CONFIGURED_ADMIN = Principal(key_id="config", role="admin")
CONFIGURED_METRICS = Principal(key_id="config-metrics", role="metrics")


class KeyRing:
    """Verifies bearer keys against the keys in the configuration and in the key store."""

    def __init__(self, db: Database, settings: Settings):
        self._db = db
        # Configured keys are kept only as digests, compared digest to digest in constant time.
        self._configured = [(_digest(secret.get_secret_value()), principal)
                            for secret, principal in ((settings.auth.admin_key, CONFIGURED_ADMIN),
                                                      (settings.auth.metrics_key,
                                                       CONFIGURED_METRICS))
                            if secret is not None]
        self._admin_configured = settings.auth.admin_key is not None

    def principal(self, key: str) -> Principal | None:
        digest = _digest(key)
        for configured, principal in self._configured:
            if hmac.compare_digest(configured, digest):
                return principal
        with self._db.reading() as conn:
            return keys.verify_key(conn, key)

    def create(self, role: str, customer_id: str | None = None) -> IssuedKey:
        with self._db.writing() as conn:
            return keys.create_key(conn, role, customer_id, datetime.now(UTC))

    def revoke(self, key_id: str) -> bool:
        with self._db.writing() as conn:
            return keys.revoke_key(conn, key_id, datetime.now(UTC))

    def ensure_admin(self) -> IssuedKey | None:
        """A new admin key when none is configured or stored (the first start), else None."""
        if self._admin_configured:
            return None
        with self._db.writing() as conn:
            if keys.has_admin_key(conn):
                return None
            return keys.create_key(conn, "admin", None, datetime.now(UTC))


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def authenticate(ring: KeyRing) -> Principal:
    """The caller of the current request, or a 401."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    principal = ring.principal(key.strip()) if scheme.lower() == "bearer" and key else None
    if principal is None:
        raise Problem(401, "unauthorized", "Unauthorized",
                      "send a valid API key as 'Authorization: Bearer <key>'",
                      headers={"WWW-Authenticate": 'Bearer realm="carnil"'})
    return principal


def authorize(principal: Principal, roles: frozenset[str], customer_scoped: bool,
              customer_id: str | None) -> None:
    """A 403 unless the principal's role may call the route (for this customer)."""
    if principal.role == "admin" or principal.role in roles:
        return
    if principal.role == "customer" and customer_scoped:
        if customer_id == principal.customer_id:
            return
        raise Problem(403, "forbidden", "Forbidden", "this key may only see its own customer")
    raise Problem(403, "forbidden", "Forbidden",
                  f"the {principal.role!r} role may not call this route")
