"""Bulk reads and writes for the warehouse, on a connection of the caller's transaction: rows
bound as plain tuples through the driver's executemany, set-based upserts, Arrow in and out."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import (
    BigInteger,
    Connection,
    MetaData,
    Numeric,
    Select,
    Table,
    cast,
    func,
    insert,
    literal,
    literal_column,
    select,
    true,
)
from sqlalchemy.exc import DataError, DBAPIError

from retail_etl.errors import WarehouseError

UPSERT_CHUNK = 5_000
ROWS_WRITTEN = "retail_etl_rows_written"  # execution option: the rows a statement writes


def upsert(conn: Connection, table: Table, data: pa.Table) -> None:
    """Insert an Arrow table's rows (column names = table columns), replacing the non-key
    columns of rows whose primary key exists. SQLite: executemany of the upsert, bound as
    plain tuples Arrow makes, leaving a row that already holds the given values unwritten
    (upsert_skips_unchanged); MySQL/MariaDB: LOAD DATA LOCAL INFILE ... REPLACE when data
    gives every column, else the rows loaded (load) into a scratch copy of the table, then
    one INSERT ... SELECT ... ON DUPLICATE KEY UPDATE. A month's coupons for a million
    customers are a million rows."""
    if data.num_rows == 0:
        return
    names = data.column_names
    keys = [c.name for c in table.primary_key.columns]
    quote = conn.dialect.identifier_preparer.quote
    updates = [quote(n) for n in names if n not in keys] or [quote(keys[0])]
    if upsert_skips_unchanged(conn):
        statement = _insert_sql(conn, table, names)
        statement += f" ON CONFLICT ({', '.join(quote(k) for k in keys)}) DO UPDATE SET "
        statement += ", ".join(f"{n} = excluded.{n}" for n in updates)
        statement += " WHERE " + " OR ".join(f"{n} IS NOT excluded.{n}" for n in updates)
        _executemany(conn, statement, data)
        return
    if set(names) == {c.name for c in table.columns} and _local_files_allowed(conn):
        # every column given: LOAD DATA's REPLACE is the upsert, without a scratch copy and
        # its indexes (a month's million coupons on MariaDB: 12.5 s instead of 19.3 s)
        _load_data(conn, table, data, replace=True)
        return
    scratch = Table(f"etl_tmp_{table.name}", MetaData(), *(c._copy() for c in table.c))
    target, copy = quote(table.name), quote(scratch.name)
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE IF NOT EXISTS {copy} LIKE {target}")
    conn.exec_driver_sql(f"DELETE FROM {copy}")
    load(conn, scratch, data)
    columns = ", ".join(quote(n) for n in names)
    conn.exec_driver_sql(
        f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {copy} "
        "ON DUPLICATE KEY UPDATE " + ", ".join(f"{n} = VALUES({n})" for n in updates),
        execution_options={ROWS_WRITTEN: data.num_rows},
    )


def upsert_skips_unchanged(conn: Connection) -> bool:
    """Whether upsert leaves a row that already holds the given values unwritten by itself,
    so that a caller need not read the stored rows to write only the changed ones: SQLite's
    DO UPDATE ... WHERE; MySQL's LOAD DATA ... REPLACE rewrites every row it is given."""
    return conn.dialect.name == "sqlite"


def upsert_from_select(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    source: Select[Any],
    assignments: Callable[[Callable[[str], Any]], list[tuple[str, Any]]],
    rows: int | None = None,
) -> None:
    """INSERT INTO table (columns) SELECT ... ; rows whose key exists are updated with
    assignments(incoming): (column, expression) pairs where `incoming(name)` is the new
    row's value and table columns are the existing row's. MySQL applies the pairs in
    order (later ones see earlier results), SQLite all at once: list a column before the
    ones it is computed from. rows: how many rows the select gives, when known: the rows
    written (MySQL counts an updated row twice)."""
    keys = [c.name for c in table.primary_key.columns]
    source = source.where(true())  # SQLite: keeps ON CONFLICT from parsing as a join
    options = {ROWS_WRITTEN: rows} if rows is not None else {}
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite = sqlite_insert(table).from_select(list(columns), source)
        pairs = assignments(lambda name: lite.excluded[name])
        statement: Any = lite.on_conflict_do_update(index_elements=keys, set_=dict(pairs))
    else:
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        my = mysql_insert(table).from_select(list(columns), source)
        statement = my.on_duplicate_key_update(assignments(lambda name: my.inserted[name]))
    conn.execute(statement, execution_options=options)


