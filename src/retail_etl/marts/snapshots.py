"""Mart snapshots in the lake (SPEC section 7): each month's rows of both marts as Parquet,
rewritten whenever a batch changes that month."""

from __future__ import annotations

import io
from collections.abc import Iterable
from datetime import date

import pyarrow.parquet as pq
from sqlalchemy import select

from retail_etl.storage import ObjectStore
from retail_etl.warehouse import Warehouse
from retail_etl.warehouse.schema import customers_data_mart, sales_team_data_mart

SNAPSHOT_BATCH_ROWS = 100_000  # mart rows read, and written as a row group, at a time
SNAPSHOT_READERS = 2  # MySQL: connections reading a month's customer rows at once


def write_snapshots(
    store: ObjectStore, warehouse: Warehouse, months: Iterable[str], lake_prefix: str
) -> int:
    """Rewrite the snapshot of each month (a month without rows loses its snapshot);
    returns how many objects were written."""
    written = 0
    for month in sorted(months):
        first_day = date.fromisoformat(f"{month}-01")
        targets = (
            (
                customers_data_mart,
                customers_data_mart.c.sales_date_month == first_day,
                f"{lake_prefix}customers_data_mart/sales_date_month={first_day.isoformat()}/"
                "data.parquet",
            ),
            (
                sales_team_data_mart,
                sales_team_data_mart.c.sales_month == month,
                f"{lake_prefix}sales_team_data_mart/sales_month={month}/data.parquet",
            ),
        )
        for table, where, key in targets:
            buffer = io.BytesIO()
            writer: pq.ParquetWriter | None = None
            # a month over a million customers: its rows a batch at a time, one row group
            # each, rather than all of them as Python objects
            statement = select(table).where(where)
            if table is customers_data_mart:
                # a customer has one row a month: the readers share the customers out, each
                # paging by customer id (MySQL); SQLite gives the rows as its month index
                # holds them, unsorted (sorting a million rows there took longer than
                # reading them)
                batches = warehouse.read_batches(
                    statement, SNAPSHOT_BATCH_ROWS, table.c.customer_id, SNAPSHOT_READERS
                )
            else:  # a few thousand rows
                batches = warehouse.read_batches(
                    statement.order_by(*table.primary_key.columns), SNAPSHOT_BATCH_ROWS, None
                )
            for rows in batches:
                writer = writer or pq.ParquetWriter(buffer, rows.schema)
                writer.write_table(rows)
            if writer is None:
                store.delete(key)
                continue
            writer.close()
            store.put_bytes(key, buffer.getvalue())
            written += 1
    return written
