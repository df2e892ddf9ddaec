"""Per-day sales aggregates, kept for the daily report.

A day is finer than the marts' month grain, so the daily report needs day-grain figures.
Reading the lake for them would mean listing and downloading a whole `sales_month=`
partition through the object store (every store, every day of the month) for one day: on
S3 that is the month's data over the network for each report. Instead, at publish time, the
batch's valid rows (already on local disk, in the layout every engine leaves, see
engines/base.py) are summed per source file and day at two small grains -- (store, sales
person) and product -- with the in-process DuckDB that is always installed, whatever the
engine. The sums are written in the same warehouse transaction as the marts and deleted with
a superseded file, exactly like the marts' per-file partials, so the rows present are always
exactly the committed, current files: a report never sees half a batch and reads a few
hundred rows, on every storage backend. These grains stay small (people x products x days),
so keeping them costs next to nothing per batch.

Per-customer figures are the exception: customer x day is about as large as the sales
themselves, so storing it would double the warehouse writes of every batch. The daily
report reads them at report time from the lake objects of exactly the files that carry the
day (reports/day.py): one day's data, never a month's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete

from retail_etl.engines import duckdb_engine
from retail_etl.warehouse import Warehouse
from retail_etl.warehouse.schema import (
    DAILY_PARTIALS,
    daily_product_partial,
    daily_sales_person_partial,
)

_SUMS = "SUM(total_cost) AS total_sales, SUM(quantity) AS items, COUNT(*) AS sales_rows"


@dataclass(frozen=True)
class DailyAggregates:
    sales_person: list[dict[str, Any]] = field(default_factory=list)
    product: list[dict[str, Any]] = field(default_factory=list)

    def of_files(self, ledger_ids: set[int]) -> DailyAggregates:
        return DailyAggregates(
            [row for row in self.sales_person if row["ledger_id"] in ledger_ids],
            [row for row in self.product if row["ledger_id"] in ledger_ids],
        )


def product_key(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def compute(rows_dir: Path) -> DailyAggregates:
    """Sum the batch's valid rows (rows_dir/kind=valid/...) per file and day."""
    valid = rows_dir / "kind=valid"
    if not any(valid.glob("**/*.parquet")):
        return DailyAggregates()
    path = str(valid / "**" / "*.parquet").replace("'", "''")
    con = duckdb_engine.connect(threads=2)
    try:
        con.execute(
            "CREATE TEMP VIEW v AS SELECT CAST(_ledger AS BIGINT) AS ledger_id, "
            "CAST(store_id AS BIGINT) AS store_id, sales_date, sales_person_id, "
            "product_name, total_cost, quantity "
            f"FROM read_parquet('{path}', hive_partitioning = true)"
        )

        def rows(keys: str) -> list[dict[str, Any]]:
            result = con.execute(f"SELECT {keys}, {_SUMS} FROM v GROUP BY {keys} ORDER BY {keys}")
            names = [d[0] for d in result.description]
            return [dict(zip(names, r, strict=True)) for r in result.fetchall()]

        sales_person = rows("ledger_id, sales_date, store_id, sales_person_id")
        product = rows("ledger_id, sales_date, product_name")
    finally:
        con.close()
    for row in product:
        row["product_key"] = product_key(row["product_name"])
    return DailyAggregates(sales_person, product)


def apply(
    warehouse: Warehouse,
    conn: Connection,
    aggregates: DailyAggregates,
    superseded: Sequence[int],
    batch_ids: Sequence[int],
) -> None:
    """Inside the batch's transaction: drop superseded files' sums (and any of this batch's,
    so a retried commit cannot count twice), then add this batch's."""
    gone = list(superseded) + list(batch_ids)
    for table in DAILY_PARTIALS:
        for start in range(0, len(gone), 500):
            conn.execute(delete(table).where(table.c.ledger_id.in_(gone[start : start + 500])))
    warehouse.insert_many(conn, daily_sales_person_partial, aggregates.sales_person)
    warehouse.insert_many(conn, daily_product_partial, aggregates.product)
