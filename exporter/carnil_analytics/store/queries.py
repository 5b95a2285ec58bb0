"""Read queries over rollups: what reports, meters and rates are built from.

Reports read hour rollups, so their cost grows with the length of the period and the number
of features and models, not with the number of events.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, literal, select

from .meters import MeterSource
from .schema import rollups_hour, rollups_minute

DAY_US = 86_400_000_000
MINUTE_US = 60_000_000


@dataclass(frozen=True)
class BucketSums:
    """One subject's sums in one bucket."""

    kind: str
    subject: str
    bucket_us: int
    quantity: float
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_nanos: int


def bucket_sums(conn: Connection, customer_id: str, start_us: int, end_us: int,
                daily: bool, kind: str | None = None,
                subject: str | None = None) -> list[BucketSums]:
    """A customer's hour rollups in [start, end), summed per kind, subject and bucket."""
    table = rollups_hour
    bucket = (table.c.bucket_us - table.c.bucket_us % literal(DAY_US)) if daily \
        else table.c.bucket_us
    query = select(
        table.c.kind, table.c.subject, bucket.label("bucket"),
        func.sum(table.c.quantity), func.sum(table.c.input_tokens),
        func.sum(table.c.output_tokens), func.sum(table.c.cached_tokens),
        func.sum(table.c.cost_nanos),
    ).where(table.c.customer_id == customer_id,
            table.c.bucket_us >= start_us, table.c.bucket_us < end_us)
    if kind is not None:
        query = query.where(table.c.kind == kind)
    if subject is not None:
        query = query.where(table.c.subject == subject)
    query = query.group_by(table.c.kind, table.c.subject, bucket)
    return [BucketSums(k, s, int(b), float(q), int(i), int(o), int(c), int(n))
            for k, s, b, q, i, o, c, n in conn.execute(query)]


def meter_total(conn: Connection, customer_id: str, feature_id: str, start_us: int) -> float:
    """A meter's usage in the hour buckets from ``start`` (an hour boundary) on."""
    source = MeterSource.of(feature_id)
    total = conn.execute(select(func.sum(rollups_hour.c[source.column])).where(
        *source.where(rollups_hour, customer_id), rollups_hour.c.bucket_us >= start_us)).scalar()
    return source.amount(total)


def meter_minutes(conn: Connection, customer_id: str, feature_id: str,
                  since_us: int) -> list[tuple[int, float]]:
    """A meter's usage per minute bucket from ``since`` (a minute boundary) on."""
    source = MeterSource.of(feature_id)
    column = rollups_minute.c[source.column]
    rows = conn.execute(
        select(rollups_minute.c.bucket_us, func.sum(column))
        .where(*source.where(rollups_minute, customer_id), rollups_minute.c.bucket_us >= since_us)
        .group_by(rollups_minute.c.bucket_us))
    return [(int(bucket), source.amount(total)) for bucket, total in rows]


def trailing_rate(minutes: list[tuple[int, float]], now_us: int, window_us: int) -> float:
    """Usage per minute over the ``window_us`` before ``now_us`` from per-minute sums; the
    minute in which the window starts counts for the part of it inside the window, and minutes
    after the current one (events dated ahead, within the allowed clock skew) not yet."""
    start_us, total = now_us - window_us, 0.0
    for bucket_us, amount in minutes:
        if bucket_us > now_us:
            continue
        if bucket_us < start_us:
            total += amount * max(0.0, (bucket_us + MINUTE_US - start_us) / MINUTE_US)
        else:
            total += amount
    return total / (window_us / MINUTE_US)
