"""API keys: created with a random secret, stored as a hash, verified in constant time.

A key reads ``carnil_<key_id>_<secret>``. The id finds the row; the secret is checked against
its SHA-256. Secrets are 256 random bits, so a fast hash is enough: there is nothing to guess.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from ..models import to_micros
from .schema import api_keys

PREFIX = "carnil"
ROLES = ("admin", "ingest", "read", "metrics", "customer")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, its role, and for a customer key its customer."""

    key_id: str
    role: str
    customer_id: str | None = None


@dataclass(frozen=True)
class IssuedKey:
    principal: Principal
    key: str  # shown once, never stored


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(conn: Connection, role: str, customer_id: str | None, now: datetime) -> IssuedKey:
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    conn.execute(insert(api_keys).values(
        key_id=key_id, secret_hash=secret_hash(secret), role=role, customer_id=customer_id,
        created_us=to_micros(now)))
    return IssuedKey(Principal(key_id, role, customer_id), f"{PREFIX}_{key_id}_{secret}")


def revoke_key(conn: Connection, key_id: str, now: datetime) -> bool:
    """Revoke a live key; False when there is none with that id."""
    revoked = conn.execute(update(api_keys).where(
        api_keys.c.key_id == key_id, api_keys.c.revoked_us.is_(None)).values(
        revoked_us=to_micros(now)))
    return revoked.rowcount == 1


def has_admin_key(conn: Connection) -> bool:
    return conn.execute(select(api_keys.c.key_id).where(
        api_keys.c.role == "admin", api_keys.c.revoked_us.is_(None)).limit(1)).first() is not None


def verify_key(conn: Connection, key: str) -> Principal | None:
    """The principal of a live key, or None for anything else."""
    prefix, _, rest = key.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or not key_id or not secret:
        return None
    row = conn.execute(select(api_keys).where(
        api_keys.c.key_id == key_id, api_keys.c.revoked_us.is_(None))).mappings().first()
    if row is None or not hmac.compare_digest(row["secret_hash"], secret_hash(secret)):
        return None
    return Principal(row["key_id"], row["role"], row["customer_id"])
