"""The engine seam: read a batch of validated CSV files, normalise, check, enrich, write the
lake's Parquet and compute, with the shared SQL in retail_etl/sql, everything the later stages
need. An engine returns a Manifest: the lake parts per (file, month, store) with their row
counts, each file's rejected rows, per-file counts, the mart contributions and the daily sums.
Where the engine keeps its files while it works is its own business: no other module reads
its working folder, only the paths the manifest names.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from retail_etl.config import RulesSettings

MANDATORY_COLUMNS = (
    "customer_id",
    "store_id",
    "product_name",
    "sales_date",
    "sales_person_id",
    "price",
    "quantity",
    "total_cost",
)

# The columns of rows.sql's output each part of the layout keeps. The lake has every mandatory
# column but store_id, which its path carries (sales_month is derived, also in the path).
LAKE_COLUMNS = (
    *(name for name in MANDATORY_COLUMNS if name != "store_id"),
    "additional_column",
    "customer_full_name",
    "customer_address",
    "customer_phone_number",
    "store_address",
    "store_manager_name",
    "sales_person_full_name",
    "product_id",
    "source_file",
    "ledger_id",
    "run_id",
)
REJECTED_COLUMNS = (*(f"raw_{name}" for name in MANDATORY_COLUMNS), "extra_values", "reject_reason")
PRODUCT_NAME_LENGTH = 255  # product.name: a longer name cannot be a product's


@dataclass(frozen=True)
class RowLimits:
    """What the row rules admit beyond types, so that every admitted value can be stored,
    summed and reported (SPEC section 4): dates the month arithmetic and the warehouse
    handle, amounts whose monthly sums fit DECIMAL(18, 2)."""

    min_sales_date: date
    max_sales_date: date
    max_amount: Decimal
    max_quantity: int

    @classmethod
    def of(cls, rules: RulesSettings, today: date) -> RowLimits:
        return cls(
            rules.min_sales_date,
            today + timedelta(days=rules.max_days_ahead),
            rules.max_amount.quantize(Decimal("0.01")),  # as SQL writes it: 100000000.00
            rules.max_quantity,
        )


@dataclass(frozen=True)
class BatchFile:
    """A downloaded file that passed file validation."""

    ledger_id: int
    file_name: str  # key below the landing prefix
    local_path: Path
    header: tuple[str, ...]  # names as written in the file (BOM and spaces stripped)

    @property
    def columns(self) -> tuple[str, ...]:
        """Header names normalised for matching (lower case)."""
        return tuple(name.lower() for name in self.header)

    @property
    def extra_columns(self) -> tuple[str, ...]:
        return tuple(name for name in self.header if name.lower() not in MANDATORY_COLUMNS)


@dataclass(frozen=True)
class Dimensions:
    """The lookup tables the enrichment joins against (built by enrich.load_dimensions), as
    Arrow tables keyed by their first column; the columns are named as they are in the lake."""

    customer: pa.Table  # customer_id, customer_full_name, customer_address, customer_phone_number
    store: pa.Table  # store_id, store_address, store_manager_name
    sales_team: pa.Table  # sales_person_id, sales_person_full_name
    product: pa.Table  # product_name (unique), product_id

    def required(self) -> dict[str, pa.Table]:
        """The dimensions a valid row must find itself in, by warehouse table name."""
        return {"customer": self.customer, "store": self.store, "sales_team": self.sales_team}

    def empty(self) -> list[str]:
        """The required dimensions without a row: every sales row would be rejected."""
        return [name for name, table in self.required().items() if not table.num_rows]


@dataclass(frozen=True)
class FileCounts:
    rows_read: int = 0
    rows_valid: int = 0
    rows_rejected: int = 0


@dataclass(frozen=True)
class LakePart:
    """One Parquet file of valid rows (LAKE_COLUMNS), all of one file, month and store."""

    ledger_id: int
    sales_month: str  # 'YYYY-MM'
    store_id: int
    path: Path
    rows: int


# The shared SQL (sql/<name>.sql) over a batch's valid rows whose results a Manifest carries,
# in the order of its fields.
MART_CONTRIBUTIONS = ("customers_data_mart", "sales_team_data_mart")
AGGREGATES = (*MART_CONTRIBUTIONS, "daily_sales_person", "daily_product")


@dataclass(frozen=True)
class Manifest:
    """What an engine made of a batch; every table and mapping is keyed by ledger id."""

    lake_parts: tuple[LakePart, ...]
    # Parquet files of each file's rejected rows (REJECTED_COLUMNS), files without any absent
    rejected_parts: Mapping[int, tuple[Path, ...]]
    malformed: pa.Table  # ledger_id, line, reject_reason: lines that are not CSV records
    counts: Mapping[int, FileCounts]
    customer_contributions: pa.Table  # sql/customers_data_mart.sql
    sales_team_contributions: pa.Table  # sql/sales_team_data_mart.sql
    daily_sales_person: pa.Table  # sql/daily_sales_person.sql
    daily_product: pa.Table  # sql/daily_product.sql
    # The same mart SQL over the lake rows of the files the batch's corrections replace, by
    # their ledger ids (names NULL): what to take back out of the marts.
    retired_customer_contributions: pa.Table
    retired_sales_team_contributions: pa.Table
    # rows per rule broken, per file (count_rules)
    rules: Mapping[int, Mapping[str, int]]

    @classmethod
    def of(
        cls,
        lake_parts: tuple[LakePart, ...],
        rejected_parts: Mapping[int, tuple[Path, ...]],
        malformed: pa.Table,
        counts: Mapping[int, FileCounts],
        aggregates: Sequence[pa.Table],
        retired: Sequence[pa.Table],
    ) -> Manifest:
        """An engine's manifest: aggregates in AGGREGATES' order, retired in
        MART_CONTRIBUTIONS' order; the rules counted from the rejected rows."""
        customers, sales_team, daily_sales_person, daily_product = aggregates
        retired_customers, retired_sales_team = retired
        return cls(
            lake_parts,
            rejected_parts,
            malformed,
            counts,
            customers,
            sales_team,
            daily_sales_person,
            daily_product,
            retired_customers,
            retired_sales_team,
            count_rules(rejected_parts, malformed),
        )

    def of_files(self, ledger_ids: Collection[int], retired: Collection[int] = ()) -> Manifest:
        """The same manifest restricted to these files, and to these replaced files."""
        wanted = set(ledger_ids)

        def rows(table: pa.Table, ids: Collection[int] = wanted) -> pa.Table:
            if set(pc.unique(table["ledger_id"]).to_pylist()) <= set(ids):
                return table  # the whole batch (the usual case): no copy of millions of rows
            return table.filter(pc.is_in(table["ledger_id"], pa.array(sorted(ids), pa.int64())))

        return Manifest(
            tuple(part for part in self.lake_parts if part.ledger_id in wanted),
            {i: paths for i, paths in self.rejected_parts.items() if i in wanted},
            rows(self.malformed),
            {i: counts for i, counts in self.counts.items() if i in wanted},
            rows(self.customer_contributions),
            rows(self.sales_team_contributions),
            rows(self.daily_sales_person),
            rows(self.daily_product),
            rows(self.retired_customer_contributions, retired),
            rows(self.retired_sales_team_contributions, retired),
            {i: rules for i, rules in self.rules.items() if i in wanted},
        )


