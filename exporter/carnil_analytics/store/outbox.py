"""The events table read as an outbox: what the InfluxDB mirror has yet to ship.

The mirror ships events in the order of their position ``(xact, seq)`` and keeps, per target,
the position it has shipped up to: the mark. The mark only moves forward, in the same store,
after InfluxDB has acknowledged a batch.

Why not the sequence number alone: on PostgreSQL, writers commit side by side, so an event
numbered 10 can become visible after one numbered 11 has been shipped, and a mark at 11 would
skip it forever. So events also carry the id of the transaction that wrote them (``xact``), and
the mirror only reads events of transactions older than every transaction still in flight
(the snapshot's ``xmin``): no event can appear behind such a position any more. On SQLite,
whose writers commit one at a time in sequence order, ``xact`` is 0 and the position is the
sequence number.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, case, func, select, text, tuple_, update

from .prepared import Prepared
from .schema import events, mirror_marks

MIRROR = "influxdb"

Position = tuple[int, int]  # (xact, seq)
START: Position = (0, 0)


@dataclass(frozen=True)
class Mark:
    shipped_xact: int
    shipped_seq: int
    points_written: int
    points_rejected: int
    write_errors: int

    @property
    def position(self) -> Position:
        return self.shipped_xact, self.shipped_seq


@dataclass(frozen=True)
class Backlog:
    events: int
    oldest_recorded_us: int | None


_PENDING = (events.c.xact, events.c.seq, events.c.kind, events.c.customer_id, events.c.subject,
            events.c.ts_us, events.c.quantity, events.c.input_tokens, events.c.output_tokens,
            events.c.cached_tokens, events.c.cost_nanos, events.c.event_id)


def read_mark(conn: Connection, target: str = MIRROR) -> Mark:
    row = conn.execute(select(mirror_marks.c.shipped_xact, mirror_marks.c.shipped_seq,
                              mirror_marks.c.points_written, mirror_marks.c.points_rejected,
                              mirror_marks.c.write_errors)
                       .where(mirror_marks.c.target == target)).first()
    return Mark(*row) if row else Mark(0, 0, 0, 0, 0)


def position(row) -> Position:
    """The position of a row of ``pending``."""
    return row.xact, row.seq


def _after(mark: Position):
    return tuple_(events.c.xact, events.c.seq) > tuple_(*mark)


def pending(conn: Connection, after: Position, limit: int, since_us: int | None = None) -> list:
    """Up to ``limit`` settled events after position ``after``, in position order (optionally
    only those dated from ``since_us`` on)."""
    query = select(*_PENDING).where(_after(after))
    if conn.dialect.name == "postgresql":
        horizon = _HORIZON.run(conn, {})[0][0]  # before the events are read: see the docstring
        query = query.where(events.c.xact < horizon)
    if since_us is not None:
        query = query.where(events.c.ts_us >= since_us)
    return conn.execute(query.order_by(events.c.xact, events.c.seq).limit(limit)).all()


# The oldest transaction still in flight: every older one has committed or rolled back.
_HORIZON = Prepared(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"))


def advance(conn: Connection, shipped: Position, written: int, rejected: int, now_us: int,
            target: str = MIRROR) -> None:
    """Move the mark forward to ``shipped`` (never back) and add to its counts."""
    _ensure(conn, target, now_us)
    behind = tuple_(mirror_marks.c.shipped_xact, mirror_marks.c.shipped_seq) < tuple_(*shipped)
    conn.execute(update(mirror_marks).where(mirror_marks.c.target == target).values(
        shipped_xact=case((behind, shipped[0]), else_=mirror_marks.c.shipped_xact),
        shipped_seq=case((behind, shipped[1]), else_=mirror_marks.c.shipped_seq),
        points_written=mirror_marks.c.points_written + written,
        points_rejected=mirror_marks.c.points_rejected + rejected,
        updated_us=now_us))


def count_write_error(conn: Connection, now_us: int, target: str = MIRROR) -> None:
    _ensure(conn, target, now_us)
    conn.execute(update(mirror_marks).where(mirror_marks.c.target == target).values(
        write_errors=mirror_marks.c.write_errors + 1, updated_us=now_us))


def backlog(conn: Connection, target: str = MIRROR) -> Backlog:
    """How many recorded events the mirror has not shipped, and when the oldest was recorded."""
    count, oldest = conn.execute(select(func.count(), func.min(events.c.recorded_us))
                                 .where(_after(read_mark(conn, target).position))).one()
    return Backlog(count, oldest)


def shipped(conn: Connection, target: str = MIRROR):
    """A condition on events: shipped to ``target`` already."""
    return tuple_(events.c.xact, events.c.seq) <= tuple_(*read_mark(conn, target).position)


def _ensure(conn: Connection, target: str, now_us: int) -> None:
    _ENSURE.run(conn, {"target": target, "now_us": now_us})


_ENSURE = Prepared(text(  # replicas may race to create it
    "INSERT INTO mirror_marks (target, shipped_xact, shipped_seq, points_written, "
    "points_rejected, write_errors, updated_us) VALUES (:target, 0, 0, 0, 0, 0, :now_us) "
    "ON CONFLICT (target) DO NOTHING"))
