"""The job as a skilled engineer writes it by hand instead of adopting retail-etl: the variant
`retail-etl bench` measures the tool against ("handwritten-duckdb").

One DuckDB process does the happy path, nothing else:

* the day's CSVs read with declared types (`read_csv(types = ...)`: DuckDB's own casts);
* joined to the dimensions (customer, store, sales_team, product by name) read from the
  warehouse;
* the Parquet lake written partitioned by `sales_month` and `store_id` (SPEC section 7's
  layout), read back for the marts;
* `customers_data_mart` (customer x month: full_name, address, phone, total_sales) and
  `sales_team_data_mart` (store x sales person x month: total_sales, and a 1% incentive,
  rounded half-up to cents, for every top seller of a store and month) written into the
  warehouse through its bulk path: SQLite by executemany of plain tuples from Arrow batches
  in one transaction, MySQL/MariaDB by LOAD DATA LOCAL INFILE of a CSV DuckDB writes.

No validation, no quarantine, no ledger, no exactly-once, no corrections, no coupons, no daily
sums, no snapshots: marts are created if missing and the day's rows inserted. On S3 (DuckDB's
httpfs extension cannot be installed offline) the files are downloaded with boto3 first and
the lake uploaded afterwards; both are part of the job's time.

It imports nothing from retail_etl: it is what someone writes without the tool.

Usage:
  python handwritten_duckdb.py --warehouse sqlite:///PATH --lake DIR CSV [CSV...]
  python handwritten_duckdb.py --warehouse mysql://USER[:PASSWORD]@HOST:PORT/DB \\
      --s3-endpoint URL --s3-bucket BUCKET [--s3-prefix sales_data/] --work DIR

Prints one JSON line: the mart totals, the rows written and the seconds per step.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import duckdb
import pyarrow as pa

TYPES = {
    "customer_id": "BIGINT",
    "store_id": "BIGINT",
    "product_name": "VARCHAR",
    "sales_date": "DATE",
    "sales_person_id": "BIGINT",
    "price": "DECIMAL(18,2)",
    "quantity": "BIGINT",
    "total_cost": "DECIMAL(18,2)",
}
DIMENSIONS = {
    "customer": "customer_id, first_name, last_name, address, phone_number",
    "store": "id, address, store_manager_name",
    "sales_team": "id, first_name, last_name",
    "product": "id, name",
}
INCENTIVE_RATE = "0.01"

LAKE_SQL = """
COPY (
    SELECT s.customer_id, s.store_id, s.product_name, s.sales_date, s.sales_person_id,
           s.price, s.quantity, s.total_cost,
           c.first_name || ' ' || c.last_name AS customer_full_name,
           c.address AS customer_address, c.phone_number AS customer_phone_number,
           st.address AS store_address, st.store_manager_name,
           t.first_name || ' ' || t.last_name AS sales_person_full_name,
           p.id AS product_id,
           strftime(s.sales_date, '%Y-%m') AS sales_month
    FROM read_csv({files}, header = true, types = {types}) AS s
    JOIN customer AS c USING (customer_id)
    JOIN store AS st ON st.id = s.store_id
    JOIN sales_team AS t ON t.id = s.sales_person_id
    LEFT JOIN product AS p ON p.name = s.product_name
) TO {lake} (FORMAT parquet, PARTITION_BY (sales_month, store_id), OVERWRITE_OR_IGNORE)
"""

CUSTOMERS_MART_SQL = """
WITH per_month AS (
    SELECT customer_id, date_trunc('month', sales_date)::DATE AS sales_date_month,
           sum(total_cost) AS total_sales
    FROM read_parquet({lake}, hive_partitioning = true)
    GROUP BY ALL
)
SELECT m.customer_id, c.first_name || ' ' || c.last_name AS full_name, c.address,
       c.phone_number, m.sales_date_month, m.total_sales::DECIMAL(18,2) AS total_sales
FROM per_month AS m JOIN customer AS c USING (customer_id)
"""

TEAM_MART_SQL = """
WITH per_month AS (
    SELECT store_id::BIGINT AS store_id, sales_person_id, sales_month,
           sum(total_cost) AS total_sales
    FROM read_parquet({lake}, hive_partitioning = true)
    GROUP BY ALL
), ranked AS (
    SELECT *, rank() OVER (PARTITION BY store_id, sales_month ORDER BY total_sales DESC) AS r
    FROM per_month
)
SELECT r.store_id, r.sales_person_id, t.first_name || ' ' || t.last_name AS full_name,
       r.sales_month, r.total_sales::DECIMAL(18,2) AS total_sales,
       CASE WHEN r.r = 1 THEN round(r.total_sales * {rate}, 2) ELSE 0 END::DECIMAL(18,2)
           AS incentive
