"""DuckDB engine: the embedded default. One query reads every file of the batch, checks and
enriches the rows and streams them into the lake's partitioned Parquet; the files with rejected
rows are read once more for their raw values; the mart SQL then reads only the few columns it
needs back from the lake's Parquet."""

from __future__ import annotations

import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

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
from retail_etl.local_duckdb import connect


def _engine_error(exc: duckdb.Error) -> EngineError:
    return EngineError(
        f"duckdb: {str(exc).splitlines()[0]}",
        input_error=isinstance(exc, duckdb.InvalidInputException),
    )


def _literal(text: str) -> str:
    """A SQL string literal for a path we generated ourselves (work folder + ledger id)."""
    return "'" + text.replace("'", "''") + "'"


def raw_rows_select(batch: list[BatchFile]) -> str:
    """All of the batch's files in one query, each through its own read_csv: every column read
    as text by position, mapped to the mandatory names, extra columns folded into
    additional_column.

    One read_csv per file rather than one over a list of files: DuckDB 2.0's multi-file reader
    silently loses a last line whose quote is never closed (no reject, no row), while a
    single-file scan reports it as malformed. Each scan still runs in parallel, in one plan.
    """
    selects = []
    for item in batch:
        columns = item.columns
        position = {name: index for index, name in enumerate(columns)}
        mandatory = ", ".join(f"c{position[name]} AS {name}" for name in MANDATORY_COLUMNS)
        extras = [
            f"c{index}" for index, name in enumerate(columns) if name not in MANDATORY_COLUMNS
        ]
        if extras:
            additional = "concat_ws(', ', " + ", ".join(f"coalesce({c}, '')" for c in extras) + ")"
            extra_values = "[" + ", ".join(extras) + "]"
        else:
            additional, extra_values = "CAST(NULL AS VARCHAR)", "CAST([] AS VARCHAR[])"
        column_types = ", ".join(f"'c{index}': 'VARCHAR'" for index in range(len(columns)))
        selects.append(
            f"SELECT CAST({int(item.ledger_id)} AS BIGINT) AS ledger_id, {mandatory}, "
            f"{additional} AS additional_column, {extra_values} AS extra_values "
            f"FROM read_csv([{_literal(str(item.local_path))}], header = true, "
            f"auto_detect = false, delim = ',', quote = '\"', escape = '\"', "
            f"columns = {{{column_types}}}, store_rejects = true, max_line_size = 4194304)"
        )
    return "\nUNION ALL\n".join(selects)


