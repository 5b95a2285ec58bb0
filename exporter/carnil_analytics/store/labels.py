"""Which customers Prometheus sees under their own label, and which are summed as "__other__".

The first ``prometheus.max_customers`` customers the store recorded (numbered in commit order,
so no clock can reorder them) have their own label; so does every customer that was given a
limit or credits (alerts need it), for good, whatever ``max_customers`` says later. Membership
only grows, so every exported counter stays monotonic, across restarts too.
"""

from __future__ import annotations

from sqlalchemy import Connection, insert, select

from .schema import MEASURES, customers, label_baselines, labelled_customers, totals

OTHER = "__other__"


def first_seen(conn: Connection, limit: int) -> set[str]:
    """The first ``limit`` customers ever recorded."""
    rows = conn.execute(select(customers.c.customer_id).order_by(customers.c.number)
                        .limit(limit))
    return set(rows.scalars())


def labelled(conn: Connection, max_customers: int) -> set[str]:
    return first_seen(conn, max_customers) | set(
        conn.execute(select(labelled_customers.c.customer_id)).scalars())


def ensure_labelled(conn: Connection, customer_id: str, max_customers: int, now_us: int) -> None:
    """Give a customer its own label for good (it has a limit or credits now). If it was
    folded until now, what it had accrued under "__other__" stays there, as its baseline."""
    already = conn.execute(select(labelled_customers.c.customer_id)
                           .where(labelled_customers.c.customer_id == customer_id)).first()
    if already is not None:
        return
    conn.execute(insert(labelled_customers).values(customer_id=customer_id, since_us=now_us))
    if customer_id in first_seen(conn, max_customers):
        return
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
