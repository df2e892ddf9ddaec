"""The warehouse's bulk path (warehouse/bulk.py): what goes in comes back exactly, NULLs and
awkward text included, on every backend (MySQL/MariaDB: LOAD DATA LOCAL INFILE)."""

from __future__ import annotations

import sqlite3
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from conftest import Env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, Table, case, delete, event, select

from retail_etl.errors import WarehouseError
from retail_etl.warehouse import bulk
from retail_etl.warehouse.schema import customers_data_mart

AWKWARD = [
    None,
    "",
    "NULL",
    "\\N",
    "back\\slash",
    'quo"te',
    "com,ma",
    "line\nbreak",
    "cr\rlf\r\n",
    "Zoë 🛒 O'Brien",
    "trailing\\",
]


def test_load_round_trips_every_value(env: Env) -> None:
    n = len(AWKWARD)
    data = pa.table(
        {
            "customer_id": pa.array(range(1, n + 1), pa.int64()),
            "full_name": pa.array(AWKWARD, pa.string()),
            "address": pa.array(list(reversed(AWKWARD)), pa.string()),
            "phone_number": pa.array([None] * n, pa.string()),
            "sales_date_month": pa.array([date(2024, 3, 1)] * n, pa.date32()),
            "total_sales": pa.array(
                [Decimal("-0.05"), Decimal("12345.67"), *[Decimal("1.10")] * (n - 2)],
                pa.decimal128(18, 2),
            ),
            "total_cents": pa.array([-5, 999999999999999999, *range(n - 2)], pa.int64()),
            "sales_rows": pa.array(range(n), pa.int64()),
            "updated_at": pa.array([datetime(2024, 3, 31, 23, 59, 59)] * n, pa.timestamp("s")),
        }
    )
    sent: list[str] = []
    event.listen(env.warehouse.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    with env.warehouse.begin() as conn:
        written_before = env.warehouse.rows_written
        bulk.load(conn, customers_data_mart, data)
        assert env.warehouse.rows_written - written_before == n
    # MySQL/MariaDB take the rows as a file; SQLite as one executemany
    path = "LOAD DATA LOCAL INFILE" if env.warehouse.dialect == "mysql" else "INSERT INTO"
    assert any(statement.startswith(path) for statement in sent)
    t = customers_data_mart
    with env.warehouse.begin() as conn:
        rows = conn.execute(select(t).order_by(t.c.customer_id)).all()
        # the bulk reads too (MySQL/MariaDB: pages as CSV text), whole and in small pages
        read = bulk.select_arrow(conn, select(t), t.c.customer_id)
        pages = list(bulk.select_arrow_batches(conn, select(t).order_by(t.c.customer_id), 3))
    assert [tuple(r) for r in rows] == [tuple(row.values()) for row in data.to_pylist()]
    assert read.to_pylist() == data.to_pylist()
    assert [page.num_rows for page in pages] == [3, 3, 3, 2]
    assert pa.concat_tables(pages).sort_by("customer_id").to_pylist() == data.to_pylist()


def test_a_value_too_large_fails_the_load_instead_of_being_clipped(env: Env) -> None:
    """LOAD DATA LOCAL would store a value strict mode refuses as a clipped one, with a
    warning: the bulk path refuses it as any statement would. (SQLite stores any number; the
    run checks the marts' totals itself: marts/merge.py.)"""
    data = pa.table(
        {
            "customer_id": pa.array([1]),
            "sales_date_month": pa.array([date(2024, 3, 1)]),
            "total_sales": pa.array([Decimal(10) ** 17], pa.decimal128(20, 2)),
            "total_cents": pa.array([1]),
            "sales_rows": pa.array([1]),
            "updated_at": pa.array([datetime(2024, 3, 31)], pa.timestamp("s")),
        }
    )
    if env.warehouse.dialect == "sqlite":
        with env.warehouse.begin() as conn:
            bulk.load(conn, customers_data_mart, data)
        return
    with pytest.raises(WarehouseError, match="Out of range"), env.warehouse.begin() as conn:
        bulk.load(conn, customers_data_mart, data)
    with env.warehouse.begin() as conn:
        assert conn.execute(select(customers_data_mart)).all() == []


CENTS = st.integers(-(10**15), 10**15)  # exact in a REAL: SQLite's storage of money
# any text a name or an address can hold (utf8mb4: every code point but the surrogates)
NAMES = st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cs",)), max_size=40))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cents=st.lists(st.one_of(st.none(), CENTS), min_size=1, max_size=40))
def test_select_arrow_reads_back_what_load_wrote(embedded: Env, cents: list[int | None]) -> None:
    """Money, dates, times and NULLs come back exactly as written, through the fast reads
    (sqlite3's own rows, typed by Arrow) that coupons and snapshots use."""
    n = len(cents)
    money = [None if c is None else Decimal(c).scaleb(-2) for c in cents]
    data = pa.table(
        {
            "customer_id": pa.array(range(1, n + 1), pa.int64()),
            "full_name": pa.array([None if c is None else str(c) for c in cents], pa.string()),
            "address": pa.array([None] * n, pa.string()),
            "phone_number": pa.array([None] * n, pa.string()),
            "sales_date_month": pa.array([date(2024, 1 + i % 12, 1) for i in range(n)]),
            "total_sales": pa.array([m or Decimal(0) for m in money], pa.decimal128(18, 2)),
            "total_cents": pa.array([c or 0 for c in cents], pa.int64()),
            "sales_rows": pa.array(range(n), pa.int64()),
            "updated_at": pa.array([datetime(2024, 3, 31, 23, 59, i % 60) for i in range(n)]),
        }
    )
    t = customers_data_mart
    with embedded.warehouse.begin() as conn:
        conn.execute(delete(t))
        bulk.load(conn, t, data)
        read = bulk.select_arrow(conn, select(t).order_by(t.c.customer_id), t.c.customer_id)
        pages = list(bulk.select_arrow_batches(conn, select(t).order_by(t.c.customer_id), 7))
    assert read.to_pylist() == data.to_pylist()
    assert pa.concat_tables(pages).to_pylist() == data.to_pylist()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(names=st.lists(st.tuples(NAMES, NAMES), min_size=1, max_size=30))
def test_any_text_comes_back_exactly_through_the_bulk_paths(
    env: Env, names: list[tuple[str | None, str | None]]
) -> None:
    """Names and addresses as the source systems give them (quotes, commas, line breaks,
    backslashes, NUL, emoji) survive the bulk write and the bulk read on every backend."""
    n = len(names)
    data = pa.table(
        {
            "customer_id": pa.array(range(1, n + 1), pa.int64()),
            "full_name": pa.array([name for name, _ in names], pa.string()),
            "address": pa.array([address for _, address in names], pa.string()),
            "phone_number": pa.array([None] * n, pa.string()),
            "sales_date_month": pa.array([date(2024, 3, 1)] * n),
            "total_sales": pa.array([Decimal("1.00")] * n, pa.decimal128(18, 2)),
            "total_cents": pa.array([100] * n, pa.int64()),
            "sales_rows": pa.array([1] * n, pa.int64()),
            "updated_at": pa.array([datetime(2024, 3, 31, 23, 59, 59)] * n),
        }
    )
    t = customers_data_mart
    with env.warehouse.begin() as conn:
        conn.execute(delete(t))
        bulk.load(conn, t, data)
        read = bulk.select_arrow(conn, select(t), t.c.customer_id)
        # ids and text alone: on SQLite, one CSV text SQLite writes (the dimensions' reads)
        columns = ["customer_id", "full_name", "address"]
        texts = bulk.select_arrow(conn, select(*(t.c[c] for c in columns)), t.c.customer_id)
    assert read.to_pylist() == data.to_pylist()
    assert texts.sort_by("customer_id").to_pylist() == data.select(columns).to_pylist()


def _integer_rows(cents: list[int | None]) -> pa.Table:
    """customers_data_mart rows whose total_cents are these (NULL: 0, with sales_rows 1)."""
    n = len(cents)
    return pa.table(
        {
            "customer_id": pa.array(range(1, n + 1), pa.int64()),
            "sales_date_month": pa.array([date(2024, 3, 1)] * n, pa.date32()),
            "total_sales": pa.array([Decimal("1.00")] * n, pa.decimal128(18, 2)),
            "total_cents": pa.array([c or 0 for c in cents], pa.int64()),
            "sales_rows": pa.array([1 if c is None else 2 for c in cents], pa.int64()),
            "updated_at": pa.array([datetime(2024, 3, 31)] * n, pa.timestamp("s")),
        }
    )


def _integers_read(conn: Any) -> list[tuple[int, int, int | None]]:
    """customer_id, total_cents and an integer expression that is NULL where sales_rows is
    1, read by select_arrow (SQLite: as one text), in customer order."""
    t = customers_data_mart
    maybe = case((t.c.sales_rows == 2, t.c.total_cents), else_=None).label("maybe")
    read = bulk.select_arrow(conn, select(t.c.customer_id, t.c.total_cents, maybe), t.c.customer_id)
    assert read.schema.names == ["customer_id", "total_cents", "maybe"]
    return sorted(tuple(row.values()) for row in read.to_pylist())  # type: ignore[misc]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cents=st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), max_size=40))
def test_integer_reads_come_back_whole_on_every_backend(env: Env, cents: list[int | None]) -> None:
    """Ids, cents and flags (the coupons' reads; SQLite writes them as one text) come back
    exactly, NULLs and the extremes of 64 bits included."""
    with env.warehouse.begin() as conn:
        conn.execute(delete(customers_data_mart))
        bulk.load(conn, customers_data_mart, _integer_rows(cents))
        read = _integers_read(conn)
    assert read == [(i + 1, c or 0, c) for i, c in enumerate(cents)]


def test_integer_reads_longer_than_sqlite_allows_as_one_text_are_read_as_rows(
    embedded: Env,
) -> None:
    cents = [None if i % 7 == 0 else i * 1001 for i in range(500)]
    with embedded.warehouse.begin() as conn:
        bulk.load(conn, customers_data_mart, _integer_rows(cents))
        raw = conn.connection.dbapi_connection
        assert raw is not None
        # room for any row of the table, not for the 500 rows as one text
        longest = raw.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1000)
        try:
            read = _integers_read(conn)
        finally:
            raw.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, longest)
    assert read == [(i + 1, c or 0, c) for i, c in enumerate(cents)]


