"""The lake's share of a day, next to the CSV floor (DuckDB count + sum over the same files, in
this process): how long DuckDB takes to write the lake SPEC section 7 asks for when nothing is
checked, against the DuckDB engine doing the whole job. It answers whether "within 3.5x of the
floor" is reachable with DuckDB writing the Parquet.

Each step runs in this process, one after another, on the same files:

- floor: `count(*)`, `sum(total_cost)`;
- parquet_copy: the CSVs with the types DuckDB detects, into Parquet, one folder per file:
  the rows in Parquet and nothing else;
- lake_floor: the CSVs with the mandatory columns' types declared (DuckDB's own casts, which
  accept `1_000`, `1e3` and round `4.805`: nothing the row rules require is checked), joined
  with the four lookups as the engine registers them, written partitioned by month, store and
  file with the lake's columns: the least any DuckDB job writing this lake does;
- engine: the DuckDB engine's `process` (row rules, lake, rejected rows, mart contributions),
  without the download, checksum, validation and warehouse around it.

Usage: python bench/lake_floor.py BENCH_WORKDIR [--repeats N]   (a `retail-etl bench`
--workdir: its csv/ holds the day, its dims/ the dimension tables). Each step runs N times
(default 2), its best time counts; the files are read once before, so that every step finds
them in the page cache. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq

from retail_etl.config import EngineSettings, RulesSettings
from retail_etl.engines.base import (
    LAKE_COLUMNS,
    MANDATORY_COLUMNS,
    BatchFile,
    Dimensions,
    RowLimits,
)
from retail_etl.engines.dimensions import dimensions_of
from retail_etl.engines.duckdb_engine import DuckDBEngine, connect
from retail_etl.tools.bench import FLOOR_SQL

DECLARED_TYPES = {
    "customer_id": "BIGINT",
    "store_id": "BIGINT",
    "product_name": "VARCHAR",
    "sales_date": "DATE",
    "sales_person_id": "BIGINT",
    "price": "DECIMAL(18, 2)",
    "quantity": "BIGINT",
    "total_cost": "DECIMAL(18, 2)",
}

# The lake's columns from typed rows t and the engine's lookups; no row rule is applied.
# {hint}: a join hint; {month}: the sales date as YYYY-MM in the engine's dialect.
LAKE_SELECT_TEMPLATE = """
SELECT {hint} {month} AS sales_month, t.store_id, t.ledger_id AS _ledger,
       t.customer_id, trim(t.product_name) AS product_name, t.sales_date, t.sales_person_id,
       t.price, t.quantity, t.total_cost, CAST(NULL AS STRING) AS additional_column,
       c.customer_full_name, c.customer_address, c.customer_phone_number,
       s.store_address, s.store_manager_name, sp.sales_person_full_name, p.product_id,
       f.file_name AS source_file, t.ledger_id, CAST(1 AS BIGINT) AS run_id
FROM typed_rows t
JOIN dim_customer c ON c.customer_id = t.customer_id
JOIN dim_store s ON s.store_id = t.store_id
JOIN dim_sales_team sp ON sp.sales_person_id = t.sales_person_id
LEFT JOIN dim_product p ON p.product_name = trim(t.product_name)
JOIN batch_files f ON f.ledger_id = t.ledger_id
"""
LAKE_SELECT = LAKE_SELECT_TEMPLATE.format(hint="", month="strftime(t.sales_date, '%Y-%m')")


def _best(repeats: int, action: Callable[[], object], reset: Callable[[], object]) -> float:
    """The shortest of `repeats` runs of action, reset before each."""
    times = []
    for _ in range(repeats):
        reset()
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def _typed_rows(batch: list[BatchFile]) -> str:
    """Every file read with the declared types (the files have the mandatory header)."""
    columns = ", ".join(f"'{name}': '{sql_type}'" for name, sql_type in DECLARED_TYPES.items())
    return " UNION ALL ".join(
        f"SELECT CAST({item.ledger_id} AS BIGINT) AS ledger_id, * FROM read_csv("
        f"'{item.local_path}', header = true, auto_detect = false, delim = ',', "
        f"quote = '\"', escape = '\"', columns = {{{columns}}})"
        for item in batch
    )


def lake_schema(folder: Path) -> tuple[int, list[str]]:
    """Rows and column names of a lake written under folder (hive partitions left out)."""
    files = sorted(folder.rglob("*.parquet"))
    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in files)
    return rows, pq.ParquetFile(files[0]).schema_arrow.names if files else []


def lake_summary(
    csvs: list[Path], repeats: int, floor_rows: int, engine_rows: int
) -> dict[str, object]:
    """What a floor script measured on: the day's files, its turns, the rows each lake holds."""
    return {
        "csv_files": len(csvs),
        "csv_mb": round(sum(path.stat().st_size for path in csvs) / 1e6, 1),
        "repeats": repeats,
        "lake_rows_floor": floor_rows,
        "lake_rows_engine": engine_rows,
    }


