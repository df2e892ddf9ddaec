"""Spark engine: the DuckDB engine's seam and SQL on Apache Spark, local or on a cluster.

One Spark job does the heavy work: a CSV read per header layout (explicit all-text schema by
position, PERMISSIVE with a corrupt-record column), unioned, then the shared rows.sql (dimension
tables broadcast) and one partitioned Parquet write of the lake's files. Rejected rows and the
lines the CSV reader cannot split into the header's columns (kind=malformed) leave a trace in
that write; only the files with traces are read again for their raw values and reasons, so
nothing is dropped. Counts, malformed lines and the mart contributions (shared SQL, GROUP BY)
read back only the Parquet they need and reach the driver as Arrow.

Where Spark's CSV parser (univocity) and DuckDB's disagree on broken input, see the README
("Engines: DuckDB or Spark"): blank lines do not count in Spark's line numbers, a CRLF inside a
quoted value becomes LF, and a stray quote that does not break the column count is kept as text.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import re
import shutil
import threading
import uuid
from collections.abc import Sequence
from functools import reduce
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from py4j.protocol import Py4JError
from pyspark import SparkConf, SparkContext
from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from retail_etl import sql
from retail_etl.config import EngineSettings
from retail_etl.engines.base import (
    AGGREGATES,
    LAKE_COLUMNS,
    MANDATORY_COLUMNS,
    MART_CONTRIBUTIONS,
    REJECTED_COLUMNS,
    BatchFile,
    Dimensions,
    FileCounts,
    Manifest,
    RowLimits,
    layout_parts,
)
from retail_etl.errors import EngineError

CORRUPT = "_corrupt_record"
RECORD = "_record"
PARTITIONS = ["kind", "sales_month", "store_id", "_ledger"]
VIEWS = (
    "raw_rows",
    "batch_files",
    "dim_customer",
    "dim_store",
    "dim_sales_team",
    "dim_product",
    "valid_rows",
)
MALFORMED_LINE = r"^malformed CSV line ([0-9]+):"
SHUFFLE_BYTES = 64 * 1024 * 1024  # input bytes per shuffle partition (AQE coalesces further)
SPLIT_BYTES = 128 * 1024 * 1024
MAX_FIELDS = 65_536

CSV_OPTIONS = {
    "header": "true",  # validated already; skipped, columns are taken by position
    "enforceSchema": "true",
    "mode": "PERMISSIVE",
    "columnNameOfCorruptRecord": CORRUPT,
    "multiLine": "true",  # quoted line breaks (a file is then one task: not split)
    "quote": '"',
    "escape": '"',  # RFC 4180: "" inside a quoted value
    "encoding": "UTF-8",
    "nullValue": "",
    # More fields than this in one line fails the read (instead of making it malformed); the
    # parser sizes buffers to it per task, so it cannot be made limitless for free.
    "maxColumns": str(MAX_FIELDS),
}

# Defaults for every session; [engine] spark_conf (and spark-submit --conf) win.
BASE_CONF = {
    "spark.app.name": "retail-etl",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
    "spark.sql.ansi.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.compression.codec": "snappy",  # as the DuckDB engine writes the lake
    # A task (one file) writes few partitions (its store's months): keep a writer open for
    # each instead of sorting the task's rows by partition first (halves the write).
    "spark.sql.maxConcurrentOutputFileWriters": "16",
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    # A batch job wants throughput, not short pauses: the parallel collector instead of G1
    # made the engine 7% faster at 1 GB (BENCHMARKS.md). Setting these options replaces them.
    "spark.driver.extraJavaOptions": "-XX:+UseParallelGC",
    "spark.executor.extraJavaOptions": "-XX:+UseParallelGC",
}

_lock = threading.Lock()
_session: SparkSession | None = None
_session_key: tuple[object, ...] | None = None


def _under_spark_submit() -> bool:
    """Started by spark-submit (or the pyspark shell): the JVM and its settings exist already."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def session_for(settings: EngineSettings) -> SparkSession:
    """The process's one SparkSession, created on first use and reused by every engine instance
    (and run) with the same master and properties; a different configuration replaces it."""
    global _session, _session_key
    key = (settings.spark_master, tuple(sorted(settings.spark_conf.items())))
    with _lock:
        active = SparkContext._active_spark_context
        if _session is not None and _session_key == key and active is _session.sparkContext:
            return _session
        if _session is not None:
            _session.stop()
            _session = None
        builder = SparkSession.builder
        conf = dict(BASE_CONF)
        if _under_spark_submit():
            given = SparkConf()
            conf = {k: v for k, v in conf.items() if not given.contains(k)}
        else:
            builder = builder.master(settings.spark_master)
        conf.update(settings.spark_conf)
        for name, value in conf.items():
            builder = builder.config(name, value)
        _session = builder.getOrCreate()
        _session.sparkContext.setLogLevel("ERROR")
        _session_key = key
        return _session


