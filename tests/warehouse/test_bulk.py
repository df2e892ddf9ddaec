"""The warehouse's bulk path (warehouse/bulk.py): what goes in comes back exactly, NULLs and
awkward text included, on every backend (MySQL/MariaDB: LOAD DATA LOCAL INFILE)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest
from conftest import Env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, event, select

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
    assert read.to_pylist() == data.to_pylist()