@pytest.mark.parametrize("readers", [1, 2, 3])
def test_rows_read_by_several_connections_come_back_once_each(env: Env, readers: int) -> None:
    """The snapshots' read: with MySQL's readers sharing the keys out, every row comes back
    exactly once, in batches no larger than asked, whatever their order."""
    cents = list(range(0, 1430, 10))
    t = customers_data_mart
    with env.warehouse.begin() as conn:
        conn.execute(delete(t))
        bulk.load(conn, t, _integer_rows(cents))
    statement = select(t.c.customer_id, t.c.total_cents)
    batches = list(env.warehouse.read_batches(statement, 10, t.c.customer_id, readers))
    assert all(batch.num_rows <= 10 for batch in batches)
    read = pa.concat_tables(batches).sort_by("customer_id")
    assert read.to_pylist() == [
        {"customer_id": i + 1, "total_cents": c} for i, c in enumerate(cents)
    ]

    # a reader left early (its consumer stopped) lets the others go instead of hanging
    partial = env.warehouse.read_batches(statement, 10, t.c.customer_id, readers)
    assert next(partial).num_rows <= 10
    partial.close()


def test_a_read_that_fails_on_one_connection_fails_for_its_consumer(env: Env) -> None:
    missing = Table("no_such_table", MetaData(), Column("id", Integer))
    with pytest.raises(WarehouseError):
        list(env.warehouse.read_batches(select(missing.c.id), 10, missing.c.id, 2))
