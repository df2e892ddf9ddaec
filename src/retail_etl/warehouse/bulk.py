"""Bulk reads and writes for the warehouse, on a connection of the caller's transaction: rows
bound as plain tuples through the driver's executemany, set-based upserts, Arrow in and out."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, Select, Table, insert, true

UPSERT_CHUNK = 5_000


def upsert(
    conn: Connection, table: Table, names: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert rows (values in the order of names), replacing the non-key columns of rows
    whose primary key exists. Bound as plain tuples by the driver: a month's coupons for a
    million customers are a million rows."""
    if not rows:
        return
    keys = [c.name for c in table.primary_key.columns]
    quote = conn.dialect.identifier_preparer.quote
    statement = _insert_sql(conn, table, names)
    updates = [quote(n) for n in names if n not in keys] or [quote(keys[0])]
    if conn.dialect.name == "sqlite":
        statement += f" ON CONFLICT ({', '.join(quote(k) for k in keys)}) DO UPDATE SET "
        statement += ", ".join(f"{n} = excluded.{n}" for n in updates)
    else:
        statement += " ON DUPLICATE KEY UPDATE "
        statement += ", ".join(f"{n} = VALUES({n})" for n in updates)
    for start in range(0, len(rows), UPSERT_CHUNK):
        chunk = rows[start : start + UPSERT_CHUNK]
        conn.exec_driver_sql(statement, [tuple(map(_driver_value, row)) for row in chunk])


def upsert_from_select(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    source: Select[Any],
    assignments: Callable[[Callable[[str], Any]], list[tuple[str, Any]]],
) -> None:
    """INSERT INTO table (columns) SELECT ... ; rows whose key exists are updated with
    assignments(incoming): (column, expression) pairs where `incoming(name)` is the new
    row's value and table columns are the existing row's. MySQL applies the pairs in
    order (later ones see earlier results), SQLite all at once: list a column before the
    ones it is computed from."""
    keys = [c.name for c in table.primary_key.columns]
    source = source.where(true())  # SQLite: keeps ON CONFLICT from parsing as a join
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite = sqlite_insert(table).from_select(list(columns), source)
        pairs = assignments(lambda name: lite.excluded[name])
        conn.execute(lite.on_conflict_do_update(index_elements=keys, set_=dict(pairs)))
    else:
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        my = mysql_insert(table).from_select(list(columns), source)
        conn.execute(my.on_duplicate_key_update(assignments(lambda name: my.inserted[name])))


def insert_many(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    for start in range(0, len(rows), UPSERT_CHUNK):
        conn.execute(insert(table), list(rows[start : start + UPSERT_CHUNK]))


def insert_arrow(conn: Connection, table: Table, data: pa.Table) -> None:
    """Bulk-insert an Arrow table's rows (column names = table columns) as plain tuples:
    no per-row dicts; pymysql turns this into multi-row INSERTs. Decimals and dates are
    turned into text by Arrow, not one Python object at a time (a million customers give
    millions of rows a day)."""
    if data.num_rows == 0:
        return
    statement = _insert_sql(conn, table, data.column_names)
    data = pa.table([_bindable(column) for column in data.columns], names=data.column_names)
    for batch in data.to_batches(max_chunksize=50_000):
        columns = [column.to_pylist() for column in batch.columns]
        conn.exec_driver_sql(statement, list(zip(*columns, strict=True)))


def select_arrow(conn: Connection, statement: Select[Any]) -> pa.Table:
    """A query's rows as Arrow, built column by column, typed from the selected columns."""
    return _arrow_of(list(statement.selected_columns), conn.execute(statement).fetchall())


def select_arrow_batches(conn: Connection, statement: Select[Any], size: int) -> Iterator[pa.Table]:
    """select_arrow's rows, at most `size` at a time: a query of a million rows never has
    them all as Python objects at once (MySQL streams them through a server-side cursor)."""
    selected = list(statement.selected_columns)
    result = conn.execution_options(yield_per=size).execute(statement)
    for rows in result.partitions():
        yield _arrow_of(selected, rows)


def _arrow_of(selected: list[Any], rows: Sequence[Any]) -> pa.Table:
    data = list(zip(*rows, strict=True)) if rows else [() for _ in selected]
    return pa.table(
        {
            column.name: pa.array(list(values), type=_arrow_type(column))
            for column, values in zip(selected, data, strict=True)
        }
    )


def _arrow_type(column: Any) -> pa.DataType:
    from sqlalchemy import Date, DateTime, Integer, Numeric

    if isinstance(column.type, Integer):
        return pa.int64()
    if isinstance(column.type, Numeric):
        return pa.decimal128(column.type.precision or 18, column.type.scale or 2)
    if isinstance(column.type, DateTime):
        return pa.timestamp("s")
    if isinstance(column.type, Date):
        return pa.date32()
    return pa.string()


def _insert_sql(conn: Connection, table: Table, names: Sequence[str]) -> str:
    """INSERT INTO table (names) VALUES (markers), for the driver's executemany: tuples bind
    far faster than SQLAlchemy's per-row dicts."""
    quote = conn.dialect.identifier_preparer.quote
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) "
        f"VALUES ({', '.join([marker] * len(names))})"
    )


def _bindable(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Values every driver binds the same way: decimals and dates as their text (sqlite3 has
    no Decimal/date adapters of its own in newer Pythons; ISO text is also how SQLAlchemy
    stores dates in SQLite)."""
    kind = column.type
    if pa.types.is_decimal(kind) or pa.types.is_date(kind) or pa.types.is_timestamp(kind):
        return pc.cast(column, pa.string())
    return column


def _driver_value(value: Any) -> Any:
    """One value as _bindable gives a column's: decimals and dates as text."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):  # datetime included: ISO text with a space, as SQLAlchemy's
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    return value
