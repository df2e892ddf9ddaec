"""The warehouse's share of a day, next to the CSV floor (DuckDB count + sum over the same
files, in this process): how long the warehouse takes just to write, with nothing else going
on, the rows a day of these files makes it hold -- one customers_data_mart row per
customer-month, and on the first day of a month a coupon per customer-month -- through the
tool's own bulk paths (warehouse/bulk.py: executemany on SQLite, LOAD DATA LOCAL INFILE on
MySQL/MariaDB). With a large customer base these writes alone bound how fast a run can be.

Then the same rows again with other values, into the month that now holds them (bulk.upsert:
SQLite's INSERT ... ON CONFLICT DO UPDATE, MySQL's LOAD DATA ... REPLACE): what a later day of
the month must at least write when every customer bought again (the bench's day 30), so that
the update's extra cost over the first day's inserts is measured apart.

Last, the month read back through the tool's own reads: its spends (customer id and cents,
what the coupons read inside the commit) and its whole rows (what a snapshot reads, by
SNAPSHOT_READERS connections on MySQL).

Usage: python bench/warehouse_floor.py BENCH_WORKDIR [WAREHOUSE_URL]   (a `retail-etl bench`
--workdir whose csv/ holds the day; default a fresh SQLite file; a mysql+pymysql:// URL names
an empty database the script may fill). Prints one JSON object.
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
from sqlalchemy import func, select

from retail_etl.config import Settings
from retail_etl.engines import duckdb_engine
from retail_etl.marts.coupons import STORED_COLUMNS, coupon_codes
from retail_etl.marts.snapshots import SNAPSHOT_BATCH_ROWS, SNAPSHOT_READERS
from retail_etl.tools.bench import FLOOR_SQL
from retail_etl.warehouse import Warehouse, bulk
from retail_etl.warehouse.schema import customer_coupons, customers_data_mart


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python bench/warehouse_floor.py BENCH_WORKDIR [WAREHOUSE_URL]")
    csvs = sorted(str(p) for p in (Path(sys.argv[1]) / "csv").rglob("*.csv"))
    if not csvs:
        sys.exit(f"no CSV files under {sys.argv[1]}/csv: run `retail-etl bench` there first")
    con = duckdb_engine.connect()
    floor = _timed(lambda: con.execute(FLOOR_SQL, [csvs]).fetchone())
    counted = con.execute(
        "SELECT count(DISTINCT (customer_id, date_trunc('month', sales_date))) FROM read_csv($1)",
        [csvs],
    ).fetchone()
    assert counted is not None
    (customer_months,) = counted
    ids = list(range(1, customer_months + 1))
    mart_rows = pa.table(
        {
            "customer_id": pa.array(ids, pa.int64()),
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
    # a coupon for every customer-month: day 1 of a month, every customer's first month
    welcome = pa.array(["welcome"] * customer_months)
    customer_ids = pa.array(ids, pa.int64())
    coupons = pa.table(
        {
            "month": pa.array(["2024-03"] * customer_months),
            "customer_id": customer_ids,
            "segment": welcome,
            "discount_pct": pa.array([Decimal("10.00")] * customer_months, pa.decimal128(5, 2)),
            "reason": pa.array(["first purchases in 2024-03: spent 1,234.56"] * customer_months),
            "code": coupon_codes(b"secret", customer_ids, "2024-03", welcome),
            "total_sales": pa.array([Decimal("1234.56")] * customer_months, pa.decimal128(18, 2)),
        }
    ).select(list(STORED_COLUMNS))
    # a later day of the month: every customer bought again, every row's values differ
    later_total = pa.array([Decimal("2345.67")] * customer_months, pa.decimal128(18, 2))
    mart_later = mart_rows.set_column(
        mart_rows.schema.get_field_index("total_sales"), "total_sales", later_total
    ).set_column(
        mart_rows.schema.get_field_index("total_cents"),
        "total_cents",
        pa.array([23456700] * customer_months, pa.int64()),
    )
    coupons_later = coupons.set_column(
        coupons.schema.get_field_index("total_sales"), "total_sales", later_total
    ).set_column(
        coupons.schema.get_field_index("reason"),
        "reason",
        pa.array(["first purchases in 2024-03: spent 2,345.67"] * customer_months),
    )
    with tempfile.TemporaryDirectory() as folder:
        url = sys.argv[2] if len(sys.argv) == 3 else f"sqlite:///{folder}/warehouse.db"
        warehouse = Warehouse(Settings.model_validate({"warehouse": {"url": url}}).warehouse)
        warehouse.create_all()
        with warehouse.begin() as conn:
            conn.execute(customers_data_mart.delete())
            conn.execute(customer_coupons.delete())
        with warehouse.begin() as conn:
            mart = _timed(lambda: bulk.load(conn, customers_data_mart, mart_rows))
        with warehouse.begin() as conn:
            coupon_rows = _timed(lambda: bulk.upsert(conn, customer_coupons, coupons))
        with warehouse.begin() as conn:
            mart_update = _timed(lambda: bulk.upsert(conn, customers_data_mart, mart_later))
        with warehouse.begin() as conn:
            coupon_update = _timed(lambda: bulk.upsert(conn, customer_coupons, coupons_later))
        month = customers_data_mart.c.sales_date_month == date(2024, 3, 1)
        spends = select(customers_data_mart.c.customer_id, customers_data_mart.c.total_cents)
        with warehouse.begin() as conn:
            spends_read = _timed(
                lambda: bulk.select_arrow(
                    conn, spends.where(month), key=customers_data_mart.c.customer_id
                )
            )
        snapshot_read = _timed(
            lambda: list(
                warehouse.read_batches(
                    select(customers_data_mart).where(month),
                    SNAPSHOT_BATCH_ROWS,
                    customers_data_mart.c.customer_id,
                    SNAPSHOT_READERS,
                )
            )
        )
        with warehouse.begin() as conn:  # every row was replaced, none added
            updated = [
                conn.execute(
                    select(func.count()).where(table.c.total_sales == Decimal("2345.67"))
                ).scalar_one()
                for table in (customers_data_mart, customer_coupons)
            ]
        warehouse.dispose()
    if updated != [customer_months, customer_months]:
        sys.exit(f"the updates replaced {updated} rows, not {customer_months} each")
    print(
        json.dumps(
            {
                "warehouse": warehouse.dialect,
                "csv_files": len(csvs),
                "customer_months": customer_months,
                "floor_s": round(floor, 2),
                "mart_rows_insert_s": round(mart, 2),
                "mart_rows_x_floor": round(mart / floor, 2),
                "coupon_rows_insert_s": round(coupon_rows, 2),
                "coupon_rows_x_floor": round(coupon_rows / floor, 2),
                "mart_rows_update_s": round(mart_update, 2),
                "coupon_rows_update_s": round(coupon_update, 2),
                # what a later day of the month costs the warehouse beyond the first day
                "update_over_insert_s": round(mart_update + coupon_update - mart - coupon_rows, 2),
                "month_spends_read_s": round(spends_read, 2),
                "month_rows_read_s": round(snapshot_read, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
