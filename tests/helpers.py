"""Readers of the observable state: what a user of the warehouse and bucket would see."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from sqlalchemy import select

from retail_etl.warehouse.schema import (
    customers_data_mart,
    product_staging_table,
    sales_team_data_mart,
)


def customer_mart(env: Any) -> dict[tuple[int, str], Decimal]:
    with env.warehouse.begin() as conn:
        rows = conn.execute(select(customers_data_mart)).fetchall()
    return {(r.customer_id, r.sales_date_month.isoformat()): r.total_sales for r in rows}


def customer_mart_rows(env: Any) -> list[dict[str, Any]]:
    with env.warehouse.begin() as conn:
        return [
            {k: v for k, v in r._mapping.items() if k != "updated_at"}
            for r in conn.execute(
                select(customers_data_mart).order_by(
                    customers_data_mart.c.customer_id, customers_data_mart.c.sales_date_month
                )
            )
        ]


def team_mart(env: Any) -> dict[tuple[int, int, str], tuple[Decimal, Decimal]]:
    with env.warehouse.begin() as conn:
        rows = conn.execute(select(sales_team_data_mart)).fetchall()
    return {
        (r.store_id, r.sales_person_id, r.sales_month): (r.total_sales, r.incentive) for r in rows
    }


def ledger(env: Any) -> list[dict[str, Any]]:
    with env.warehouse.begin() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                select(product_staging_table).order_by(product_staging_table.c.id)
            )
        ]


def ledger_outcomes(env: Any) -> list[tuple[str, str, int | None, int | None]]:
    return sorted(
        (r["file_name"], r["status"], r["rows_valid"], r["rows_rejected"]) for r in ledger(env)
    )


def keys(env: Any, prefix: str) -> list[str]:
    return [info.key for info in env.store.list(prefix)]


def object_bytes(env: Any, key: str, tmp_path: Any) -> bytes:
    dest = tmp_path / ("obj-" + hashlib.sha256(key.encode()).hexdigest())
    dest.unlink(missing_ok=True)
    env.store.download(key, dest)
    return dest.read_bytes()


def lake_columns(env: Any, tmp_path: Any) -> set[tuple[str, ...]]:
    """The column names of each sales object in the lake."""
    prefix = env.settings.storage.lake_prefix + "sales/"
    found = set()
    for key in keys(env, prefix):
        dest = tmp_path / "lake-part.parquet"
        dest.unlink(missing_ok=True)
        env.store.download(key, dest)
        found.add(tuple(pq.read_schema(dest).names))
    return found


def lake_rows(env: Any, tmp_path: Any) -> Counter[tuple[Any, ...]]:
    """Every sales row in the lake (the partition values from the path included)."""
    counter: Counter[tuple[Any, ...]] = Counter()
    prefix = env.settings.storage.lake_prefix + "sales/"
    for key in keys(env, prefix):
        dest = tmp_path / "lake-part.parquet"
        dest.unlink(missing_ok=True)
        env.store.download(key, dest)
        parts = dict(p.split("=", 1) for p in key[len(prefix) :].split("/")[:-1])
        for row in pq.read_table(dest).to_pylist():
            counter[
                (
                    parts["sales_month"],
                    int(parts["store_id"]),
                    row["customer_id"],
                    row["product_name"],
                    row["sales_date"],
                    row["sales_person_id"],
                    row["price"],
                    row["quantity"],
                    row["total_cost"],
                    row["additional_column"],
                    row["source_file"],
                )
            ] += 1
    return counter


def state(env: Any, tmp_path: Any) -> dict[str, Any]:
    """Everything a run leaves behind that must not depend on how it got there."""
    return {
        "customers": customer_mart_rows(env),
        "team": team_mart(env),
        "ledger": ledger_outcomes(env),
        "lake": lake_rows(env, tmp_path),
        "landing": keys(env, env.landing),
    }


def cli(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`retail-etl ARGS` as a user runs it: its own process, in cwd."""
    return subprocess.run(
        [sys.executable, "-m", "retail_etl", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
