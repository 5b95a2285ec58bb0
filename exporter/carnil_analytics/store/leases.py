"""Leases: at most one holder of a named job at a time, across processes and replicas.

A holder renews its lease before it expires; when a holder dies, its lease runs out and the
next process to ask takes the job over.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, insert, or_, select, update

from .schema import leases


def acquire(conn: Connection, name: str, holder: str, now_us: int, ttl_us: int) -> bool:
    """Take or renew the lease ``name`` for ``holder``; False while another holds it."""
    current = conn.execute(select(leases.c.holder, leases.c.expires_us)
                           .where(leases.c.name == name).with_for_update()).first()
    if current is None:
        conn.execute(insert(leases).values(name=name, holder=holder,
                                           expires_us=now_us + ttl_us))
        return True
    taken = conn.execute(update(leases).where(
        leases.c.name == name,
        or_(leases.c.holder == holder, leases.c.expires_us <= now_us),
    ).values(holder=holder, expires_us=now_us + ttl_us))
    return taken.rowcount == 1


def release(conn: Connection, name: str, holder: str) -> None:
    conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))
