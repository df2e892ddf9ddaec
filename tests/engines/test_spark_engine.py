"""The Spark engine gives what the DuckDB engine gives: the same landed files through both leave
the same ledger, rejected rows, marts (to the cent) and lake rows; locally and on a Spark
standalone cluster. Spark tests are few and share one SparkSession (2 cores, other suites)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import HEADER, Env, make_env, need
from helpers import customer_mart_rows, keys, ledger, object_bytes, team_mart
from quality_cases import KNOWN_BAD, KNOWN_BAD_RULES, dry_run_then_run, land_a_night
from spark_support import LOCAL_ENGINE, QUICK_JVM, spark_missing, standalone_cluster

import retail_etl
from retail_etl.engines import LAKE_COLUMNS

pytestmark = pytest.mark.slow

BOM = "\ufeff"

# store1: every kind of rejected row, quoted commas and line breaks, malformed lines.
STORE1_ROWS = [
    "1,1,Whole Milk 1L,2024-03-30,2,1.19,2,2.38",
    '2,1,"Dish Soap, Lemon 1L",2024-03-31,3,2.99,1,2.99',
    '3,1,"Gift box\nwith a card",2024-04-01,2,10.00,1,10.00',  # unknown product: kept
    "4,1,Whole Milk 1L,2024-03-30,2,1.19,3,3.57",
    ",1,Milk,2024-03-30,2,1.19,2,2.38",
    "x,1,Milk,2024-03-30,2,1.19,2,2.38",
    '"12\n",1,Milk,2024-03-30,2,1.19,2,2.38',
    "1,1,Milk,2024-02-30,2,1.19,2,2.38",
    "1,1,Milk,30/03/2024,2,1.19,2,2.38",
    "1,1,Milk,2024-03-30,2,abc,2,2.38",
    "1,1,Milk,2024-03-30,2,1.195,2,2.38",
    "1,1,Milk,2024-03-30,2,1.19,0,2.38",
    "1,1,Milk,2024-03-30,2,1.19,2.0,2.38",
    "1,1,Milk,2024-03-30,2,-1.19,2,2.38",
    "1,1,Milk,2024-03-30,2,1.19,2,-2.38",
    "424242,1,Milk,2024-03-30,2,1.19,2,2.38",
    "1,99,Milk,2024-03-30,2,1.19,2,2.38",
    "1,1,Milk,2024-03-30,77,1.19,2,2.38",
    "1,1,,2024-03-30,2,1.19,2,2.38",
    ",,,,,,,",
    "5,1,Milk",  # malformed: 3 fields
    "5,1,Milk,2024-03-30,2,1.19,2,2.38,surplus",  # malformed: 9 fields
    "   ",  # malformed: 1 field
    "6,1,Bananas 1kg,2024-03-30,3,1.39,1,1.39",
]
STORE1 = "\n".join([HEADER, *STORE1_ROWS]) + "\n\n"  # a trailing blank line

# store2: gzip, BOM, CRLF, columns reordered, three extra columns (11 in all).
STORE2_HEADER = (
    "note,store_id,customer_id,product_name,sales_date,sales_person_id,"
    "price,quantity,total_cost,payment,channel"
)
STORE2_ROWS = [
    '"hello, world",2,5,Bananas 1kg,2024-03-30,4,1.39,2,2.78,card,web',
    ",2,6,Green Tea (40 bags),2024-03-31,5,3.10,1,3.10,,",
    '"say ""hi""",2,7,Ground Coffee 250g,2024-03-30,10,5.60,1,5.60,cash,shop',
    "x,2,8,Milk,2024-03-30,4,1.19,0,0.00,cash,shop",
    "short,2,9",  # malformed: 3 of 11 fields
    '"unclosed,2,10,Milk,2024-03-30,4,1.19,1,1.19,card,web',  # malformed: quote never closed
]
STORE2 = gzip.compress((BOM + "\r\n".join([STORE2_HEADER, *STORE2_ROWS]) + "\r\n").encode())

