"""Leases: at most one holder of a named job at a time, across processes and replicas.

A holder renews its lease before it expires; when a holder dies, its lease runs out and the
next process to ask takes the job over. Work done under a lease is fenced: the transaction
that records it checks ``holder`` (which locks the lease row), so a holder that stalled past
its lease while another took over records nothing.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, or_, select, text, update

from .prepared import Prepared
from .schema import leases

_CLAIM = Prepared(text(  # a first claim: replicas may race to make it, and one row wins
    "INSERT INTO leases (name, holder, expires_us) VALUES (:name, :holder, :expires_us) "
    "ON CONFLICT (name) DO NOTHING"))


def acquire(conn: Connection, name: str, holder: str, now_us: int, ttl_us: int) -> bool:
    """Take or renew the lease ``name`` for ``holder``; False while another holds it."""
    _CLAIM.run(conn, {"name": name, "holder": holder, "expires_us": now_us + ttl_us})
    taken = conn.execute(update(leases).where(
        leases.c.name == name,
        or_(leases.c.holder == holder, leases.c.expires_us <= now_us),
    ).values(holder=holder, expires_us=now_us + ttl_us))
    return taken.rowcount == 1


def holder(conn: Connection, name: str, now_us: int) -> str | None:
    """Who holds the lease right now, if anyone (locking its row until the transaction ends,
    so it cannot change hands before the caller's work commits)."""
    row = conn.execute(select(leases.c.holder, leases.c.expires_us)
                       .where(leases.c.name == name).with_for_update()).first()
    return row.holder if row is not None and row.expires_us > now_us else None


def release(conn: Connection, name: str, holder: str) -> None:
    conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))
