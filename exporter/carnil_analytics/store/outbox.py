"""The events table read as an outbox: what the InfluxDB mirror has yet to ship.

Events carry a strictly increasing sequence number, so "shipped" is one number per target: the
mark. The mark only moves forward, in the same store, after InfluxDB has acknowledged a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, case, func, insert, select, update

from .schema import events, mirror_marks

MIRROR = "influxdb"


@dataclass(frozen=True)
class Mark:
    shipped_seq: int
    points_written: int
    points_rejected: int
    write_errors: int


@dataclass(frozen=True)
class Backlog:
    events: int
    oldest_recorded_us: int | None


_PENDING = (events.c.seq, events.c.kind, events.c.customer_id, events.c.subject,
            events.c.ts_us, events.c.quantity, events.c.input_tokens, events.c.output_tokens,
            events.c.cached_tokens, events.c.cost_nanos, events.c.event_id)


def read_mark(conn: Connection, target: str = MIRROR) -> Mark:
    row = conn.execute(select(mirror_marks.c.shipped_seq, mirror_marks.c.points_written,
                              mirror_marks.c.points_rejected, mirror_marks.c.write_errors)
                       .where(mirror_marks.c.target == target)).first()
    return Mark(*row) if row else Mark(0, 0, 0, 0)


def pending(conn: Connection, after_seq: int, limit: int, since_us: int | None = None) -> list:
    """Up to ``limit`` events after ``after_seq``, in sequence order (optionally only those
    dated from ``since_us`` on)."""
    query = select(*_PENDING).where(events.c.seq > after_seq)
    if since_us is not None:
        query = query.where(events.c.ts_us >= since_us)
    return conn.execute(query.order_by(events.c.seq).limit(limit)).all()


def advance(conn: Connection, shipped_seq: int, written: int, rejected: int, now_us: int,
            target: str = MIRROR) -> None:
    """Move the mark forward to ``shipped_seq`` (never back) and add to its counts."""
    _ensure(conn, target, now_us)
    conn.execute(update(mirror_marks).where(mirror_marks.c.target == target).values(
        shipped_seq=case((mirror_marks.c.shipped_seq < shipped_seq, shipped_seq),
                         else_=mirror_marks.c.shipped_seq),
        points_written=mirror_marks.c.points_written + written,
        points_rejected=mirror_marks.c.points_rejected + rejected,
        updated_us=now_us))


def count_write_error(conn: Connection, now_us: int, target: str = MIRROR) -> None:
    _ensure(conn, target, now_us)
    conn.execute(update(mirror_marks).where(mirror_marks.c.target == target).values(
        write_errors=mirror_marks.c.write_errors + 1, updated_us=now_us))


def backlog(conn: Connection, target: str = MIRROR) -> Backlog:
    """How many recorded events the mirror has not shipped, and when the oldest was recorded."""
    shipped = read_mark(conn, target).shipped_seq
    count, oldest = conn.execute(select(func.count(), func.min(events.c.recorded_us))
                                 .where(events.c.seq > shipped)).one()
    return Backlog(count, oldest)


def _ensure(conn: Connection, target: str, now_us: int) -> None:
    exists = conn.execute(select(mirror_marks.c.target)
                          .where(mirror_marks.c.target == target)).first()
    if exists is None:
        conn.execute(insert(mirror_marks).values(
            target=target, shipped_seq=0, points_written=0, points_rejected=0, write_errors=0,
            updated_us=now_us))
