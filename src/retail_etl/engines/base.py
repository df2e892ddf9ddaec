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
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import pyarrow as pa

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
        self,
        batch: list[BatchFile],
        dims: Dimensions,
        limits: RowLimits,
        run_id: int,
        out_dir: Path,
    ) -> EngineResult: ...

    def close(self) -> None: ...