def load(conn: Connection, table: Table, data: pa.Table) -> None:
    """Append an Arrow table's rows (column names = table columns) by the warehouse's fastest
    path: MySQL/MariaDB LOAD DATA LOCAL INFILE of a CSV that Arrow writes, when the server
    allows local files (the tool's own connections ask for them); otherwise, and on SQLite,
    insert_arrow's executemany of plain tuples in the caller's transaction."""
    if data.num_rows == 0:
        return
    if conn.dialect.name == "sqlite" or not _local_files_allowed(conn):
        insert_arrow(conn, table, data)
        return
    _load_data(conn, table, data)


def _load_data(conn: Connection, table: Table, data: pa.Table, replace: bool = False) -> None:
    """MySQL/MariaDB: LOAD DATA LOCAL INFILE of the rows as a CSV Arrow writes; replace: rows
    whose key exists are replaced (they must then give every column)."""
    columns = [_load_text(data.column(name)) for name in data.column_names]
    quote = conn.dialect.identifier_preparer.quote
    statement = (
        f"LOAD DATA LOCAL INFILE %s {'REPLACE ' if replace else ''}INTO TABLE "
        f"{quote(table.name)} CHARACTER SET utf8mb4 "
        "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '\\\\' "
        f"LINES TERMINATED BY '\\n' ({', '.join(quote(n) for n in data.column_names)})"
    )
    with tempfile.TemporaryDirectory(prefix="retail-etl-load-") as folder:
        path = Path(folder) / "rows.csv"
        pacsv.write_csv(
            pa.table(columns, names=data.column_names),
            path,
            pacsv.WriteOptions(include_header=False, quoting_style="needed"),
        )
        # a replaced row counts twice in the driver's rowcount (deleted, inserted)
        conn.exec_driver_sql(
            statement, (str(path),), execution_options={ROWS_WRITTEN: data.num_rows}
        )
    # LOAD DATA LOCAL turns what strict mode refuses (out of range, too long) into warnings
    # and stores the value clipped: refuse it here as any other statement would be.
    warning = conn.exec_driver_sql("SHOW WARNINGS LIMIT 1").first()
    if warning is not None:
        level, code, message = warning
        raise DataError(
            statement, None, Exception(int(code), f"{message} (LOAD DATA {level.lower()})")
        )


def _load_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A column as LOAD DATA reads it with ESCAPED BY '\\': text with its backslashes
    doubled, NULL as \\N."""
    text = column if pa.types.is_string(column.type) else pc.cast(_bindable(column), pa.string())
    if pa.types.is_string(column.type):
        text = pc.replace_substring(text, "\\", "\\\\")
    return pc.fill_null(text, "\\N")


def _local_files_allowed(conn: Connection) -> bool:
    """Whether this MySQL/MariaDB connection may LOAD DATA LOCAL: the client asked for it
    and the server's local_infile is on (asked once per connection)."""
    info = conn.connection.info
    if "local_infile" not in info:
        client = bool(getattr(conn.connection.dbapi_connection, "_local_infile", False))
        info["local_infile"] = client and bool(
            conn.exec_driver_sql("SELECT @@local_infile").scalar()
        )
    return bool(info["local_infile"])


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
    _executemany(conn, _insert_sql(conn, table, data.column_names), data)


def _executemany(conn: Connection, statement: str, data: pa.Table) -> None:
    """statement once per row of data, bound as plain tuples built column by column."""
    data = pa.table([_bindable(column) for column in data.columns], names=data.column_names)
    for batch in data.to_batches(max_chunksize=50_000):
        columns = [column.to_pylist() for column in batch.columns]
        conn.exec_driver_sql(statement, list(zip(*columns, strict=True)))


PAGE_ROWS = 50_000  # MySQL: rows of select_arrow_batches' first page, carried as one value
# MySQL: the text later pages aim at, from the first page's bytes per row. Fewer, larger
# pages cost the server less (a month's spends, a million rows of three integers: 3.3-3.4 s
# in pages of 50,000, 2.9 s in pages of 200,000), and 8 MB stays below MariaDB's default
# max_allowed_packet (16 MB), past which the server cuts a page and it is read again
PAGE_TEXT_BYTES = 8 << 20
SELECT_PAGE_ROWS = 1_000_000  # MySQL: select_arrow's largest page
PAGE_BYTES = 1 << 30  # MySQL: the longest page text asked for (the server may cut it sooner)
_LINE_END = "."  # a last field on every line: a line cut short has fewer fields


