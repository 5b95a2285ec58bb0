"""Statements compiled once per dialect and run straight on the DBAPI cursor.

The ingest transaction runs the same handful of statements for every event. Going through
SQLAlchemy's execution machinery costs tens of microseconds per statement — more than SQLite
needs to run it — so the hot path compiles each statement once and hands the driver its own
SQL and parameters. It still runs inside the SQLAlchemy connection's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Table, text
from sqlalchemy.dialects import postgresql
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


class BulkInsert:
    """``INSERT INTO table (columns) … [conflict]`` of many rows in one call.

    SQLite, in process, runs the row statement once per row (``executemany``). PostgreSQL
    gets one statement whatever the number of rows: each column travels as one array and
    ``unnest`` turns the arrays back into rows, so a batch costs one round trip and one plan
    instead of one per row. ``conflict`` is an ``ON CONFLICT …`` clause both accept (rows of
    one call must not conflict with each other).
    """

    def __init__(self, table: Table, columns: Sequence[str], conflict: str = ""):
        self._columns = tuple(columns)
        names = ", ".join(self._columns)
        self._per_row = Prepared(text(
            f"INSERT INTO {table.name} ({names}) "
            f"VALUES ({', '.join(':' + c for c in self._columns)}) {conflict}"))
        arrays = ", ".join(
            f"CAST(:{c} AS {table.c[c].type.compile(dialect=postgresql.dialect())}[])"
            for c in self._columns)
        self._unnested = Prepared(text(
            f"INSERT INTO {table.name} ({names}) SELECT * FROM unnest({arrays}) {conflict}"))

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        if conn.dialect.name == "postgresql":
            self._unnested.run(conn, {c: [row[c] for row in rows] for c in self._columns})
        else:
            self._per_row.run_many(conn, rows)


def _bind(params: Mapping[str, Any], order: tuple[str, ...] | None):
    return params if order is None else tuple(params[name] for name in order)