def bench_dimensions(workdir: Path) -> Dimensions:
    """The engines' lookups from the dimension tables a `retail-etl bench` workdir exported."""
    return dimensions_of(
        **{
            argument: pq.read_table(workdir / "dims" / f"{table}.parquet")
            for argument, table in (
                ("customers", "customer"),
                ("stores", "store"),
                ("team", "sales_team"),
                ("products", "product"),
            )
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path, help="a `retail-etl bench` --workdir")
    parser.add_argument("--repeats", type=int, default=2, help="runs per step (best counts)")
    args = parser.parse_args()
    workdir, repeats = args.workdir.resolve(), max(1, args.repeats)
    csvs = sorted((workdir / "csv").rglob("*.csv"))
    if not csvs:
        sys.exit(f"no CSV files under {workdir}/csv: run `retail-etl bench` there first")
    dims = bench_dimensions(workdir)
    batch = [
        BatchFile(index + 1, path.name, path, MANDATORY_COLUMNS) for index, path in enumerate(csvs)
    ]
    paths = [str(path) for path in csvs]
    with tempfile.TemporaryDirectory(dir=workdir) as scratch:
        out = Path(scratch)

        def clear(name: str) -> Callable[[], None]:
            return lambda: shutil.rmtree(out / name, ignore_errors=True)

        plain = connect(preserve_insertion_order=False)
        plain.execute(FLOOR_SQL, [paths]).fetchone()  # the files into the page cache
        floor = _best(repeats, lambda: plain.execute(FLOOR_SQL, [paths]).fetchone(), list)
        parquet_copy = _best(
            repeats,
            lambda: plain.execute(
                f"COPY (FROM read_csv($1, filename = true)) TO '{out / 'copy'}' "
                "(FORMAT parquet, PARTITION_BY (filename), COMPRESSION snappy)",
                [paths],
            ),
            clear("copy"),
        )
        plain.close()
        shutil.rmtree(out / "copy")

        settings = EngineSettings(work_dir=str(out / "work"))
        engine = DuckDBEngine(settings)
        engine.register(batch, dims)
        engine.con.execute(f"CREATE TEMP VIEW typed_rows AS {_typed_rows(batch)}")
        lake_floor = _best(
            repeats,
            lambda: engine.con.execute(
                f"COPY ({LAKE_SELECT}) TO '{out / 'lake'}' (FORMAT parquet, "
                "PARTITION_BY (sales_month, store_id, _ledger), COMPRESSION snappy)"
            ),
            clear("lake"),
        )
        engine.close()
        floor_rows, floor_columns = lake_schema(out / "lake")
        shutil.rmtree(out / "lake")

        def process() -> None:
            fresh = DuckDBEngine(settings)  # a new engine, as each run makes
            fresh.process(
                batch, dims, RowLimits.of(RulesSettings(), date.today()), 1, out / "engine"
            )
            fresh.close()

        engine_s = _best(repeats, process, clear("engine"))
        engine_rows, engine_columns = lake_schema(out / "engine" / "rows" / "kind=valid")
    if floor_columns != list(LAKE_COLUMNS) or engine_columns != floor_columns:
        sys.exit(f"lake columns differ: floor {floor_columns}, engine {engine_columns}")
    print(
        json.dumps(
            {
                **lake_summary(csvs, repeats, floor_rows, engine_rows),
                "floor_s": round(floor, 3),
                "parquet_copy_s": round(parquet_copy, 3),
                "parquet_copy_x_floor": round(parquet_copy / floor, 2),
                "lake_floor_s": round(lake_floor, 3),
                "lake_floor_x_floor": round(lake_floor / floor, 2),
                "engine_s": round(engine_s, 3),
                "engine_x_floor": round(engine_s / floor, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
