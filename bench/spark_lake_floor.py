"""The Spark engine's lake pass next to the least any Spark job writing this lake does, and
next to textbook Spark: whether "at least 3x textbook Spark" is reachable with Spark writing
the lake SPEC section 7 asks for (issue 14's target over a million customers).

Steps, on the same files, taking turns (each step once per turn; the best of each counts):

- floor: Spark's `count(*)` and `sum(total_cost)` over the CSVs with the mandatory columns'
  types declared: the parse and nothing else;
- lake_floor: the same typed read (Spark's own casts: nothing the row rules require is
  checked), broadcast-joined with the four lookups as the engine registers them, written as
  snappy Parquet partitioned by month, store and file with the lake's columns;
- lake_flat: the same rows written unpartitioned: what the partitioning costs;
- engine: the Spark engine's `process` (row rules, lake, rejected rows, mart contributions,
  daily sums), without the download, validation and warehouse around it;
- textbook: `retail_etl/tools/bench/textbook_spark.py` in a process of its own, as
  `retail-etl bench` runs it (its session start included).

Each step runs in a process of its own (a JVM of its own: run after run in one 1 GB
driver, the engine's second pass over a million customers ran out of heap), with the engine's
Spark settings; the session's start and the lookups read from Parquet are not timed, except
textbook Spark's own start. Usage: python bench/spark_lake_floor.py BENCH_WORKDIR [--repeats
N]  (a `retail-etl bench` --workdir: its csv/ holds the day, its dims/ the dimension tables).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from functools import reduce
from pathlib import Path

from lake_floor import (  # beside this script
    DECLARED_TYPES,
    LAKE_SELECT_TEMPLATE,
    bench_dimensions,
    lake_schema,
    lake_summary,
)
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from retail_etl.config import EngineSettings, RulesSettings
from retail_etl.engines.base import LAKE_COLUMNS, MANDATORY_COLUMNS, BatchFile, RowLimits
from retail_etl.engines.spark_engine import SparkEngine
from retail_etl.tools.bench.variants import TEXTBOOK_SCRIPT

# the DuckDB floor's declared types as a Spark DDL schema (Spark's text type is STRING)
DECLARED_SCHEMA = ", ".join(
    f"{name} {'STRING' if sql_type == 'VARCHAR' else sql_type}"
    for name, sql_type in DECLARED_TYPES.items()
)

LAKE_SELECT = LAKE_SELECT_TEMPLATE.format(
    hint="/*+ BROADCAST(c, s, sp, p, f) */", month="date_format(t.sales_date, 'yyyy-MM')"
)


def _typed_rows(spark: SparkSession, batch: list[BatchFile]) -> DataFrame:
    """Every file read with the declared types, its ledger id beside each row."""
    reader = spark.read.option("header", "true").schema(DECLARED_SCHEMA)
    return reduce(
        DataFrame.unionByName,
        [
            reader.csv(str(item.local_path)).withColumn("ledger_id", F.lit(item.ledger_id))
            for item in batch
        ],
    )


def _step(name: str, workdir: Path, out: Path) -> float:
    """Seconds one step takes in this process (its SparkSession started before the clock)."""
    csvs = sorted((workdir / "csv").rglob("*.csv"))
    if name == "textbook":
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, str(TEXTBOOK_SCRIPT), str(workdir / "dims"), str(out / "textbook")]
            + [str(path) for path in csvs],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - started
    dims = bench_dimensions(workdir)
    batch = [
        BatchFile(index + 1, path.name, path, MANDATORY_COLUMNS) for index, path in enumerate(csvs)
    ]
    engine = SparkEngine(EngineSettings(name="spark", work_dir=out / "work"))
    spark = engine.spark
    started = time.perf_counter()
    if name == "engine":  # registers the lookups itself
        engine.process(batch, dims, RowLimits.of(RulesSettings(), date.today()), 1, out / name)
    else:
        engine.register(batch, dims)
        typed = _typed_rows(spark, batch)
        if name == "floor":
            typed.agg(F.count("*"), F.sum("total_cost")).collect()
        else:
            typed.createOrReplaceTempView("typed_rows")
            writer = spark.sql(LAKE_SELECT).write.mode("overwrite")
            if name == "lake_floor":
                writer = writer.partitionBy("sales_month", "store_id", "_ledger")
            writer.parquet(str(out / name))
    return time.perf_counter() - started


STEPS = ("floor", "lake_floor", "lake_flat", "engine", "textbook")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path, help="a `retail-etl bench` --workdir")
    parser.add_argument("--repeats", type=int, default=2, help="turns (best of each counts)")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # one, in this process
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir, repeats = args.workdir.resolve(), max(1, args.repeats)
    if args.step:
        print(json.dumps(_step(args.step, workdir, args.out)))
        return
    csvs = sorted((workdir / "csv").rglob("*.csv"))
    if not csvs:
        sys.exit(f"no CSV files under {workdir}/csv: run `retail-etl bench` there first")
    seconds: dict[str, list[float]] = {name: [] for name in STEPS}
    with tempfile.TemporaryDirectory(dir=workdir) as scratch:
        out = Path(scratch)
        for turn in range(repeats):
            for name in STEPS if turn % 2 == 0 else reversed(STEPS):
                shutil.rmtree(out / name, ignore_errors=True)
                shutil.rmtree(out / "work", ignore_errors=True)
                step = [sys.executable, __file__, str(workdir), "--step", name, "--out", str(out)]
                reply = subprocess.run(step, check=True, capture_output=True, text=True)
                seconds[name].append(json.loads(reply.stdout.strip().splitlines()[-1]))
                print(
                    f"[spark floor] turn {turn + 1}: {name} {seconds[name][-1]:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
        floor_rows, floor_columns = lake_schema(out / "lake_floor")
        engine_rows, engine_columns = lake_schema(out / "engine" / "rows" / "kind=valid")
    if floor_columns != list(LAKE_COLUMNS) or engine_columns != floor_columns:
        sys.exit(f"lake columns differ: floor {floor_columns}, engine {engine_columns}")
    best = {name: min(times) for name, times in seconds.items()}
    print(
        json.dumps(
            {
                **lake_summary(csvs, repeats, floor_rows, engine_rows),
                **{f"{name}_s": round(value, 3) for name, value in best.items()},
                "textbook_x_lake_floor": round(best["textbook"] / best["lake_floor"], 2),
                "textbook_x_engine": round(best["textbook"] / best["engine"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
