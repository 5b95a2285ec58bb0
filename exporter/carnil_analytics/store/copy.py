"""Copy a whole store into an empty one: how a deployment moves from SQLite to PostgreSQL
when it outgrows one machine (or back, or between servers).

Every table is copied as it is, in one read snapshot and one write transaction, so the target
holds either all of it or nothing. Three things are not copied as they are:

- leases and the readiness probe: they belong to the processes of the source;
- each event's ``xact`` (the writing transaction on PostgreSQL): ids of the source server mean
  nothing to the target's, so every copied event gets 0 — committed, and in sequence order;
- the mirror's mark, which becomes a plain sequence number to match: the last one before the
  first event the source had not shipped. So nothing unshipped is skipped; at worst a few
  shipped events are written again, which InfluxDB takes as an overwrite of identical points.

Sequences carry on above the copied numbers (SQLite keeps track by itself; PostgreSQL's are
set), so no sequence number is ever reused.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Table, func, insert, select, text, tuple_

from ..errors import ConfigError
from .database import Database
from .schema import events, health_probe, leases, metadata, mirror_marks, schema_version

_NOT_COPIED = (schema_version, leases, health_probe)  # the target has its own
_ROWS_PER_INSERT = 5000


def copy_store(source: Database, target: Database,
               progress: Callable[[str, int], None] = lambda table, rows: None
               ) -> dict[str, int]:
    """Copy every row of ``source`` into ``target``, which must hold no data; the number of
    rows per table. Raises ``ConfigError`` if the target is not empty."""
    copied = {}
    with source.reading() as reading, target.writing() as writing:
        tables = [t for t in metadata.sorted_tables if t not in _NOT_COPIED]
        filled = [t.name for t in tables if writing.execute(
            select(func.count()).select_from(t)).scalar()]
        if filled:
            raise ConfigError(f"the target store is not empty (it has rows in "
                              f"{', '.join(filled)}): copy into a new, empty database")
        for table in tables:
            copied[table.name] = _copy_table(reading, writing, table)
            progress(table.name, copied[table.name])
        _carry_marks(reading, writing)
        _continue_sequences(writing, tables)
    return copied


def _copy_table(reading: Connection, writing: Connection, table: Table) -> int:
    rows = reading.execution_options(yield_per=_ROWS_PER_INSERT).execute(
        select(table).order_by(*table.primary_key.columns))
    count = 0
    for chunk in rows.mappings().partitions():
        batch = [dict(row) for row in chunk]
        if table is events:
            for row in batch:
                row["xact"] = 0
        writing.execute(insert(table), batch)
        count += len(batch)
    return count


def _carry_marks(reading: Connection, writing: Connection) -> None:
    """Each mirror mark as the sequence number just before the source's first unshipped
    event (or its last event, when all were shipped)."""
    for target, xact, seq in reading.execute(select(
            mirror_marks.c.target, mirror_marks.c.shipped_xact, mirror_marks.c.shipped_seq)):
        first_unshipped = reading.execute(select(func.min(events.c.seq)).where(
            tuple_(events.c.xact, events.c.seq) > tuple_(xact, seq))).scalar()
        carried = first_unshipped - 1 if first_unshipped is not None else max(
            seq, reading.execute(select(func.max(events.c.seq))).scalar() or 0)
        writing.execute(mirror_marks.update().where(mirror_marks.c.target == target)
                        .values(shipped_xact=0, shipped_seq=carried))


def _continue_sequences(writing: Connection, tables: list[Table]) -> None:
    if writing.dialect.name != "postgresql":
        return  # SQLite's AUTOINCREMENT follows the largest number inserted
    for table in tables:
        for column in table.primary_key.columns:
            if column.autoincrement is True:  # the numbered tables say so explicitly
                writing.execute(text(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                    f"coalesce(max({column.name}), 0) + 1, false) FROM {table.name}"))
