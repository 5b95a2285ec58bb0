"""Events as InfluxDB points (SPEC §5), built with ``influxdb_client.Point``.

InfluxDB keeps one point per series and timestamp, so two events of one customer and feature
at the same instant would collapse into one. Each point's timestamp is the event time to the
second, with the nine sub-second digits taken from the event's sequence number: unique (two
events of a series would need the same second and sequence numbers a billion apart to meet),
and the same every time the event is shipped, so a retried batch overwrites itself instead of
adding to anything. Dashboards chart minutes and hours; a second is precise enough.
"""

from __future__ import annotations

from influxdb_client import Point, WritePrecision

from ..money import from_nanos

_NS_PER_SECOND = 1_000_000_000


def point_time_ns(ts_us: int, seq: int) -> int:
    return (ts_us // 1_000_000) * _NS_PER_SECOND + seq % _NS_PER_SECOND


def event_point(row) -> Point:
    """The point of one row of ``outbox.pending``."""
    if row.kind == "usage":
        point = (Point("usage").tag("customer", row.customer_id).tag("feature", row.subject)
                 .field("quantity", float(row.quantity)))
    else:
        point = (Point("ai_usage").tag("customer", row.customer_id).tag("model", row.subject)
                 .field("tokens", int(row.quantity))
                 .field("input_tokens", int(row.input_tokens))
                 .field("output_tokens", int(row.output_tokens))
                 .field("cached_tokens", int(row.cached_tokens)))
    return (point.field("cost", from_nanos(row.cost_nanos))
            .time(point_time_ns(row.ts_us, row.seq), WritePrecision.NS))


def line(row) -> str:
    return event_point(row).to_line_protocol()