def select_arrow(conn: Connection, statement: Select[Any], key: Any = None) -> pa.Table:
    """A query's rows as Arrow, built column by column, typed from the selected columns;
    key: as for select_arrow_batches. On SQLite a query of integer and text columns only, with
    a key, is read as one text (_sqlite_text)."""
    selected = list(statement.selected_columns)
    if (
        conn.dialect.name == "sqlite"
        and key is not None  # the caller takes the rows in any order
        and all(_sqlite_writes_as_csv(_arrow_type(c)) for c in selected)
    ):
        whole = _sqlite_text(conn, statement, selected)
        if whole is not None:
            return whole
    # SQLite's pages are rows as Python tuples: kept small
    size = PAGE_ROWS if conn.dialect.name == "sqlite" else SELECT_PAGE_ROWS
    pages = list(select_arrow_batches(conn, statement, size, key))
    return pa.concat_tables(pages) if pages else _arrow_of(selected, [])


def select_arrow_batches(
    conn: Connection, statement: Select[Any], size: int, key: Any = None
) -> Iterator[pa.Table]:
    """select_arrow's rows, at most `size` at a time: a query of a million rows never has
    them all as Python objects at once.

    On MySQL/MariaDB the server packs each page into one CSV text (GROUP_CONCAT) that Arrow's
    CSV reader types in C: PyMySQL decodes an ordinary result field by field in Python, about
    40 µs a row (a million customers: 40 s); a page as JSON took 17.7 s for a month of the
    customer mart (a million rows), as CSV 8.5 s. A page the server cuts (max_allowed_packet)
    is read again in halves. key: a selected integer column unique among the statement's
    rows: pages then follow it (key > the last page's), where pages by OFFSET would read the
    rows before each page again. Without a key the statement must be ordered; within a page
    the order is not kept."""
    selected = list(statement.selected_columns)
    if conn.dialect.name == "sqlite":
        # sqlite3's own rows (its cursor reads them lazily), typed by Arrow: SQLAlchemy's
        # row objects and per-value processing took 4 of the 6 s a month's coupons spent
        # reading 300,000 customers' rows
        result = conn.execute(statement)
        try:
            while rows := result.cursor.fetchmany(size):
                yield _arrow_of(selected, rows, from_sqlite=True)
        finally:
            result.close()
        return
    conn.exec_driver_sql(f"SET SESSION group_concat_max_len = {int(PAGE_BYTES)}")
    limit = min(size, PAGE_ROWS)
    sized = False  # pages follow the first page's bytes per row, or the server's cut
    offset, last = 0, None
    while True:
        if key is None:  # the limit beside the statement's own ORDER BY: a derived
            page = statement.limit(limit).offset(offset)  # table's alone is not kept
        else:
            after = statement.where(key > last) if last is not None else statement
            page = after.order_by(None).order_by(key).limit(limit)
        window = page.subquery()
        fields = [_csv_field(window.c[c.name]) for c in selected]
        line = func.concat_ws(",", *fields, _LINE_END)
        packed = func.group_concat(line.op("SEPARATOR")(literal_column("'\n'")))
        text, page_rows = conn.execute(select(packed, func.count()).select_from(window)).one()
        if not page_rows:
            return
        data = (text or "").encode("utf-8")
        table = _csv_page(selected, data) if text is not None else None
        if table is None or table.num_rows != page_rows:  # cut by the server: smaller pages
            if limit == 1:
                raise WarehouseError(
                    "a row read from the warehouse does not fit in one reply of the server: "
                    "raise its max_allowed_packet"
                )
            limit, sized = max(1, limit // 2), True
            continue
        yield table
        offset += page_rows
        if key is not None:
            last = pc.max(table[key.name]).as_py()
        if not sized:
            limit, sized = max(1, min(size, PAGE_TEXT_BYTES * page_rows // len(data))), True


def _sqlite_writes_as_csv(kind: pa.DataType) -> bool:
    """Whether SQLite can write a column of this type as a CSV field Arrow reads back
    exactly: integers and text (money, dates and times it stores in forms of its own)."""
    return pa.types.is_integer(kind) or pa.types.is_string(kind)


def _sqlite_text(conn: Connection, statement: Select[Any], selected: list[Any]) -> pa.Table | None:
    """SQLite: a query of integer and text columns (ids, cents, flags, names) as one CSV text
    that SQLite writes and Arrow reads in C, where sqlite3's rows cost a Python object per
    value (a month's million coupon ids: 0.25 s against 1.25 s) and hold the GIL while they
    are made (the million customers read while the day's files are checked took twice as
    long as alone). The fields are _csv_field's, as in MySQL's pages. None when the text
    would be longer than SQLite's longest string: the caller then reads the rows."""
    window = statement.subquery()
    line: Any = None
    for column in selected:
        field = _csv_field(window.c[column.name])
        line = field if line is None else line.op("||")(",").op("||")(field)
    line = line.op("||")("," + _LINE_END)  # no line is empty: Arrow skips empty lines
    try:
        text = conn.execute(select(func.group_concat(line, "\n"))).scalar()
    except DBAPIError as exc:
        if "too big" not in str(exc.orig):  # SQLITE_TOOBIG: "string or blob too big"
            raise
        return None
    if text is None:  # no rows
        return _arrow_of(selected, [])
    return _csv_page(selected, text.encode("utf-8"))  # the MySQL pages' reader: the same CSV


def _csv_field(column: Any) -> Any:
    """A selected column as a CSV field, on MySQL and SQLite: text quoted, its quotes doubled
    (`replace` keeps NUL bytes, SQLite's `quote()` stops at them); numbers and dates as MySQL
    writes them; NULL as an empty, unquoted field."""
    kind = _arrow_type(column)
    value: Any
    if pa.types.is_integer(kind):
        value = cast(column, BigInteger)  # an expression's DECIMAL as a plain integer
    elif pa.types.is_decimal(kind):
        value = cast(column, Numeric(38, kind.scale))
    elif pa.types.is_string(kind):
        # + on text: MySQL's concat(), SQLite's ||
        value = literal('"') + func.replace(column, '"', '""') + literal('"')
    else:  # dates and times: YYYY-MM-DD[ HH:MM:SS]
        value = column
    return func.ifnull(value, "")


def _csv_page(selected: list[Any], text: bytes) -> pa.Table | None:
    """A page's CSV as a table typed from the selected columns, or None when the text is
    not whole (its last line cut short by the server)."""
    types = {c.name: _arrow_type(c) for c in selected}
    wide = {
        name: pa.decimal128(38, kind.scale) if pa.types.is_decimal(kind) else kind
        for name, kind in types.items()
    }
    wide["_line_end"] = pa.string()
    try:
        table = pacsv.read_csv(
            pa.py_buffer(text),
            read_options=pacsv.ReadOptions(column_names=list(wide)),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=wide,
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid:  # e.g. a line without its last field: cut short
        return None
    columns = []
    for name, kind in types.items():
        try:
            columns.append(table[name].cast(kind))
        except pa.ArrowInvalid:  # beyond the column's precision: kept wide, as from SQLite
            columns.append(table[name])
    return pa.table(columns, names=list(types))


def _arrow_of(selected: list[Any], rows: Sequence[Any], from_sqlite: bool = False) -> pa.Table:
    """Rows as a table typed from the selected columns; from sqlite3, dates and times are
    text and money the REAL nearest to it (read back to the cent, as SQLAlchemy's own '%.2f'
    does)."""
    data = list(zip(*rows, strict=True)) if rows else [() for _ in selected]
    columns = {}
    for column, values in zip(selected, data, strict=True):
        kind = _arrow_type(column)
        if from_sqlite and pa.types.is_temporal(kind):
            text = pa.array(list(values), pa.string())
            columns[column.name] = (
                text.cast(pa.timestamp("us")).cast(kind, safe=False)
                if pa.types.is_timestamp(kind)
                else text.cast(kind)
            )
        elif from_sqlite and pa.types.is_decimal(kind):
            wide = _sqlite_decimals(list(values), kind.scale)
            try:
                columns[column.name] = wide.cast(kind)
            except pa.ArrowInvalid:  # beyond 2^53 cents: as below
                columns[column.name] = wide
        elif pa.types.is_decimal(kind):
            wide = pa.array(list(values), pa.decimal128(38, kind.scale))
            try:
                columns[column.name] = wide.cast(kind)
            except pa.ArrowInvalid:  # SQLite: a REAL beyond 2^53 cents reads back rounded,
                columns[column.name] = wide  # maybe to one digit more than the column's
        else:
            columns[column.name] = pa.array(list(values), type=kind)
    return pa.table(columns)


def _sqlite_decimals(values: list[Any], scale: int) -> pa.Array:
    """sqlite3's numbers (REAL or INTEGER; TEXT if SQLite kept a value as written) as
    decimals of this scale."""
    try:
        return pa.array(values).cast(pa.decimal128(38, scale))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        exact = [None if v is None else Decimal(str(v)) for v in values]
        return pa.array(exact, pa.decimal128(38, scale))


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
