"""The shipper: moves recorded events from the store's outbox to InfluxDB, batch by batch.

It never touches ingest: it reads committed events after its mark, writes them, and only then
moves the mark forward, in the store. A crash between the write and the mark makes the next
run write the same batch again, which InfluxDB takes as an overwrite of identical points.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from datetime import datetime

from ..config import InfluxDBSettings
from ..errors import StorageUnavailable
from ..models import to_micros
from ..store import leases, outbox
from ..store.database import Database
from .points import line
from .writers import RejectedPoints, TransientWriteError, Writer

log = logging.getLogger(__name__)

LEASE = "influxdb-shipper"


def _now_us() -> int:
    return time.time_ns() // 1000


class ShipperBusy(Exception):
    """Another process holds the shipping lease."""


class LeaseLost(ShipperBusy):
    """The lease expired while a batch was in flight and another process took it."""


class Shipper:
    """Ships the outbox of one store to one InfluxDB."""

    def __init__(self, db: Database, settings: InfluxDBSettings, writer: Writer,
                 target: str = outbox.MIRROR):
        self._db, self._writer, self._target = db, writer, target
        self._batch_size = settings.batch_size
        self._flush_interval = settings.flush_interval_seconds
        self._max_backoff = settings.max_backoff_seconds
        self._lease_ttl_us = int(max(15.0, 5 * settings.flush_interval_seconds) * 1e6)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    # ------------------------------------------------------------ one batch

    def ship_batch(self) -> int:
        """Ship the next batch after the mark; how many events it held (0: all shipped)."""
        with self._db.reading() as conn:
            mark = outbox.read_mark(conn, self._target)
            rows = outbox.pending(conn, mark.position, self._batch_size)
        if not rows:
            return 0
        written, rejected = self._deliver(rows, [line(row) for row in rows])
        with self._db.writing() as conn:
            # Fenced: a holder that stalled past its lease (another took over) moves nothing.
            if leases.holder(conn, LEASE, _now_us()) not in (None, self.holder):
                raise LeaseLost("the shipping lease passed to another process")
            outbox.advance(conn, outbox.position(rows[-1]), written, rejected, _now_us(),
                           self._target)
        return len(rows)

    def _deliver(self, rows: list, lines: list[str]) -> tuple[int, int]:
        """Write the points; when InfluxDB rejects some, find them by halving the batch (the
        others are rewritten unchanged, which is harmless). Returns (written, rejected)."""
        try:
            self._writer.write(lines)
            return len(rows), 0
        except RejectedPoints as exc:
            if len(rows) == 1:
                log.error("InfluxDB rejected the point of event seq=%d id=%s (customer %s, "
                          "%s): %s; skipped", rows[0].seq, rows[0].event_id,
                          rows[0].customer_id, rows[0].subject, exc)
                return 0, 1
            half = len(rows) // 2
            first = self._deliver(rows[:half], lines[:half])
            second = self._deliver(rows[half:], lines[half:])
            return first[0] + second[0], first[1] + second[1]

    # ------------------------------------------------------------ one-shot runs

    def ship_all(self) -> int:
        """Ship until the outbox is empty, holding the lease so no running server ships the same
        events meanwhile. Raises ``ShipperBusy`` when another process holds the lease, and
        ``TransientWriteError`` if InfluxDB fails."""
        if not self._hold_lease():
            raise ShipperBusy("another process is shipping (a running serve holds the lease)")
        total = 0
        try:
            while shipped := self.ship_batch():
                total += shipped
                self._hold_lease()
        finally:
            self._release_lease()
        return total

    def backfill(self, since: datetime) -> int:
        """Write again every retained event dated from ``since`` on, leaving the mark alone."""
        cursor, total = outbox.START, 0
        while True:
            with self._db.reading() as conn:
                rows = outbox.pending(conn, cursor, self._batch_size, to_micros(since))
            if not rows:
                return total
            self._deliver(rows, [line(row) for row in rows])
            cursor, total = outbox.position(rows[-1]), total + len(rows)

    # ------------------------------------------------------------ background

    def run(self, stop: threading.Event) -> None:
        """Ship while this process holds the lease, until ``stop`` is set."""
        backoff = 0.0
        while not stop.is_set():
            try:
                if not self._hold_lease():
                    stop.wait(self._lease_ttl_us / 3e6)
                    continue
                shipped = self.ship_batch()
                backoff = 0.0
                if shipped < self._batch_size:
                    stop.wait(self._flush_interval)
            except LeaseLost as exc:
                log.warning("stopped shipping: %s", exc)
            except TransientWriteError as exc:
                backoff = min(self._max_backoff, max(self._flush_interval, backoff * 2))
                log.warning("InfluxDB write failed (%s); retrying in up to %.1f s", exc, backoff)
                self._count_error()
                stop.wait(random.uniform(backoff / 2, backoff))  # jitter: no thundering herd
            except StorageUnavailable as exc:
                log.warning("shipper cannot reach the store: %s", exc)
                stop.wait(self._flush_interval)
            except Exception:  # never let the thread die: it would stop the mirror silently
                log.exception("shipper failed unexpectedly")
                stop.wait(self._flush_interval)

    def drain(self, grace_seconds: float) -> None:
        """On shutdown: ship what can be shipped within ``grace_seconds``, then let go."""
        deadline = time.monotonic() + grace_seconds
        try:
            while time.monotonic() < deadline and self._holds_lease() and self.ship_batch():
                pass
        except (TransientWriteError, StorageUnavailable, LeaseLost) as exc:
            log.warning("shipping on shutdown stopped: %s", exc)
        finally:
            self._release_lease()

    def _hold_lease(self) -> bool:
        with self._db.writing() as conn:
            return leases.acquire(conn, LEASE, self.holder, _now_us(), self._lease_ttl_us)

    def _holds_lease(self) -> bool:
        try:
            return self._hold_lease()
        except StorageUnavailable:
            return False

    def _release_lease(self) -> None:
        try:
            with self._db.writing() as conn:
                leases.release(conn, LEASE, self.holder)
        except StorageUnavailable:
            pass  # it expires by itself

    def _count_error(self) -> None:
        try:
            with self._db.writing() as conn:
                outbox.count_write_error(conn, _now_us(), self._target)
        except StorageUnavailable:
            pass