def stop_session() -> None:
    """Stop the shared session (at exit, or to free a cluster's resources)."""
    global _session, _session_key
    with _lock:
        if _session is not None:
            _session.stop()
        _session, _session_key = None, None


atexit.register(stop_session)


def _glob_escaped(path: str) -> str:
    """Spark expands globs in read paths; ours are literal."""
    return re.sub(r"([\\{}\[\]*?])", r"\\\1", path)


def _spark_error(exc: BaseException) -> EngineError:
    """One line that says what went wrong: for a JVM error, its message, not py4j's "An error
    occurred while calling o223.parquet"."""
    text = str(exc)
    java = getattr(exc, "java_exception", None)
    if java is not None:
        with contextlib.suppress(Py4JError):
            text = str(java.getMessage() or java.toString())
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return EngineError(f"spark: {lines[0] if lines else type(exc).__name__}")


class Workspace:
    """Where Spark reads the batch's files and writes its rows. By default a folder under the
    run's work folder (local[*], or a cluster whose workers share this machine's disk); with
    spark_work_dir, a Hadoop URI every executor can reach (s3a://, hdfs://, a shared mount).
    Each input file is named after its ledger id, which is how rows know their file."""

    def __init__(self, spark: SparkSession, settings: EngineSettings, out_dir: Path) -> None:
        self.spark = spark
        self.local: Path | None = None
        if settings.spark_work_dir:
            self.root = f"{settings.spark_work_dir.rstrip('/')}/batch-{uuid.uuid4().hex}"
        else:
            self.local = (out_dir / "spark").resolve()
            shutil.rmtree(self.local, ignore_errors=True)
            self.root = "file:" + str(self.local)
        self.rows = f"{self.root}/rows"  # pass 1: the lake's files, traces of rejected rows
        self.rejected = f"{self.root}/rejected"  # pass 2: rejected rows and malformed lines
        self.out_dir = out_dir
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        self._path = jvm.org.apache.hadoop.fs.Path
        self._fs = self._path(self.root).getFileSystem(
            spark.sparkContext._jsc.hadoopConfiguration()
        )

    def stage(self, batch: list[BatchFile], under: str = "in") -> list[tuple[str, tuple[str, ...]]]:
        """Place the files, one folder per header layout: [(folder URI, columns)]."""
        layouts: dict[tuple[str, ...], list[BatchFile]] = {}
        for item in batch:
            layouts.setdefault(item.columns, []).append(item)
        groups = []
        for index, (columns, files) in enumerate(layouts.items()):
            folder = f"{under}/layout-{index}"
            for item in files:
                name = (
                    f"{item.ledger_id}.csv.gz"
                    if item.local_path.name.lower().endswith(".gz")
                    else f"{item.ledger_id}.csv"
                )
                self._place(item.local_path, f"{folder}/{name}")
            groups.append((f"{self.root}/{folder}", columns))
        return groups

    def stage_parts(self, parts: Sequence[Path], under: str) -> str:
        """Place lake parts under their two hive folders (sales_month=M/store_id=S/), for a
        read that takes the partition values from the path; returns the folder's URI."""
        for path in parts:
            self._place(path, f"{under}/{path.parent.parent.name}/{path.parent.name}/{path.name}")
        return f"{self.root}/{under}"

    def _place(self, source: Path, relative: str) -> None:
        if self.local is not None:
            target = self.local / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)  # same disk: no copy
            except OSError:
                shutil.copyfile(source, target)
        else:
            self._fs.copyFromLocalFile(
                False,
                True,
                self._path("file:" + str(source.resolve())),
                self._path(f"{self.root}/{relative}"),
            )

    def collect(self, frame: DataFrame, name: str) -> pa.Table:
        """A large result as Arrow, through Parquet the executors write: collected to the
        driver, a million customers' contributions (millions of rows) ran it out of heap."""
        frame.write.mode("overwrite").parquet(f"{self.root}/{name}")
        if self.local is not None:
            folder = self.local / name
        else:
            folder = self.out_dir / "spark-results" / name
            shutil.rmtree(folder, ignore_errors=True)
            folder.parent.mkdir(parents=True, exist_ok=True)
            self._fs.copyToLocalFile(
                False, self._path(f"{self.root}/{name}"), self._path("file:" + str(folder)), True
            )
        # part files in name order are the result's order; an empty result leaves one part
        # file with the schema
        return pa.concat_tables([pq.read_table(p) for p in sorted(folder.glob("part-*.parquet"))])

    def fetch_rows(self, rows_dir: Path) -> None:
        """Bring kind=valid and kind=rejected (the engine seam's layout) to rows_dir."""
        shutil.rmtree(rows_dir, ignore_errors=True)
        rows_dir.mkdir(parents=True)
        for folder, kind in (("rows", "kind=valid"), ("rejected", "kind=rejected")):
            if self.local is not None:
                source = self.local / folder / kind
                if source.exists():
                    os.replace(source, rows_dir / kind)
            else:
                source = self._path(f"{self.root}/{folder}/{kind}")
                if self._fs.exists(source):
                    self._fs.copyToLocalFile(
                        False, source, self._path("file:" + str(rows_dir)), True
                    )
        for checksum in rows_dir.rglob(".*.crc"):  # Hadoop's local checksum files
            checksum.unlink()

    def remove(self) -> None:
        if self.local is not None:
            shutil.rmtree(self.local, ignore_errors=True)
        else:
            self._fs.delete(self._path(self.root), True)


