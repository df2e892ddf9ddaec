"""Where a file's objects go in the bucket: every key derived from a ledger row, in one place.
Keys are fixed by the registration (run id, ledger id), so a resumed run rewrites the same
objects instead of adding new ones, and nothing in the archive or error prefix is overwritten."""

from __future__ import annotations

from retail_etl.run.ledger import LedgerRow
from retail_etl.storage import fit_key


def archive_key(prefix: str, row: LedgerRow) -> str:
    """The archive (or error) key of a landed object: unique per registration."""
    return fit_key(f"{prefix}run-{row.run_id}/", row.file_name)


def rejected_key(error_prefix: str, run_id: int, file_name: str) -> str:
    """Where a file's rejected rows go (SPEC section 4): its name below landing, a `.csv`
    name kept as it is, `.csv.gz` becoming `.csv`, `.csv` appended to anything else; the
    key shortened when it would pass the store's limit."""
    lower = file_name.lower()
    if lower.endswith(".csv.gz"):
        file_name = file_name[: -len(".gz")]
    elif not lower.endswith(".csv"):
        file_name += ".csv"
    return fit_key(f"{error_prefix}rejected/{run_id}/", file_name)


def lake_key(lake_prefix: str, sales_month: str, store_id: int, ledger_id: int, index: int) -> str:
    """A lake object of valid rows: one file's rows of one month and store, part `index`."""
    return (
        f"{lake_prefix}sales/sales_month={sales_month}/store_id={store_id}/"
        f"ledger-{ledger_id}-{index}.parquet"
    )
