"""Per-day sales aggregates, kept for the daily report.

A day is finer than the marts' month grain, so the daily report needs day-grain figures.
Reading the lake for them would mean listing and downloading a whole `sales_month=`
partition through the object store (every store, every day of the month) for one day: on
S3 that is the month's data over the network for each report. Instead the engine sums the
batch's valid rows per source file and day at two small grains -- (store, sales person) and
product -- with the shared SQL (sql/daily_*.sql) in the pass that writes the lake, and they
are written here, in the same warehouse transaction as the marts, and deleted with a
superseded file, exactly like the marts' per-file partials: the rows present are always
exactly the committed, current files, a report never sees half a batch and reads a few
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

import pyarrow as pa
from sqlalchemy import Connection, delete

from retail_etl.warehouse import Warehouse, bulk
from retail_etl.warehouse.schema import (
    DAILY_PARTIALS,
    daily_product_partial,
    daily_sales_person_partial,
)


def product_key(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def apply(
    warehouse: Warehouse,
    conn: Connection,
    sales_person: pa.Table,
    product: pa.Table,
    superseded: Sequence[int],
    batch_ids: Sequence[int],
) -> None:
    """Inside the batch's transaction: drop superseded files' sums (and any of this batch's,
    so a retried commit cannot count twice), then add this batch's (the engine's
    sql/daily_sales_person.sql and sql/daily_product.sql)."""
    gone = list(superseded) + list(batch_ids)
    for table in DAILY_PARTIALS:
        for start in range(0, len(gone), 500):
            conn.execute(delete(table).where(table.c.ledger_id.in_(gone[start : start + 500])))
    names = product["product_name"].to_pylist()
    keyed = product.append_column("product_key", pa.array([product_key(n) for n in names]))
    # the warehouse's bulk path: a day of 5,000 products in 8 files is 40,000 rows
    bulk.load(conn, daily_sales_person_partial, sales_person)
    bulk.load(conn, daily_product_partial, keyed)