def _malformed_reason(columns: int) -> Column:
    """What DuckDB says about a line it cannot split, rebuilt from the corrupt record: its line
    (records counted from the header, which is line 1), the first problem, and the text."""
    record = F.col(CORRUPT)
    text = F.btrim(record, F.lit("\r\n"))
    # Quoted values removed (they may hold commas); a field still opening a quote is unclosed.
    unquoted = F.regexp_replace(text, r'(^|,)"(?:[^"]++|"")*+"(?=,|\z)', "$1")
    fields = F.size(F.split(unquoted, ",", -1))
    problem = F.when(
        unquoted.rlike('(^|,)"'), F.lit("Value with unterminated quote found.")
    ).otherwise(
        F.concat(
            F.lit(f"Expected Number of Columns: {columns} Found: "),
            F.least(fields, F.lit(columns + 1)).cast("string"),
        )
    )
    return F.when(
        record.isNotNull(),
        F.concat(
            F.lit("malformed CSV line "),
            (F.col(RECORD) + 2).cast("string"),
            F.lit(": "),
            problem,
            F.lit(": "),
            F.left(text, F.lit(200)),
        ),
    )


def raw_rows(spark: SparkSession, groups: list[tuple[str, tuple[str, ...]]]) -> DataFrame:
    """One CSV read per header layout, unioned: every column read as text by position, mapped
    to the mandatory names, extra columns folded into additional_column (as DuckDB does)."""
    frames = []
    for folder, columns in groups:
        schema = StructType(
            [StructField(f"c{index}", StringType()) for index in range(len(columns))]
            + [StructField(CORRUPT, StringType())]
        )
        files = (
            spark.read.schema(schema)
            .options(**CSV_OPTIONS)
            .csv(_glob_escaped(folder))
            # One file per task (see SparkEngine._tune): a row's index in its task is its record
            # number. Computed for every row, before anything can skip rows or evaluation.
            .withColumn(
                RECORD,
                F.monotonically_increasing_id()
                - F.shiftleft(F.spark_partition_id().cast("bigint"), 33),
            )
        )
        position = {name: index for index, name in enumerate(columns)}
        extras = [
            F.col(f"c{index}")
            for index, name in enumerate(columns)
            if name not in MANDATORY_COLUMNS
        ]
        if extras:
            additional = F.concat_ws(", ", *[F.coalesce(c, F.lit("")) for c in extras])
            extra_values = F.array(*extras)
        else:
            additional = F.lit(None).cast("string")
            extra_values = F.array().cast("array<string>")
        frames.append(
            files.select(
                # staged as <ledger id>.csv[.gz]: string functions, not a regex per row
                F.substring_index("_metadata.file_name", ".", 1).cast("bigint").alias("ledger_id"),
                *[F.col(f"c{position[name]}").alias(name) for name in MANDATORY_COLUMNS],
                additional.alias("additional_column"),
                extra_values.alias("extra_values"),
                _malformed_reason(len(columns)).alias("malformed_reason"),
            )
        )
    return reduce(DataFrame.unionByName, frames)


