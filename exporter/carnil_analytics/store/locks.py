"""Locks that serialize what must not interleave across the writers of a PostgreSQL store.

On SQLite every write transaction already holds the one write lock of the file, so each of
these is a no-op there. On PostgreSQL they are transaction-scoped advisory locks, released at
commit or rollback, so a crashed replica never leaves one behind:

- a **customer** lock around everything that reads and then writes a customer's state: its
  meters (limits, credits: the check and the debit of enforcement) and its event ids (a replay
  is found by reading, and the unique constraint on ``(customer_id, event_id)`` is the
  backstop). Different customers proceed in parallel. A batch locks its customers in one
  fixed order, so two batches can never wait for each other.
- the **numbering** lock, taken after the customer locks and only by a transaction that brings
  customers the store has never seen: new customers are numbered in commit order.
- the **migrations** lock: replicas starting together migrate once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import Connection, text

from .prepared import Prepared

_LOCK = Prepared(text("SELECT pg_advisory_xact_lock(:key)"))


def _key(name: str) -> int:
    """A stable signed 64-bit lock key (a collision only makes two names share a lock)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big",
                          signed=True)


def writers_take_turns(conn: Connection) -> bool:
    """Whether the store runs one write transaction at a time (SQLite), so that none of these
    locks is needed."""
    return conn.dialect.name == "sqlite"


def _lock(conn: Connection, names: Iterable[str]) -> None:
    if writers_take_turns(conn):
        return
    _LOCK.run_many(conn, [{"key": key} for key in sorted({_key(name) for name in names})])


def lock_customers(conn: Connection, customer_ids: Iterable[str]) -> None:
    _lock(conn, (f"customer:{customer_id}" for customer_id in customer_ids))


def lock_numbering(conn: Connection) -> None:
    _lock(conn, ["customers:numbering"])


def lock_migrations(conn: Connection) -> None:
    _lock(conn, ["schema:migrations"])
