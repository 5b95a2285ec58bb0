"""The connection to the SQL store: engine set-up, transactions, and schema migrations.

SQLite runs in WAL mode, so readers never wait for the writer. Every write transaction starts
with ``BEGIN IMMEDIATE``, which takes SQLite's write lock up front: a check-then-write inside it
cannot be interleaved with another writer, in this process or any other sharing the file.

PostgreSQL runs write transactions side by side (READ COMMITTED). What must not interleave
takes a lock of its own inside the transaction (see ``locks``): a customer's meters and event
ids, the numbering of new customers, and migrations. Waiting for any lock is bounded by
``database.busy_timeout_seconds`` on both stores.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import (
    Connection,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.pool import StaticPool

from ..config import DatabaseSettings
from ..errors import ConfigError, StorageUnavailable
from . import locks
from .prepared import Prepared
from .schema import metadata, schema_version

log = logging.getLogger(__name__)

_WRITE = "carnil_write"


class Database:
    """The store's engine, with read and write transactions."""

    def __init__(self, settings: DatabaseSettings):
        url = make_url(settings.url.get_secret_value())  # parsed already by the settings
        self.dialect = url.get_backend_name()
        self._writers = _WriterQueue(url, settings.busy_timeout_seconds) \
            if self.dialect == "sqlite" else None
        try:
            self.engine = _sqlite_engine(url, settings) if self.dialect == "sqlite" \
                else _server_engine(url, settings)
            migrate(self)
        except OperationalError as exc:
            hint = " (behind a pooler in transaction mode? set database.transaction_pooling)" \
                if "unsupported startup parameter" in str(exc.orig) else ""
            raise StorageUnavailable(f"cannot open the store: {exc.orig}{hint}") from None
        except OSError as exc:
            raise StorageUnavailable(f"cannot open the store: {exc.strerror}") from None
        except (ArgumentError, ImportError) as exc:
            hint = " (pip install 'carnil-analytics[postgresql]' and use postgresql+psycopg://)" \
                if isinstance(exc, ImportError) and self.dialect == "postgresql" else ""
            raise ConfigError(f"database.url: cannot use {url.drivername!r}: {exc}{hint}"
                              ) from None

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A write transaction holding the store's write lock; committed when the block ends."""
        with _storage_errors(), self._turn(), self.engine.connect() as conn:
            conn = conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    def _turn(self):
        return self._writers.turn() if self._writers is not None else nullcontext()

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read transaction: one consistent snapshot of the store."""
        with _storage_errors(), self.engine.connect() as conn, conn.begin():
            yield conn

    def check_writable(self) -> None:
        """Write one row: ``StorageUnavailable`` if the store is locked too long, read-only
        or out of space."""
        with self.writing() as conn:
            _PROBE.run(conn, {"name": "readyz", "checked_us": time.time_ns() // 1000})

    def close(self) -> None:
        self.engine.dispose()
        if self._writers is not None:
            self._writers.close()


_PROBE = Prepared(text(
    "INSERT INTO health_probe (name, checked_us) VALUES (:name, :checked_us) "
    "ON CONFLICT (name) DO UPDATE SET checked_us = excluded.checked_us"))


class _WriterQueue:
    """Lines SQLite writers up before they ask for SQLite's lock.

    SQLite's busy handler makes a waiting writer sleep and retry with growing pauses (up to
    100 ms), so under concurrency writers wait far longer than the lock is held. Here the
    threads of a process queue on a lock that hands over at once, and processes take turns on
    an ``flock`` of a file beside the database, polled every millisecond or two.
    """

    def __init__(self, url: URL, timeout_seconds: float):
        in_memory = url.database in (None, "", ":memory:")
        self._path = None if in_memory else Path(f"{url.database}-writers.lock")
        self._timeout = timeout_seconds
        self._pid, self._lock, self._file = None, None, None

    @contextmanager
    def turn(self) -> Iterator[None]:
        self._after_fork()
        if not self._lock.acquire(timeout=self._timeout):
            raise StorageUnavailable("timed out waiting for the write lock")
        try:
            if self._file is not None:
                self._flock()
            try:
                yield
            finally:
                if self._file is not None:
                    fcntl.flock(self._file, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._pid = self._file = None

    def _after_fork(self) -> None:
        """Locks and open files are per process: a forked child makes its own."""
        if self._pid != os.getpid():
            self._pid, self._lock = os.getpid(), threading.Lock()
            self._file = None if self._path is None else open(self._path, "a+b")  # noqa: SIM115

    def _flock(self) -> None:
        deadline, pause = time.monotonic() + self._timeout, 0.0001
        while True:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StorageUnavailable("timed out waiting for the write lock") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.002)


@contextmanager
def _storage_errors() -> Iterator[None]:
    """Database trouble (locked too long, disk full, read-only file) as ``StorageUnavailable``."""
    try:
        yield
    except OperationalError as exc:
        log.warning("store unavailable: %s", exc.orig)
        raise StorageUnavailable(f"the store is unavailable: {exc.orig}") from None


def _sqlite_engine(url: URL, settings: DatabaseSettings) -> Engine:
    in_memory = url.database in (None, "", ":memory:")
    if in_memory:
        # One shared connection, or every connection would see its own empty database.
        engine = create_engine(url, poolclass=StaticPool,
                               connect_args={"check_same_thread": False})
    else:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, pool_size=8, max_overflow=16)
    busy_ms = int(settings.busy_timeout_seconds * 1000)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event issue BEGIN itself instead of pysqlite's implicit one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={settings.synchronous.upper()}")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE)
                             else "BEGIN")

    return engine


def _server_engine(url: URL, settings: DatabaseSettings) -> Engine:
    """A client-server store (PostgreSQL): a pool sized for a worker's threads."""
    pool = {"pool_size": 8, "max_overflow": 16, "pool_pre_ping": True}
    if url.get_backend_name() != "postgresql":
        return create_engine(url, **pool)
    lock_ms = int(settings.busy_timeout_seconds * 1000)
    if not settings.transaction_pooling:
        return create_engine(url, **pool,
                             connect_args={"options": f"-c lock_timeout={lock_ms}"})
    # Behind a pooler in transaction mode each transaction may run on another server session,
    # so nothing may be left on one: no server-side prepared statements (psycopg prepares a
    # statement run five times on a connection), no startup options (PgBouncer refuses them);
    # the lock timeout is set in each write transaction instead.
    engine = create_engine(url, **pool, connect_args={"prepare_threshold": None})
    set_lock_timeout = f"SET LOCAL lock_timeout = {lock_ms}"

    @event.listens_for(engine, "begin")
    def _begin(conn):
        if conn.get_execution_options().get(_WRITE):
            conn.exec_driver_sql(set_lock_timeout)

    return engine


