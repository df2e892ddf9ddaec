"""The engine seam: read a batch of validated CSV files, normalise, check, enrich, write
Parquet and compute the per-file mart contributions.

Every engine leaves the same layout under out_dir/rows (hive partitions):

    kind=valid/sales_month=YYYY-MM/store_id=N/_ledger=L/*.parquet   LAKE_COLUMNS
    kind=rejected/_ledger=L/*.parquet                               REJECTED_COLUMNS

and returns the mart contributions computed by the shared SQL in retail_etl/sql. The valid
files are the lake's objects as they are: nothing but the lake's columns. Rejected rows are
rare, so the engines find which files have any in the pass that writes the lake and read only
those files again for their raw values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pyarrow as pa

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


@dataclass(frozen=True)
class FileCounts:
    rows_read: int = 0
    rows_valid: int = 0
    rows_rejected: int = 0


@dataclass(frozen=True)
class EngineResult:
    rows_dir: Path  # the partitioned layout described in the module docstring
    customer_contributions: pa.Table  # shared SQL: sql/customers_data_mart.sql
    sales_team_contributions: pa.Table  # shared SQL: sql/sales_team_data_mart.sql
    malformed: pa.Table  # ledger_id, line, reject_reason: lines that are not CSV records
    counts: dict[int, FileCounts] = field(default_factory=dict)


class Engine(Protocol):
    name: str

    def process(
        self, batch: list[BatchFile], dims: Dimensions, run_id: int, out_dir: Path
    ) -> EngineResult: ...

    def close(self) -> None: ...