# store3/4: another column order, upper-case extension, a tie for the incentive, odd decimals.
STORE34 = (
    "\n".join(
        [
            "sales_date,customer_id,store_id,sales_person_id,product_name,quantity,price,total_cost",
            "2024-04-01,10,3,6,Wholemeal Bread,1,10.50,10.50",
            "2024-04-01,11,3,7,Wholemeal Bread,1,10.50,10.50",
            "2024-04-02,12,4,8,Cheddar Cheese 400g,2,4.80,9.60",
            "2024-03-31,13,4,9,Dark Chocolate 70% 100g,1,2.25,2.25",
            "2024-04-02, 14 ,4,8,Bananas 1kg,1,1.39,1.39",
            "2024-04-03,15,4,9,Bananas 1kg,1,.50,.50",
            "2024-04-03,16,4,9,Bananas 1kg,2,5.,10.",
        ]
    )
    + "\n"
)

# Run 2: a correction of store1, a byte-identical copy of store2, a new day.
STORE1_CORRECTED = "\n".join(
    [HEADER, STORE1_ROWS[0], STORE1_ROWS[3], "7,1,Tea,2024-03-30,2,3.10,1,3.10"]
)
DAY2 = "\n".join([HEADER, "8,2,Whole Milk 1L,2024-04-02,10,1.19,1,1.19"]) + "\n"

RUN1 = {
    "2024-03-30/store1.csv": STORE1,
    "2024-03-30/store2.csv.gz": STORE2,
    "2024-04-01/store34.CSV": STORE34,
    "2024-04-01/header_only.csv": HEADER + "\n",
    "2024-04-01/readme.txt": "not sales data",
    "2024-04-01/broken.csv": "customer_id,store_id\n1,1\n",
}
RUN2 = {
    "2024-03-30/store1.csv": STORE1_CORRECTED,
    "2024-03-30/store2_copy.csv.gz": STORE2,
    "2024-04-02/store1.csv": DAY2,
}


@pytest.fixture(scope="module", autouse=True)
def _spark_session() -> Iterator[None]:
    """Every Spark test of this module shares one session; it is stopped afterwards, so the
    memory goes back to the other suites."""
    need(spark_missing() is None, spark_missing() or "")
    yield
    from retail_etl.engines.spark_engine import stop_session

    stop_session()


def _land(env: Env, files: dict[str, str | bytes]) -> None:
    for name, data in files.items():
        env.land(name, data)


