"""The warehouse's share of a day, next to the CSV floor (DuckDB count + sum over the same
files, in this process): how long SQLite takes just to insert, with nothing else going on,
the rows a day of these files makes it hold -- one customers_data_mart row per customer-month,
one per-file partial per file and customer-month (what lets a correction take a file back
out exactly), and on the first day of a month a coupon per customer-month. With a large
customer base these writes alone decide whether "within 3.5x of the floor" can hold.

Usage: python bench/warehouse_floor.py BENCH_WORKDIR   (a `retail-etl bench` --workdir whose
csv/ holds the day). Prints one JSON object.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

from retail_etl.config import Settings
from retail_etl.engines import duckdb_engine
from retail_etl.marts.coupons import STORED_COLUMNS, coupon_code
from retail_etl.tools.bench import FLOOR_SQL
from retail_etl.warehouse import Warehouse, bulk
from retail_etl.warehouse.schema import (
    customer_coupons,
    customer_sales_partial,
    customers_data_mart,
)


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/warehouse_floor.py BENCH_WORKDIR")
    csvs = sorted(str(p) for p in (Path(sys.argv[1]) / "csv").rglob("*.csv"))
    if not csvs:
        sys.exit(f"no CSV files under {sys.argv[1]}/csv: run `retail-etl bench` there first")
    con = duckdb_engine.connect()
    floor = _timed(lambda: con.execute(FLOOR_SQL, [csvs]).fetchone())
    counted = con.execute(
        "SELECT count(DISTINCT (customer_id, m)), count(DISTINCT (filename, customer_id, m)) "
        "FROM (SELECT filename, customer_id, date_trunc('month', sales_date) AS m "
        "FROM read_csv($1, filename = true))",
        [csvs],
    ).fetchone()
    assert counted is not None
    customer_months, per_file = counted

    mart_rows = pa.table(
        {
            "customer_id": pa.array(range(1, customer_months + 1), pa.int64()),
            "full_name": pa.array(["Firstname Lastname"] * customer_months),
            "address": pa.array(["12 Some Street, Some Town"] * customer_months),
            "phone_number": pa.array(["9876543210"] * customer_months),
            "sales_date_month": pa.array([date(2024, 3, 1)] * customer_months, pa.date32()),
            "total_sales": pa.array([Decimal("1234.56")] * customer_months, pa.decimal128(18, 2)),
            "total_cents": pa.array([12345600] * customer_months, pa.int64()),
            "sales_rows": pa.array([3] * customer_months, pa.int64()),
            "updated_at": pa.array([datetime(2024, 3, 30)] * customer_months, pa.timestamp("s")),
        }
    )
    partial_rows = pa.table(
        {
            "ledger_id": pa.array([1 + i % 8 for i in range(per_file)], pa.int64()),
            "customer_id": pa.array([1 + i // 8 for i in range(per_file)], pa.int64()),
            "sales_date_month": pa.array([date(2024, 3, 1)] * per_file, pa.date32()),
            "total_cents": pa.array([12345600] * per_file, pa.int64()),
            "sales_rows": pa.array([3] * per_file, pa.int64()),
        }
    )
    # a coupon for every customer-month: day 1 of a month, every customer's first month
    coupons = [
        (
            "2024-03",
            customer_id,
            "welcome",
            Decimal("10.00"),
            "first purchases in 2024-03: spent 1,234.56",
            coupon_code(b"secret", customer_id, "2024-03", "welcome"),
            Decimal("1234.56"),
        )
        for customer_id in range(1, customer_months + 1)
    ]
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/warehouse.db"
        warehouse = Warehouse(Settings.model_validate({"warehouse": {"url": url}}).warehouse)
        warehouse.create_all()
        with warehouse.begin() as conn:
            mart = _timed(lambda: bulk.insert_arrow(conn, customers_data_mart, mart_rows))
        with warehouse.begin() as conn:
            partials = _timed(lambda: bulk.insert_arrow(conn, customer_sales_partial, partial_rows))
        with warehouse.begin() as conn:
            coupon_rows = _timed(
                lambda: bulk.upsert(conn, customer_coupons, STORED_COLUMNS, coupons)
            )
        warehouse.dispose()
    print(
        json.dumps(
            {
                "csv_files": len(csvs),
                "customer_months": customer_months,
                "per_file_customer_months": per_file,
                "floor_s": round(floor, 2),
                "mart_rows_insert_s": round(mart, 2),
                "mart_rows_x_floor": round(mart / floor, 2),
                "per_file_partials_insert_s": round(partials, 2),
                "per_file_partials_x_floor": round(partials / floor, 2),
                "coupon_rows_insert_s": round(coupon_rows, 2),
                "coupon_rows_x_floor": round(coupon_rows / floor, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