# Every per-file scan holds its own read buffers (64 MB each with a 4 MB max_line_size) until
# its query ends: eight 1.9 GB files in one query ran out of a 1 GB memory_limit. And the
# lake's partitioned writer keeps each partition's rows until it holds
# partitioned_write_flush_threshold of them: over a million customers and 300 stores no
# partition gets there, so a query holds every row it read, about 8 bytes of memory per byte
# of CSV. A query takes up to FILES_PER_QUERY files and, past the first, up to an eighth of
# the memory limit in CSV bytes: a 1 GB day in eight files over a million customers took
# 41 s in one query (spilling) and 28 s in eight, under the default 1 GB limit.
FILES_PER_QUERY = 16
CSV_BYTES_PER_MEMORY_BYTE = 1 / 8
ENUM_MAX_ROWS = 10_000
MARTS_MEMORY = 400 << 20
# how DuckDB shows a memory limit: "953.6 MiB"
_UNITS = {"bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def _queries(files: list[BatchFile], bytes_per_query: int) -> list[list[BatchFile]]:
    """The files in groups of at most FILES_PER_QUERY and bytes_per_query (one file alone may
    be larger)."""
    groups: list[list[BatchFile]] = []
    size = 0
    for item in files:
        bytes_ = item.local_path.stat().st_size
        if not groups or len(groups[-1]) >= FILES_PER_QUERY or size + bytes_ > bytes_per_query:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += bytes_
    return groups


@dataclass(frozen=True)
class _Job:
    """What a batch's reads must share to be one batch (and its dims, by identity)."""

    limits: RowLimits
    run_id: int
    rows_dir: Path


class DuckDBEngine:
    name = "duckdb"

    def __init__(self, settings: EngineSettings) -> None:
        spill = Path(settings.work_dir) / "duckdb-spill"
        spill.mkdir(parents=True, exist_ok=True)
        self.con = connect(
            threads=settings.threads,
            memory_limit=settings.memory_limit,
            temp_directory=str(spill),
            preserve_insertion_order=False,
            # Flush each lake partition every row group: the partitioned writer otherwise
            # buffers ~0.5M rows per open partition and spills under the memory limit.
            partitioned_write_flush_threshold=122_880,
        )
        # Joins are built on their right side, as the SQL is written: the dimensions. DuckDB
        # cannot estimate a CSV scan's rows and takes it for ~84, so with a million customers
        # its join order built the hash tables on the sales rows instead (2x slower at 13 M
        # rows, and out of memory counting them).
        self.con.execute("SET disabled_optimizers = 'join_order,build_side_probe_side'")
        self._lookups = 0
        # the batch being read (with self._dims), and its files read so far
        self._job: _Job | None = None
        self._dims: Dimensions | None = None
        self._read: dict[int, BatchFile] = {}
        self._rows_sql = ""
        self._memory_limit = settings.memory_limit
        limit = self._memory_limit_bytes() or 1e9  # in a format we do not know: the default
        self._bytes_per_query = int(limit * CSV_BYTES_PER_MEMORY_BYTE)

    def close(self) -> None:
        self.con.close()

    def _register_lookup(self, name: str, table: pa.Table) -> None:
        """A lookup table keyed by its first column. Its other text columns become ENUMs when
        it is small: the lake's partitioned Parquet writer copies every text value it buffers,
        but writes an ENUM as dictionary codes (1.9x faster end to end with 40 customers).
        Building the type for a million customers would cost more than it saves."""
        self._lookups += 1
        if table.num_rows > ENUM_MAX_ROWS:
            self.con.register(name, table)  # as it is, without a copy
            return
        source = f"{name}_arrow"
        self.con.register(source, table)
        columns = []
        for index, column in enumerate(table.schema):
            quoted = f'"{column.name}"'
            values = table.column(index)
            if index > 0 and pa.types.is_string(column.type) and values.null_count < len(values):
                enum = f"{name}_{index}_{self._lookups}"
                self.con.execute(
                    f"CREATE TYPE {enum} AS ENUM "
                    f"(SELECT DISTINCT {quoted} FROM {source} WHERE {quoted} IS NOT NULL)"
                )
                columns.append(f"CAST({quoted} AS {enum}) AS {quoted}")
            else:
                columns.append(quoted)
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT {', '.join(columns)} FROM {source}"
        )

    def register(self, batch: list[BatchFile], dims: Dimensions) -> None:
        """The lookups rows.sql joins, as the engine registers them: the dimensions and the
        batch's files (bench/lake_floor.py times the lake's writer over them)."""
        self._register_dimensions(dims)
        self._register_batch_files(batch)

    def _register_dimensions(self, dims: Dimensions) -> None:
        if self._dims is dims:
            return
        self._register_lookup("dim_customer", dims.customer)
        self._register_lookup("dim_store", dims.store)
        self._register_lookup("dim_sales_team", dims.sales_team)
        self._register_lookup("dim_product", dims.product)
        self._dims = dims

    def _register_batch_files(self, files: Sequence[BatchFile]) -> None:
        """batch_files, which rows.sql names each row's source file from, over the files the
        next query reads."""
        ledger_ids = pa.array([b.ledger_id for b in files], pa.int64())
        names = pa.array([b.file_name for b in files], pa.string())
        self._register_lookup(
            "batch_files", pa.table({"ledger_id": ledger_ids, "file_name": names})
        )

    def _register_batch_paths(self, batch: Sequence[BatchFile]) -> None:
        """batch_paths: which file of the batch each CSV scan read (_malformed)."""
        ledger_ids = pa.array([b.ledger_id for b in batch], pa.int64())
        paths = pa.array([str(b.local_path) for b in batch], pa.string())
        self.con.register("batch_paths", pa.table({"ledger_id": ledger_ids, "path": paths}))

    def read(
        self,
        files: list[BatchFile],
        dims: Dimensions,
        limits: RowLimits,
        run_id: int,
        out_dir: Path,
    ) -> None:
        """Pass 1 (the lake's files) over these files now."""
        try:
            self._lake_pass(self._start(dims, limits, run_id, out_dir), files)
        except duckdb.Error as exc:
            raise _engine_error(exc) from exc

    def _start(self, dims: Dimensions, limits: RowLimits, run_id: int, out_dir: Path) -> Path:
        """Ready for a batch, whose rows folder it returns; what was read for another batch is
        forgotten."""
        job = _Job(limits, run_id, (out_dir / "rows").resolve())
        if self._job is not None and (job != self._job or dims is not self._dims):
            shutil.rmtree(self._job.rows_dir, ignore_errors=True)
            self._read.clear()
        self._job = job
        self._register_dimensions(dims)
        self._rows_sql = sql.render("rows", "duckdb", run_id=int(run_id), limits=limits)
        return job.rows_dir

    def _lake_pass(self, rows_dir: Path, files: list[BatchFile]) -> None:
        """Pass 1 writes the lake's files. Rejected rows go along with the lake's columns (under
        kind=rejected) only to show which files have any; that folder is then replaced by pass
        2's."""
        if not files:
            return
        rows_dir.parent.mkdir(parents=True, exist_ok=True)
        self._read.update((item.ledger_id, item) for item in files)
        self._register_batch_files(files)
        self._copy(
            files,
            f"SELECT kind, sales_month, store_id, _ledger, {', '.join(LAKE_COLUMNS)} "
            f"FROM ({self._rows_sql})",
            rows_dir,
            "kind, sales_month, store_id, _ledger",
        )

    def _forget(self, rows_dir: Path, ledger_ids: Collection[int]) -> None:
        """What pass 1 wrote of these files."""
        for ledger_id in ledger_ids:
            for folder in rows_dir.glob(f"kind=*/*/*/_ledger={int(ledger_id)}"):
                shutil.rmtree(folder)
            del self._read[ledger_id]

    def process(
        self,
        batch: list[BatchFile],
        dims: Dimensions,
        limits: RowLimits,
        run_id: int,
        out_dir: Path,
        retired: Sequence[Path] = (),
    ) -> Manifest:
        try:
            rows_dir = self._start(dims, limits, run_id, out_dir)
            wanted = {item.ledger_id for item in batch}
            self._forget(
                rows_dir, [ledger_id for ledger_id in self._read if ledger_id not in wanted]
            )
            self._lake_pass(rows_dir, [item for item in batch if item.ledger_id not in self._read])
            self._register_batch_files(batch)
            self._register_batch_paths(batch)
            malformed = self._malformed()
            counts = self._counts(rows_dir, malformed)  # before pass 1's rejected rows go
            rejected_dir = rows_dir / "kind=rejected"
            rejecting = {int(p.name.split("=")[1]) for p in rejected_dir.glob("*/*/_ledger=*")}
            shutil.rmtree(rejected_dir, ignore_errors=True)
            # Pass 2, over the few files with rejected rows: their raw values and reasons.
            with_rejects = [b for b in batch if b.ledger_id in rejecting]
            self._copy(
                with_rejects,
                f"SELECT _ledger, {', '.join(REJECTED_COLUMNS)} FROM ({self._rows_sql}) "
                "WHERE kind = 'rejected'",
                rejected_dir,
                "_ledger",
            )
            valid = rows_dir / "kind=valid"
            any_valid = any(valid.glob("**/*.parquet"))
            self._valid_rows(_literal(str(valid / "**" / "*.parquet")) if any_valid else None)
            self._shrink_pool()
            aggregates = [
                self.con.sql(sql.render(name, "duckdb")).to_arrow_table() for name in AGGREGATES
            ]
            # the same mart SQL over the rows the batch's corrections take back out
            listed = ", ".join(_literal(str(path)) for path in retired)
            self._valid_rows(f"[{listed}]" if retired else None)
            retired_marts = [
                self.con.sql(sql.render(name, "duckdb")).to_arrow_table()
                for name in MART_CONTRIBUTIONS
            ]
            self.con.execute(f"SET memory_limit = {_literal(self._memory_limit)}")
        except duckdb.Error as exc:
            raise _engine_error(exc) from exc
        lake_parts, rejected_parts = layout_parts(rows_dir)
        return Manifest.of(lake_parts, rejected_parts, malformed, counts, aggregates, retired_marts)

    def _valid_rows(self, parquet: str | None) -> None:
        """valid_rows, the mart SQL's input: the lake files read_parquet's argument names
        (store_id and sales_month from their hive folders), or none (rows.sql's columns)."""
        if parquet:
            self.con.execute(
                "CREATE OR REPLACE TEMP VIEW valid_rows AS SELECT * FROM read_parquet("
                f"{parquet}, hive_partitioning = true)"
            )
        else:
            self.con.execute(
                f"CREATE OR REPLACE TEMP VIEW valid_rows AS SELECT * FROM ({self._rows_sql}) "
                "WHERE false"
            )

    def _shrink_pool(self) -> None:
        """Lower the memory limit to MARTS_MEMORY for the mart queries. Their results leave
        DuckDB as Arrow while its buffer pool still holds what the lake pass used: with a
        million customers (7.3 M contributions at 1 GB) the two together took the process
        to 2.2 GB. Under the smaller limit DuckDB gives the memory back first, and the
        sorts spill (+0.2 s there). A limit set lower than MARTS_MEMORY stays; process puts
        the configured one back afterwards."""
        limit = self._memory_limit_bytes()
        if limit is not None and limit > MARTS_MEMORY:
            self.con.execute(f"SET memory_limit = '{MARTS_MEMORY}B'")

    def _memory_limit_bytes(self) -> float | None:
        """The connection's memory limit, or None in a format we do not know."""
        ((limit,),) = self.con.execute("SELECT current_setting('memory_limit')").fetchall()
        number, _, unit = str(limit).partition(" ")
        return float(number) * _UNITS[unit] if unit in _UNITS else None

    def _copy(self, files: list[BatchFile], select: str, target: Path, partitions: str) -> None:
        """select (over raw_rows) into partitioned Parquet, a few files per query."""
        for chunk in _queries(files, self._bytes_per_query):
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW raw_rows AS {raw_rows_select(chunk)}")
            self.con.execute(
                f"COPY ({select}) TO {_literal(str(target))} (FORMAT parquet, "
                f"PARTITION_BY ({partitions}), COMPRESSION snappy, OVERWRITE_OR_IGNORE true)"
            )

    def _malformed(self) -> pa.Table:
        """Lines the CSV reader could not split, from the reject tables, which gather every
        scan of this connection so far (read them before any file is scanned again). DuckDB
        reports a ragged line once per missing (or surplus) column: keep the first error of
        each line (for a short line, the one naming its field count)."""
        return self.con.sql(
            "SELECT bp.ledger_id, e.line, 'malformed CSV line ' || e.line || ': ' "
            "|| arg_min(e.error_message, e.column_idx) || ': ' "
            "|| left(trim(min(e.csv_line), chr(10) || chr(13)), 200) AS reject_reason "
            "FROM reject_errors e JOIN reject_scans s USING (scan_id, file_id) "
            "JOIN batch_paths bp ON bp.path = s.file_path "
            "GROUP BY bp.ledger_id, e.line ORDER BY 1, 2"
        ).to_arrow_table()

    def _counts(self, rows_dir: Path, malformed: pa.Table) -> dict[int, FileCounts]:
        tally: dict[int, list[int]] = {}
        if any(rows_dir.glob("**/*.parquet")):
            for ledger_id, kind, n in self.con.execute(
                "SELECT _ledger, kind, count(*) FROM read_parquet("
                f"{_literal(str(rows_dir / '**' / '*.parquet'))}, hive_partitioning = true) "
                "GROUP BY ALL"
            ).fetchall():
                entry = tally.setdefault(int(ledger_id), [0, 0])
                entry[0 if kind == "valid" else 1] += n
        for ledger_id in malformed.column("ledger_id").to_pylist():
            tally.setdefault(int(ledger_id), [0, 0])[1] += 1
        return {
            ledger_id: FileCounts(valid + rejected, valid, rejected)
            for ledger_id, (valid, rejected) in tally.items()
        }