def rejected_files(env: Env, tmp_path: Path) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Every rejected-rows CSV: its header and its records (sorted: engines write in any order)."""
    prefix = env.settings.storage.error_prefix + "rejected/"
    found = {}
    for key in keys(env, prefix):
        header, *records = csv.reader(io.StringIO(object_bytes(env, key, tmp_path).decode()))
        found[key] = (header, sorted(records))
    return found


def lake_tables(env: Env, tmp_path: Path, folder: str) -> tuple[set[str], list[str]]:
    """Parquet under the lake folder: its schemas, and every row (with the partition values of
    its key), sorted."""
    prefix = env.settings.storage.lake_prefix + folder
    schemas, rows = set(), []
    for key in keys(env, prefix):
        local = tmp_path / "part.parquet"
        local.unlink(missing_ok=True)
        env.store.download(key, local)
        table = pq.read_table(local)
        schemas.add(", ".join(f"{f.name}: {f.type}" for f in table.schema))
        parts = key[len(prefix) :].split("/")[:-1]
        for row in table.to_pylist():
            row.pop("updated_at", None)
            rows.append(repr((parts, sorted(row.items()))))
    return schemas, sorted(rows)


def derived_tables(env: Env) -> dict[str, list[str]]:
    """What the warehouse derives from the rows besides the marts (per-day sums, coupons),
    timestamps left out."""
    from sqlalchemy import DateTime, select

    from retail_etl.warehouse import schema

    tables = (
        schema.customer_coupons,
        schema.daily_sales_person_partial,
        schema.daily_product_partial,
    )
    found = {}
    with env.warehouse.begin() as conn:
        for table in tables:
            columns = [c for c in table.columns if not isinstance(c.type, DateTime)]
            found[table.name] = sorted(repr(tuple(r)) for r in conn.execute(select(*columns)))
    return found


def observable(env: Env, tmp_path: Path) -> dict[str, Any]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return {
        "ledger": [
            {
                k: r[k]
                for k in (
                    "file_name",
                    "status",
                    "rows_read",
                    "rows_valid",
                    "rows_rejected",
                    "message",
                    "affected_months",
                )
            }
            for r in ledger(env)
        ],
        "rejected": rejected_files(env, tmp_path),
        # repr: Decimal('2.38') and Decimal('2.380') are equal, but only one is "to the cent"
        "customers": repr(customer_mart_rows(env)),
        "team": repr(sorted(team_mart(env).items())),
        "derived": derived_tables(env),
        "lake": lake_tables(env, tmp_path, "sales/"),
        "customer_snapshots": lake_tables(env, tmp_path, "customers_data_mart/"),
        "team_snapshots": lake_tables(env, tmp_path, "sales_team_data_mart/"),
        "archive": keys(env, env.settings.storage.archive_prefix),
        "landing": keys(env, env.landing),
    }


def summary_counts(summary: Any) -> tuple[int | str, ...]:
    return (
        summary.files_processed,
        summary.files_quarantined,
        summary.files_duplicate,
        summary.files_corrected,
        summary.rows_read,
        summary.rows_valid,
        summary.rows_rejected,
        summary.lake_objects,
        summary.rejected_files,
        repr(summary.rules),
        repr([(f.file_name, f.rules) for f in summary.files]),
        repr(summary.mart_rows_changed),
    )


def run_both(request: pytest.FixtureRequest, tmp_path: Path, spark_engine: dict[str, Any]):
    duck = make_env("embedded", tmp_path / "duckdb", request)
    spark = make_env("embedded", tmp_path / "spark", request).with_settings(engine=spark_engine)
    summaries: dict[str, list[tuple[int | str, ...]]] = {"duckdb": [], "spark": []}
    for files in (RUN1, RUN2):
        for name, env in (("duckdb", duck), ("spark", spark)):
            _land(env, files)
            summary = env.run()
            assert summary.engine == env.settings.engine.name
            summaries[name].append(summary_counts(summary))
    return duck, spark, summaries


def test_spark_and_duckdb_leave_identical_results(request, tmp_path) -> None:
    duck, spark, summaries = run_both(request, tmp_path, LOCAL_ENGINE)
    expected, actual = observable(duck, tmp_path / "d"), observable(spark, tmp_path / "s")

    # The reference (DuckDB) really exercises what we compare.
    outcomes = {r["file_name"]: r for r in expected["ledger"]}
    assert [(r["file_name"], r["status"]) for r in expected["ledger"]] == [
        ("2024-03-30/store1.csv", "I"),
        ("2024-03-30/store2.csv.gz", "I"),
        ("2024-04-01/broken.csv", "E"),
        ("2024-04-01/header_only.csv", "I"),
        ("2024-04-01/readme.txt", "E"),
        ("2024-04-01/store34.CSV", "I"),
        ("2024-03-30/store1.csv", "I"),
        ("2024-03-30/store2_copy.csv.gz", "D"),
        ("2024-04-02/store1.csv", "I"),
    ]
    store1 = expected["ledger"][0]
    assert (store1["rows_read"], store1["rows_valid"], store1["rows_rejected"]) == (24, 5, 19)
    store2 = outcomes["2024-03-30/store2.csv.gz"]
    assert (store2["rows_read"], store2["rows_valid"], store2["rows_rejected"]) == (6, 3, 3)
    run1_store1 = expected["rejected"]["sales_data_error/rejected/1/2024-03-30/store1.csv"]
    reasons = [record[-1] for record in run1_store1[1]]
    for reason in (
        "customer_id is empty",
        "customer_id is not an integer",
        "sales_date is not a valid YYYY-MM-DD date",
        "price is not a number",
        "price has more than 2 decimal places or is too large",
        "quantity is not greater than 0",
        "quantity is not an integer",
        "price is negative",
        "total_cost is negative",
        "customer_id not in customer",
        "store_id not in store",
        "sales_person_id not in sales_team",
        "product_name is empty",
        "malformed CSV line 22: Expected Number of Columns: 8 Found: 3: 5,1,Milk",
        "malformed CSV line 23: Expected Number of Columns: 8 Found: 9: 5,1,Milk,2024-03-30,2,"
        "1.19,2,2.38,surplus",
        "malformed CSV line 24: Expected Number of Columns: 8 Found: 1:    ",
    ):
        assert any(r.startswith(reason) or f"; {reason}" in r for r in reasons), reason
    run1_store2 = expected["rejected"]["sales_data_error/rejected/1/2024-03-30/store2.csv"]
    assert run1_store2[0] == [*STORE2_HEADER.split(","), "reject_reason"]
    assert [r[-1] for r in run1_store2[1]] == [
        "malformed CSV line 6: Expected Number of Columns: 11 Found: 3: short,2,9",
        'malformed CSV line 7: Value with unterminated quote found.: "unclosed,2,10,Milk,'
        "2024-03-30,4,1.19,1,1.19,card,web",
        "quantity is not greater than 0",
    ]
    assert len(expected["lake"][1]) == 3 + 3 + 7 + 1  # store1 corrected, store2, store34, day 2
    # one schema, the lake's columns only (the parity below makes it Spark's too)
    (lake_schema,) = expected["lake"][0]
    assert re.findall(r"(\w+): ", lake_schema) == list(LAKE_COLUMNS)
    for seller in (6, 7):  # tied top sellers of store 3: both get 1% of 10.50, half-up
        assert (
            f"((3, {seller}, '2024-04'), (Decimal('10.50'), Decimal('0.11')))" in expected["team"]
        )

    assert {name: bool(rows) for name, rows in expected["derived"].items()} == {
        "customer_coupons": True,
        "etl_daily_sales_person_partial": True,
        "etl_daily_product_partial": True,
    }

    # ...and Spark leaves exactly the same.
    assert summaries["spark"] == summaries["duckdb"]
    for part in expected:
        assert actual[part] == expected[part], part


def test_rules_gate_and_dry_run_on_spark(request, tmp_path) -> None:
    """Issue 16 on the Spark engine: exact rows per rule, the gate, a dry run that changes
    nothing and predicts the run."""
    env = make_env("embedded", tmp_path, request).with_settings(engine=LOCAL_ENGINE)
    env.land("2024-03-01/a.csv", KNOWN_BAD)
    first = env.run()
    assert first.files[0].rules == KNOWN_BAD_RULES
    land_a_night(env)
    _predicted, actual = dry_run_then_run(env, tmp_path)
    assert {f.file_name: f.status for f in actual.files}["2024-03-03/gated.csv"] == "E"


def test_rows_are_read_once_per_layout_with_broadcast_dimensions(request, tmp_path) -> None:
    """The plan a Spark reviewer expects: one CSV scan per header layout, every dimension
    joined by broadcast (no shuffle of the sales rows), one session for every engine."""
    from retail_etl import sql
    from retail_etl.config import EngineSettings, RulesSettings
    from retail_etl.engines.base import BatchFile, RowLimits
    from retail_etl.engines.dimensions import load_dimensions
    from retail_etl.engines.spark_engine import SparkEngine, Workspace, raw_rows

    env = make_env("embedded", tmp_path / "env", request)
    settings = EngineSettings(work_dir=tmp_path / "work", **LOCAL_ENGINE)
    first, engine = SparkEngine(settings), SparkEngine(settings)
    assert first.spark is engine.spark
    assert engine.spark.conf.get("spark.sql.adaptive.enabled") == "true"
    assert engine.spark.conf.get("spark.sql.execution.arrow.pyspark.enabled") == "true"

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "a.csv").write_text("\n".join([HEADER, STORE1_ROWS[0]]) + "\n")
    (inputs / "b.csv.gz").write_bytes(STORE2)
    batch = [
        BatchFile(1, "a.csv", inputs / "a.csv", tuple(HEADER.split(","))),
        BatchFile(2, "b.csv.gz", inputs / "b.csv.gz", tuple(STORE2_HEADER.split(","))),
    ]
    workspace = Workspace(engine.spark, settings, tmp_path / "out")
    try:
        engine.register(batch, load_dimensions(env.warehouse))
        raw_rows(engine.spark, workspace.stage(batch)).createOrReplaceTempView("raw_rows")
        limits = RowLimits.of(RulesSettings(), date.today())
        rows = engine.spark.sql(
            sql.render("rows", "spark", run_id=1, limits=limits, malformed_lines=True)
        )
        plan = rows._jdf.queryExecution().executedPlan().toString()
        assert rows.count() == 1 + len(STORE2_ROWS)
    finally:
        workspace.remove()
        engine.close()
    assert plan.count("FileScan csv") == 2
    assert plan.count("BroadcastHashJoin") == 5  # customer, store, sales team, product, file
    assert "SortMergeJoin" not in plan
    exchanges = [line for line in plan.splitlines() if "Exchange " in line]
    assert all("BroadcastExchange" in line or "hashpartitioning(name" in line for line in exchanges)


def _toml(sections: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, dict):
                inner = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def test_standalone_cluster_gives_the_same_results(request, tmp_path) -> None:
    """A Spark standalone master and one worker on 127.0.0.1: run 1 through the CLI with
    [engine] name = "spark" and spark_master = the cluster (files staged on spark_work_dir, as
    a cluster without this disk needs); run 2 through spark-submit --master with
    `run --engine spark` over a config saying duckdb and local[1] (the flag and spark-submit's
    master win). Both runs' executors run on the worker, and the outcome is the DuckDB one."""
    import pyspark

    duck = make_env("embedded", tmp_path / "duckdb", request)
    cluster_env = make_env("embedded", tmp_path / "cluster", request)
    settings = cluster_env.settings

    def config(engine: dict[str, Any], name: str) -> Path:
        path = tmp_path / name
        path.write_text(
            _toml(
                {
                    "storage": {"url": settings.storage.url},
                    "warehouse": {"url": settings.warehouse.url.get_secret_value()},
                    "engine": {"name": "spark", "work_dir": str(settings.engine.work_dir)} | engine,
                    "log": {"dir": str(settings.log.dir)},
                }
            )
        )
        return path

    conf = {
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.executor.memory": "512m",
        "spark.cores.max": "1",
        "spark.driver.extraJavaOptions": QUICK_JVM,
        "spark.executor.extraJavaOptions": QUICK_JVM,
    }
    env = {
        **os.environ,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
    summaries = []
    with standalone_cluster(tmp_path / "spark-cluster") as cluster:
        shared = tmp_path / "shared"
        first = config(
            {
                "spark_master": cluster.master_url,
                "spark_work_dir": "file:" + str(shared),
                "spark_conf": conf,
            },
            "cluster.toml",
        )
        second = config({"name": "duckdb", "spark_master": "local[1]"}, "submit.toml")
        spark_submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
        main = Path(retail_etl.__file__).parent / "__main__.py"
        commands = [
            [sys.executable, "-m", "retail_etl", "--config", str(first), "run", "--json"],
            [str(spark_submit), "--master", cluster.master_url]
            + [f"--conf={k}={v}" for k, v in conf.items()]
            + [str(main), "--config", str(second), "run", "--engine", "spark", "--json"],
        ]
        for files, command in zip((RUN1, RUN2), commands, strict=True):
            _land(duck, files)
            _land(cluster_env, files)
            expected = duck.run()
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, done.stderr[-4000:]
            summary = json.loads(done.stdout.strip().splitlines()[-1])
            assert (summary["engine"], summary["outcome"]) == ("spark", "succeeded")
            summaries.append((summary["rows_valid"], summary["rows_rejected"]))
            assert summaries[-1] == (expected.rows_valid, expected.rows_rejected)
        assert not shared.exists() or not any(shared.iterdir())  # staging cleaned up
        applications = sorted(p.name for p in cluster.worker_dir.glob("app-*"))
    assert len(applications) == 2, applications  # both runs' executors ran on the worker
    actual = observable(cluster_env, tmp_path / "c")
    expected_state = observable(duck, tmp_path / "d")
    for part in expected_state:
        assert actual[part] == expected_state[part], part