def _create_tables(*names: str) -> Callable[[Connection], None]:
    def create(conn: Connection) -> None:
        metadata.create_all(conn, tables=[metadata.tables[name] for name in names])
    return create


def _number_customers(conn: Connection) -> None:
    """The customers table, filled with the customers already recorded, oldest first."""
    from .schema import customers, totals  # the tables as this migration knows them

    metadata.create_all(conn, tables=[customers])
    first = func.min(totals.c.first_recorded_us)
    conn.execute(insert(customers).from_select(
        ["customer_id"], select(totals.c.customer_id).group_by(totals.c.customer_id)
        .order_by(first, totals.c.customer_id)))


def _order_by_transaction(conn: Connection) -> None:
    """The ``xact`` of events and the mirror's mark on it (stores made before they existed get
    0: their events are all committed); on PostgreSQL new events take their transaction's id."""
    from .schema import events

    present = {table: {c["name"] for c in inspect(conn).get_columns(table)}
               for table in ("events", "mirror_marks")}
    if "xact" not in present["events"]:
        conn.execute(text("ALTER TABLE events ADD COLUMN xact BIGINT NOT NULL DEFAULT 0"))
        next(i for i in events.indexes if i.name == "ix_events_outbox").create(conn)
    if "shipped_xact" not in present["mirror_marks"]:
        conn.execute(text(
            "ALTER TABLE mirror_marks ADD COLUMN shipped_xact BIGINT NOT NULL DEFAULT 0"))
    if conn.dialect.name == "postgresql":
        conn.execute(text("ALTER TABLE events ALTER COLUMN xact "
                          "SET DEFAULT pg_current_xact_id()::text::bigint"))


# Each entry brings the schema from version i to i + 1; append, never edit a released one.
MIGRATIONS: list[Callable[[Connection], None]] = [
    _create_tables("events", "rollups_minute", "rollups_hour", "totals", "meters",
                   "credit_ledger"),
    _create_tables("api_keys"),
    _create_tables("mirror_marks", "leases"),
    _create_tables("labelled_customers", "label_baselines"),
    lambda conn: _number_customers(conn),
    _create_tables("health_probe"),
    _order_by_transaction,
]


def migrate(db: Database) -> int:
    """Bring the schema up to date in one transaction; returns the version.

    An up-to-date store is only read: a server process starting while another holds the
    write lock (or the disk is full) must not fail to boot for a migration it does not need.
    """
    if _version(db) == len(MIGRATIONS):
        return len(MIGRATIONS)
    with db.engine.connect() as conn:
        conn = conn.execution_options(**{_WRITE: True})
        with conn.begin():
            locks.lock_migrations(conn)  # replicas starting together: one migrates
            schema_version.create(conn, checkfirst=True)
            current = conn.execute(select(func.max(schema_version.c.version))).scalar() or 0
            if current > len(MIGRATIONS):
                raise StorageUnavailable(
                    f"the store has schema version {current}, newer than this release "
                    f"understands ({len(MIGRATIONS)}); upgrade carnil-analytics")
            for version in range(current, len(MIGRATIONS)):
                log.info("migrating store schema to version %d", version + 1)
                MIGRATIONS[version](conn)
            if current == 0:
                conn.execute(insert(schema_version).values(version=len(MIGRATIONS)))
            elif current < len(MIGRATIONS):
                conn.execute(update(schema_version).values(version=len(MIGRATIONS)))
    return len(MIGRATIONS)


def _version(db: Database) -> int | None:
    """The schema version, read without the write lock; None for a store without one."""
    with db.engine.connect() as conn, conn.begin():
        if not inspect(conn).has_table(schema_version.name):
            return None
        return conn.execute(select(func.max(schema_version.c.version))).scalar()
