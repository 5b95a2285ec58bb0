"""Statements compiled once per dialect and run straight on the DBAPI cursor.

The ingest transaction runs the same handful of statements for every event. Going through
SQLAlchemy's execution machinery costs tens of microseconds per statement — more than SQLite
needs to run it — so the hot path compiles each statement once and hands the driver its own
SQL and parameters. It still runs inside the SQLAlchemy connection's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement


class Prepared:
    """One statement, compiled lazily for each dialect it meets."""

    def __init__(self, statement: ClauseElement):
        self._statement = statement
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None]] = {}

    def _for(self, conn: Connection) -> tuple[str, tuple[str, ...] | None]:
        found = self._compiled.get(conn.dialect.name)
        if found is None:
            compiled = self._statement.compile(dialect=conn.dialect)
            # Positional drivers (sqlite3: "?") need the bind names in order; named ones don't.
            order = tuple(compiled.positiontup) if compiled.positional else None
            found = self._compiled[conn.dialect.name] = (compiled.string, order)
        return found

    def run(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple]:
        """Execute once; the rows it returns (empty for DML)."""
        sql, order = self._for(conn)
        with _cursor(conn, sql) as cursor:
            cursor.execute(sql, _bind(params, order))
            return cursor.fetchall() if cursor.description else []

    def run_many(self, conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
        """Execute once per parameter set, in one driver call."""
        sql, order = self._for(conn)
        with _cursor(conn, sql) as cursor:
            cursor.executemany(sql, [_bind(row, order) for row in rows])


@contextmanager
def _cursor(conn: Connection, sql: str) -> Iterator[Any]:
    """A driver cursor whose errors surface as SQLAlchemy's (``OperationalError``,
    ``IntegrityError``, ...), as they would through ``conn.execute``."""
    driver_error = conn.dialect.loaded_dbapi.Error
    cursor = conn.connection.driver_connection.cursor()
    try:
        yield cursor
    except driver_error as exc:
        raise DBAPIError.instance(sql, None, exc, driver_error, dialect=conn.dialect) from exc
    finally:
        cursor.close()


def _bind(params: Mapping[str, Any], order: tuple[str, ...] | None):
    return params if order is None else tuple(params[name] for name in order)