FROM ranked AS r JOIN sales_team AS t ON t.id = r.sales_person_id
"""

# Rows go in in key order: B-tree inserts at the end of the primary key.
MART_KEYS = {
    "customers_data_mart": "customer_id, sales_date_month",
    "sales_team_data_mart": "store_id, sales_person_id, sales_month",
}
MART_TABLES = {
    "customers_data_mart": (
        "customer_id INTEGER NOT NULL, full_name VARCHAR(201), address VARCHAR(255), "
        "phone_number VARCHAR(20), sales_date_month DATE NOT NULL, "
        "total_sales DECIMAL(18,2) NOT NULL, PRIMARY KEY (customer_id, sales_date_month)"
    ),
    "sales_team_data_mart": (
        "store_id INTEGER NOT NULL, sales_person_id INTEGER NOT NULL, full_name VARCHAR(201), "
        "sales_month CHAR(7) NOT NULL, total_sales DECIMAL(18,2) NOT NULL, "
        "incentive DECIMAL(18,2) NOT NULL, PRIMARY KEY (store_id, sales_person_id, sales_month)"
    ),
}


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 3)


def quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


# --- warehouses -------------------------------------------------------------------------------
class SQLiteWarehouse:
    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path)

    def dimension(self, name: str, columns: str) -> pa.Table:
        cursor = self.conn.execute(f"SELECT {columns} FROM {name}")
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
        return pa.table({n: [row[i] for row in rows] for i, n in enumerate(names)})

    def write_mart(self, con: duckdb.DuckDBPyConnection, table: str, query: str) -> int:
        # sqlite3 binds no Decimal or date: DuckDB hands them over as text, which SQLite's
        # DECIMAL affinity stores as numbers (the tool does the same).
        result = con.sql(
            f"SELECT * REPLACE ({_as_text(table)}) FROM ({query}) ORDER BY {MART_KEYS[table]}"
        ).to_arrow_reader(100_000)
        columns = [field.name for field in result.schema]
        markers = ", ".join("?" * len(columns))
        insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({markers})"
        written = 0
        with self.conn:  # one transaction
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({MART_TABLES[table]})")
            for batch in result:
                values = [column.to_pylist() for column in batch.columns]
                self.conn.executemany(insert, zip(*values, strict=True))
                written += batch.num_rows
        return written

    def totals(self) -> dict[str, str]:
        customer = self.conn.execute("SELECT sum(total_sales) FROM customers_data_mart")
        team = self.conn.execute("SELECT sum(total_sales) FROM sales_team_data_mart")
        return {
            "customer_total": f"{customer.fetchone()[0]:.2f}",
            "team_total": f"{team.fetchone()[0]:.2f}",
        }

    def close(self) -> None:
        self.conn.close()


def _as_text(table: str) -> str:
    if table == "customers_data_mart":
        return "sales_date_month::VARCHAR AS sales_date_month, total_sales::VARCHAR AS total_sales"
    return "total_sales::VARCHAR AS total_sales, incentive::VARCHAR AS incentive"


class MySQLWarehouse:
    def __init__(self, url: str) -> None:
        import pymysql

        parts = urlsplit(url)
        self.conn = pymysql.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            database=parts.path.lstrip("/"),
            charset="utf8mb4",
            local_infile=True,  # this connection only: the bulk path for the marts
            autocommit=False,
        )

    def dimension(self, name: str, columns: str) -> pa.Table:
        with self.conn.cursor() as cursor:
            cursor.execute(f"SELECT {columns} FROM `{name}`")
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        return pa.table({n: [row[i] for row in rows] for i, n in enumerate(names)})

    def write_mart(self, con: duckdb.DuckDBPyConnection, table: str, query: str) -> int:
        with tempfile.TemporaryDirectory(prefix="handwritten-") as tmp:
            path = Path(tmp) / f"{table}.csv"
            ordered = f"SELECT * FROM ({query}) ORDER BY {MART_KEYS[table]}"
            con.execute(f"COPY ({ordered}) TO {quote(str(path))} (HEADER false)")
            columns = con.execute(f"DESCRIBE ({query})").fetchall()
            with self.conn.cursor() as cursor:
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS `{table}` ({MART_TABLES[table]}) "
                    "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
                )
                written = cursor.execute(
                    f"LOAD DATA LOCAL INFILE %s INTO TABLE `{table}` CHARACTER SET utf8mb4 "
                    "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
                    f"LINES TERMINATED BY '\\n' ({', '.join(c[0] for c in columns)})",
                    (str(path),),
                )
            self.conn.commit()
        return int(written)

    def totals(self) -> dict[str, str]:
        with self.conn.cursor() as cursor:
            cursor.execute("SELECT sum(total_sales) FROM customers_data_mart")
            customer = cursor.fetchone()[0]
            cursor.execute("SELECT sum(total_sales) FROM sales_team_data_mart")
            team = cursor.fetchone()[0]
        return {"customer_total": str(customer), "team_total": str(team)}

    def close(self) -> None:
        self.conn.close()


def open_warehouse(url: str) -> SQLiteWarehouse | MySQLWarehouse:
    if url.startswith("sqlite:///"):
        return SQLiteWarehouse(url.removeprefix("sqlite:///"))
    if url.startswith(("mysql://", "mysql+pymysql://", "mariadb://")):
        return MySQLWarehouse(url)
    raise SystemExit(f"unsupported warehouse URL {url!r}")


# --- S3 ---------------------------------------------------------------------------------------
def s3_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=Config(max_pool_connections=16),
    )


def download(client: Any, bucket: str, prefix: str, folder: Path) -> list[str]:
    keys = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", ())
        if item["Key"].lower().endswith(".csv")
    ]
    paths = [folder / f"{index}.csv" for index in range(len(keys))]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k, p: client.download_file(bucket, k, str(p)), keys, paths))
    return [str(p) for p in paths]


def upload(client: Any, folder: Path, bucket: str, prefix: str) -> int:
    files = [p for p in folder.rglob("*.parquet")]
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda p: client.upload_file(
                    str(p), bucket, prefix + p.relative_to(folder).as_posix()
                ),
                files,
            )
        )
    return len(files)


# --- the job ----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warehouse", required=True, help="sqlite:///PATH or mysql://...")
    parser.add_argument("--lake", help="local lake folder (default: WORK/lake)")
    parser.add_argument("--work", default=".", help="scratch folder")
    parser.add_argument("--s3-endpoint", help="S3-compatible endpoint URL (files on S3)")
    parser.add_argument("--s3-bucket", help="bucket holding the day's files and the lake")
    parser.add_argument("--s3-prefix", default="sales_data/", help="where the CSVs are")
    parser.add_argument("--s3-lake-prefix", default="lake/sales/", help="where the lake goes")
    parser.add_argument("csv", nargs="*", help="local CSV files (without --s3-bucket)")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    lake = Path(args.lake) if args.lake else work / "lake"
    timer = Timer()
    client = s3_client(args.s3_endpoint) if args.s3_bucket else None
    files = args.csv
    if client is not None:
        with timer.step("download"):
            (work / "csv").mkdir(exist_ok=True)
            files = download(client, args.s3_bucket, args.s3_prefix, work / "csv")
    if not files:
        raise SystemExit("no CSV files")
    warehouse = open_warehouse(args.warehouse)
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET temp_directory = {quote(str(work / 'duckdb-tmp'))}")
    with timer.step("dimensions"):
        for name, columns in DIMENSIONS.items():
            con.register(name, warehouse.dimension(name, columns))
    with timer.step("lake"):
        types = "{" + ", ".join(f"{quote(k)}: {quote(v)}" for k, v in TYPES.items()) + "}"
        files_sql = "[" + ", ".join(quote(f) for f in files) + "]"
        con.execute(LAKE_SQL.format(lake=quote(str(lake)), files=files_sql, types=types))
    parquet = quote(f"{lake}/**/*.parquet")
    written = {}
    with timer.step("marts"):
        written["customers_data_mart"] = warehouse.write_mart(
            con, "customers_data_mart", CUSTOMERS_MART_SQL.format(lake=parquet)
        )
        written["sales_team_data_mart"] = warehouse.write_mart(
            con,
            "sales_team_data_mart",
            TEAM_MART_SQL.format(lake=parquet, rate=INCENTIVE_RATE),
        )
    if client is not None:
        with timer.step("upload"):
            written["lake_objects"] = upload(client, lake, args.s3_bucket, args.s3_lake_prefix)
    totals = warehouse.totals()
    warehouse.close()
    print(
        json.dumps(
            {
                **totals,
                "warehouse_rows_written": written["customers_data_mart"]
                + written["sales_team_data_mart"],
                "written": written,
                "stage_seconds": timer.seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
