"""The tables of the store (SQLAlchemy Core), the system of record.

Times are integers of microseconds since the epoch (UTC); money is integers of nano-units;
quantities are doubles (exact for whole numbers up to 2**53).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

ID = String(128)

# One row per recorded event, in a strictly increasing sequence (never reused, even after
# pruning). Kept for ``ingest.max_event_age_days``. The InfluxDB mirror follows the events in
# (xact, seq) order: see ``outbox``.
events = Table(
    "events", metadata,
    # SQLite's rowid alias must be spelled INTEGER; elsewhere 64 bits (BIGSERIAL).
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("kind", String(16), nullable=False),  # "usage" | "ai_usage"
    Column("customer_id", ID, nullable=False),
    Column("subject", ID, nullable=False),  # feature_id or model_id
    Column("ts_us", BigInteger, nullable=False),
    Column("recorded_us", BigInteger, nullable=False),
    Column("quantity", Float, nullable=False),  # usage, or tokens
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("cached_tokens", BigInteger, nullable=False, default=0),
    Column("cost_nanos", BigInteger, nullable=False),
    Column("event_id", String(255)),
    Column("fingerprint", String(64)),  # hash of the payload, to tell a replay from a conflict
    Column("metadata", Text),  # JSON
    # The id of the writing transaction on PostgreSQL (its default, set by a migration), so
    # that the mirror can tell which events may still have company from transactions in
    # flight. Always 0 on SQLite, whose transactions commit in sequence order.
    Column("xact", BigInteger, nullable=False, server_default=text("0")),
    UniqueConstraint("customer_id", "event_id", name="uq_events_customer_event_id"),
    Index("ix_events_meter_ts", "customer_id", "kind", "subject", "ts_us"),
    Index("ix_events_ts", "ts_us"),
    Index("ix_events_outbox", "xact", "seq"),
    sqlite_autoincrement=True,
)


def _measures() -> list[Column]:
    """The summed measures of rollups and totals; ingest adds events into them."""
    return [
        Column("events", BigInteger, nullable=False),
        Column("quantity", Float, nullable=False),  # usage, or tokens
        Column("input_tokens", BigInteger, nullable=False),
        Column("output_tokens", BigInteger, nullable=False),
        Column("cached_tokens", BigInteger, nullable=False),
        Column("cost_nanos", BigInteger, nullable=False),
    ]


MEASURES = tuple(column.name for column in _measures())


def _rollup(name: str) -> Table:
    """Sums of events per customer, kind, subject and time bucket."""
    return Table(
        name, metadata,
        Column("customer_id", ID, nullable=False),
        Column("bucket_us", BigInteger, nullable=False),
        Column("kind", String(16), nullable=False),
        Column("subject", ID, nullable=False),
        *_measures(),
        # Bucket before kind and subject: reports scan one customer's time range.
        PrimaryKeyConstraint("customer_id", "bucket_us", "kind", "subject"),
    )


rollups_minute = _rollup("rollups_minute")  # for rates; pruned after a few days
rollups_hour = _rollup("rollups_hour")  # for reports; kept

# Lifetime sums per customer and subject: the source of the Prometheus counters.
totals = Table(
    "totals", metadata,
    Column("customer_id", ID, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("subject", ID, nullable=False),
    *_measures(),
    Column("first_recorded_us", BigInteger, nullable=False),  # stable "first seen" order
    PrimaryKeyConstraint("customer_id", "kind", "subject"),
)

# The limit and credit state of a meter (a customer's feature, or its ai_tokens/ai_cost meter).
# A row exists once a limit is set or credits are first granted.
meters = Table(
    "meters", metadata,
    Column("customer_id", ID, nullable=False),
    Column("feature_id", ID, nullable=False),
    Column("limit_value", Float),  # null: no limit
    Column("period", String(8)),  # daily | weekly | monthly
    Column("reset_anchor_us", BigInteger),  # the reset_at the limit was set with, if any
    Column("period_start_us", BigInteger),
    Column("period_end_us", BigInteger),
    Column("period_usage", Float, nullable=False, default=0.0),
    Column("credit_metered", Boolean, nullable=False, default=False),
    Column("credit_balance", Float, nullable=False, default=0.0),
    PrimaryKeyConstraint("customer_id", "feature_id"),
)

# Every grant or adjustment of credits, with the balance it left.
credit_ledger = Table(
    "credit_ledger", metadata,
    Column("entry_id", Integer, primary_key=True, autoincrement=True),
    Column("customer_id", ID, nullable=False),
    Column("feature_id", ID, nullable=False),
    Column("amount", Float, nullable=False),
    Column("balance_after", Float, nullable=False),
    Column("reason", String(256)),
    Column("created_us", BigInteger, nullable=False),
    Index("ix_credit_ledger_meter", "customer_id", "feature_id", "entry_id"),
)

# API keys: only a hash of each key's secret is kept; revoked keys stay, for the record.
api_keys = Table(
    "api_keys", metadata,
    Column("key_id", String(32), primary_key=True),
    Column("secret_hash", String(64), nullable=False),  # sha256 hex of the secret part
    Column("role", String(16), nullable=False),
    Column("customer_id", ID),  # the one customer a "customer" key may see
    Column("created_us", BigInteger, nullable=False),
    Column("revoked_us", BigInteger),
)

# How far the InfluxDB mirror has shipped the events (their (xact, seq) position), and its
# counts.
mirror_marks = Table(
    "mirror_marks", metadata,
    Column("target", String(64), primary_key=True),
    Column("shipped_xact", BigInteger, nullable=False, server_default=text("0")),
    Column("shipped_seq", BigInteger, nullable=False),
    Column("points_written", BigInteger, nullable=False),
    Column("points_rejected", BigInteger, nullable=False),
    Column("write_errors", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)

# Named leases: which process does a job only one may do at a time (shipping the mirror).
leases = Table(
    "leases", metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_us", BigInteger, nullable=False),
)

# Every customer ever recorded, numbered in the order the store first saw them (the order of
# commits, not of clocks): the first prometheus.max_customers have their own label.
customers = Table(
    "customers", metadata,
    Column("number", Integer, primary_key=True, autoincrement=True),
    Column("customer_id", ID, nullable=False, unique=True),
    sqlite_autoincrement=True,
)

# Customers exported to Prometheus under their own label because they have (or had) a limit
# or credits, even if they were not among the first prometheus.max_customers seen; once in,
# never out. A customer that joined after it had been counted under "__other__" keeps there
# what it had then (its baseline), so neither its own counters nor "__other__" ever go down.
labelled_customers = Table(
    "labelled_customers", metadata,
    Column("customer_id", ID, primary_key=True),
    Column("since_us", BigInteger, nullable=False),
)

label_baselines = Table(
    "label_baselines", metadata,
    Column("customer_id", ID, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("subject", ID, nullable=False),
    *_measures(),
    PrimaryKeyConstraint("customer_id", "kind", "subject"),
)

# One row rewritten by every readiness check, so that "writable" means a write succeeded.
health_probe = Table(
    "health_probe", metadata,
    Column("name", String(32), primary_key=True),
    Column("checked_us", BigInteger, nullable=False),
)

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, nullable=False),
)
