"""Which customers Prometheus sees under their own label, and which are summed as "__other__".

The first ``prometheus.max_customers`` customers ever seen (by the time of their first event)
have their own label; so does every customer that was given a limit or credits (alerts need
it). Membership only grows, so every exported counter stays monotonic, across restarts too.
"""

from __future__ import annotations

from sqlalchemy import Connection, func, insert, select

from .schema import MEASURES, label_baselines, labelled_customers, totals

OTHER = "__other__"


def first_seen(conn: Connection, limit: int) -> set[str]:
    """The first ``limit`` customers ever recorded."""
    first = func.min(totals.c.first_recorded_us)
    rows = conn.execute(select(totals.c.customer_id).group_by(totals.c.customer_id)
                        .order_by(first, totals.c.customer_id).limit(limit))
    return set(rows.scalars())


def labelled(conn: Connection, max_customers: int) -> set[str]:
    return first_seen(conn, max_customers) | set(
        conn.execute(select(labelled_customers.c.customer_id)).scalars())


def ensure_labelled(conn: Connection, customer_id: str, max_customers: int, now_us: int) -> None:
    """Give a customer its own label for good (it has a limit or credits now). What it had
    accrued under "__other__" stays there, as its baseline."""
    if customer_id in labelled(conn, max_customers):
        return
    conn.execute(insert(labelled_customers).values(customer_id=customer_id, since_us=now_us))
    accrued = conn.execute(select(totals.c.kind, totals.c.subject,
                                  *(totals.c[m] for m in MEASURES))
                           .where(totals.c.customer_id == customer_id)).all()
    if accrued:
        conn.execute(insert(label_baselines), [
            {"customer_id": customer_id, "kind": row.kind, "subject": row.subject,
             **{m: getattr(row, m) for m in MEASURES}} for row in accrued])


def baselines(conn: Connection) -> dict[tuple[str, str, str], tuple]:
    rows = conn.execute(select(label_baselines.c.customer_id, label_baselines.c.kind,
                               label_baselines.c.subject,
                               *(label_baselines.c[m] for m in MEASURES)))
    return {(r[0], r[1], r[2]): tuple(r[3:]) for r in rows}