class Engine(Protocol):
    name: str

    def read(
        self,
        files: list[BatchFile],
        dims: Dimensions,
        limits: RowLimits,
        run_id: int,
        out_dir: Path,
    ) -> None:
        """Start on these files while the rest of the batch still downloads (the run does not
        know the batch yet). process, given the same dims, limits, run_id and out_dir, then
        leaves out what was read of files not in its batch and reads only the files not read
        yet. An engine may do nothing here and all of the work in process. An engine serves
        one batch: read any number of times, then process once."""
        ...

    def process(
        self,
        batch: list[BatchFile],
        dims: Dimensions,
        limits: RowLimits,
        run_id: int,
        out_dir: Path,
        retired: Sequence[Path] = (),
    ) -> Manifest:
        """The batch's manifest. retired: local copies of the lake parts of the files its
        corrections replace, each under its sales_month=M/store_id=S/ folders. Raises
        EngineError (input_error when the batch's input is at fault)."""
        ...

    def close(self) -> None: ...


MALFORMED_RULE = "malformed CSV line"  # the rule a line that is not a CSV record breaks
REASON_SEPARATOR = "; "  # between the problems of one rejected row (sql/rows.sql)


def count_rules(
    rejected_parts: Mapping[int, Sequence[Path]], malformed: pa.Table
) -> dict[int, dict[str, int]]:
    """Rows per rule broken, per file: each problem a rejected row's reason names counts once
    (a row breaking two rules counts under both), each malformed line under MALFORMED_RULE.
    Read from what the engine already wrote (the reasons of the few rejected rows), so both
    engines count alike without reading the data again."""
    counted: dict[int, dict[str, int]] = {}
    for ledger_id, paths in rejected_parts.items():
        reasons = pq.read_table(list(map(str, paths)), columns=["reject_reason"])["reject_reason"]
        problems = pc.list_flatten(pc.split_pattern(reasons, REASON_SEPARATOR))
        tally = pc.value_counts(problems)
        counted[ledger_id] = dict(
            zip(tally.field("values").to_pylist(), tally.field("counts").to_pylist(), strict=True)
        )
    for ledger_id in malformed["ledger_id"].to_pylist():
        rules = counted.setdefault(int(ledger_id), {})
        rules[MALFORMED_RULE] = rules.get(MALFORMED_RULE, 0) + 1
    return {i: dict(sorted(rules.items())) for i, rules in counted.items()}


def layout_parts(rows_dir: Path) -> tuple[tuple[LakePart, ...], dict[int, tuple[Path, ...]]]:
    """The lake parts and rejected-row parts both engines leave under rows_dir, as hive
    partitions: kind=valid/sales_month=M/store_id=S/_ledger=L/*.parquet and
    kind=rejected/_ledger=L/*.parquet."""
    lake = []
    for path in sorted(rows_dir.glob("kind=valid/*/*/*/*.parquet")):
        month, store_id, ledger_id = (p.name.split("=", 1)[1] for p in path.parents[:3][::-1])
        rows = pq.ParquetFile(path).metadata.num_rows
        lake.append(LakePart(int(ledger_id), month, int(store_id), path, rows))
    rejected: dict[int, list[Path]] = {}
    for path in sorted(rows_dir.glob("kind=rejected/*/*.parquet")):
        rejected.setdefault(int(path.parent.name.split("=", 1)[1]), []).append(path)
    return tuple(lake), {i: tuple(paths) for i, paths in rejected.items()}
