"""The baselines' side: plain ``sqlite3`` on a table shaped like the store's ``events``."""

from __future__ import annotations

import sqlite3
import time

# The columns and indexes of the library's ``events`` table, so a baseline pays the same index
# upkeep per row and the gap to the library is its own work (validation, pricing, rollups).
EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind VARCHAR(16) NOT NULL,
    customer_id VARCHAR(128) NOT NULL,
    subject VARCHAR(128) NOT NULL,
    ts_us BIGINT NOT NULL,
    recorded_us BIGINT NOT NULL,
    quantity FLOAT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cost_nanos BIGINT NOT NULL,
    event_id VARCHAR(255),
    fingerprint VARCHAR(64),
    metadata TEXT,
    UNIQUE (customer_id, event_id)
);
CREATE INDEX IF NOT EXISTS ix_events_meter_ts ON events (customer_id, kind, subject, ts_us);
CREATE INDEX IF NOT EXISTS ix_events_ts ON events (ts_us);
"""

INSERT_EVENT = (
    "INSERT INTO events (kind, customer_id, subject, ts_us, recorded_us, quantity, "
    "input_tokens, output_tokens, cached_tokens, cost_nanos) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def connect(path: str, synchronous: str = "normal") -> sqlite3.Connection:
    """A connection with the store's pragmas, in autocommit mode (transactions are explicit)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    return conn


def events_table(path: str, synchronous: str = "normal") -> sqlite3.Connection:
    """A fresh database at ``path`` holding an empty ``events`` table."""
    conn = connect(path, synchronous)
    conn.executescript(EVENTS_DDL)
    return conn


def now_us() -> int:
    return time.time_ns() // 1000