def _to_arrow(frame: DataFrame) -> pa.Table:
    """Small results to the driver as Arrow, with the plain string type DuckDB gives."""
    table = frame.toArrow()
    schema = pa.schema(
        [
            pa.field(f.name, pa.string()) if pa.types.is_large_string(f.type) else f
            for f in table.schema
        ]
    )
    return table.cast(schema)


class SparkEngine:
    name = "spark"

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        try:
            self.spark = session_for(settings)
        except (PySparkException, Py4JError, RuntimeError) as exc:
            raise _spark_error(exc) from exc

    def close(self) -> None:
        """Forget this batch's views; the session stays for the next run in this process."""
        with contextlib.suppress(PySparkException, Py4JError):  # e.g. the session was stopped
            for view in VIEWS:
                self.spark.catalog.dropTempView(view)

    def _tune(self, batch: list[BatchFile]) -> None:
        size = sum(item.local_path.stat().st_size for item in batch)
        cap = max(1, 2 * self.spark.sparkContext.defaultParallelism)
        self.spark.conf.set(
            "spark.sql.shuffle.partitions", str(max(1, min(cap, math.ceil(size / SHUFFLE_BYTES))))
        )
        # Each file its own task: files are not split anyway (multiLine, gzip), and a row's
        # index in its task then is its record number, which malformed-line reasons quote.
        self.spark.conf.set("spark.sql.files.maxPartitionBytes", str(SPLIT_BYTES))
        self.spark.conf.set("spark.sql.files.openCostInBytes", str(SPLIT_BYTES))

    def register(self, batch: list[BatchFile], dims: Dimensions) -> None:
        create = self.spark.createDataFrame
        create(dims.customer).createOrReplaceTempView("dim_customer")
        create(dims.store).createOrReplaceTempView("dim_store")
        create(dims.sales_team).createOrReplaceTempView("dim_sales_team")
        create(dims.product).createOrReplaceTempView("dim_product")
        create(
            pa.table(
                {
                    "ledger_id": pa.array([b.ledger_id for b in batch], pa.int64()),
                    "file_name": pa.array([b.file_name for b in batch], pa.string()),
                }
            )
        ).createOrReplaceTempView("batch_files")

    def read(
        self,
        files: list[BatchFile],
        dims: Dimensions,
        limits: RowLimits,
        run_id: int,
        out_dir: Path,
    ) -> None:
        """Nothing ahead: Spark reads the whole batch in one job, its files in parallel tasks
        (the session has started by now, while the rest downloads)."""

    def process(
        self,
        batch: list[BatchFile],
        dims: Dimensions,
        limits: RowLimits,
        run_id: int,
        out_dir: Path,
        retired: Sequence[Path] = (),
    ) -> Manifest:
        rows_dir = (out_dir / "rows").resolve()
        try:
            workspace = Workspace(self.spark, self.settings, out_dir)
            try:
                return self._process(workspace, batch, dims, limits, run_id, rows_dir, retired)
            finally:
                workspace.remove()
        except (PySparkException, Py4JError) as exc:
            raise _spark_error(exc) from exc

    def _process(
        self,
        workspace: Workspace,
        batch: list[BatchFile],
        dims: Dimensions,
        limits: RowLimits,
        run_id: int,
        rows_dir: Path,
        retired: Sequence[Path],
    ) -> Manifest:
        spark = self.spark
        self._tune(batch)
        self.register(batch, dims)
        rows_sql = sql.render(
            "rows", "spark", run_id=int(run_id), limits=limits, malformed_lines=True
        )

        # Pass 1 writes the lake's files; rejected rows and malformed lines go along (under
        # their kind) only to show which files have any.
        raw_rows(spark, workspace.stage(batch)).createOrReplaceTempView("raw_rows")
        lake = spark.sql(rows_sql).select(*PARTITIONS, *LAKE_COLUMNS)
        lake.write.mode("overwrite").partitionBy(*PARTITIONS).parquet(workspace.rows)
        written = spark.read.schema(lake.schema).parquet(_glob_escaped(workspace.rows))
        written.where("kind = 'valid'").createOrReplaceTempView("valid_rows")
        # a contribution per customer: millions of rows over a large customer base; the daily
        # sums are per sales person and product, a few thousand
        aggregates = [
            workspace.collect(spark.sql(sql.render(name, "spark")), name)
            if name.endswith("_data_mart")
            else _to_arrow(spark.sql(sql.render(name, "spark")))
            for name in AGGREGATES
        ]
        tally = _to_arrow(written.groupBy("_ledger", "kind").count())
        # the same mart SQL over the rows the batch's corrections take back out
        if retired:
            folder = workspace.stage_parts(retired, "retired")
            spark.read.option("basePath", folder).parquet(
                _glob_escaped(folder)
            ).createOrReplaceTempView("valid_rows")
        else:
            written.where("false").createOrReplaceTempView("valid_rows")
        retired_marts = [
            workspace.collect(spark.sql(sql.render(name, "spark")), f"retired-{name}")
            for name in MART_CONTRIBUTIONS
        ]

        # Pass 2, over the few files with traces: raw values, reasons, malformed lines.
        rejecting = {int(row["_ledger"]) for row in tally.to_pylist() if row["kind"] != "valid"}
        malformed = pa.table(
            {
                "ledger_id": pa.array([], pa.int64()),
                "line": pa.array([], pa.int64()),
                "reject_reason": pa.array([], pa.string()),
            }
        )
        if rejecting:
            files = [item for item in batch if item.ledger_id in rejecting]
            raw_rows(spark, workspace.stage(files, "again")).createOrReplaceTempView("raw_rows")
            rejected = (
                spark.sql(rows_sql)
                .where("kind <> 'valid'")
                .select("kind", "_ledger", *REJECTED_COLUMNS)
            )
            rejected.write.mode("overwrite").partitionBy("kind", "_ledger").parquet(
                workspace.rejected
            )
            malformed = _to_arrow(
                spark.read.schema(rejected.schema)
                .parquet(_glob_escaped(workspace.rejected))
                .where("kind = 'malformed'")
                .select(
                    F.col("_ledger").cast("bigint").alias("ledger_id"),
                    F.regexp_extract("reject_reason", MALFORMED_LINE, 1)
                    .cast("bigint")
                    .alias("line"),
                    "reject_reason",
                )
                .orderBy("ledger_id", "line")
            )
        workspace.fetch_rows(rows_dir)
        lake_parts, rejected_parts = layout_parts(rows_dir)
        return Manifest.of(
            lake_parts, rejected_parts, malformed, _counts(tally), aggregates, retired_marts
        )


def _counts(tally: pa.Table) -> dict[int, FileCounts]:
    per_file: dict[int, list[int]] = {}
    for row in tally.to_pylist():
        entry = per_file.setdefault(int(row["_ledger"]), [0, 0])
        entry[0 if row["kind"] == "valid" else 1] += int(row["count"])
    return {
        ledger_id: FileCounts(valid + rejected, valid, rejected)
        for ledger_id, (valid, rejected) in per_file.items()
    }


__all__ = ["SparkEngine", "Workspace", "raw_rows", "session_for", "stop_session"]
