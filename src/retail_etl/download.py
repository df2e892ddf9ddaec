"""Stage 3-4: fetch objects into the work folder in parallel (bounded) and validate each one
as it arrives (checksum, decodability, header)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from retail_etl.errors import StorageError
from retail_etl.ledger import LedgerRow
from retail_etl.storage import ObjectStore
from retail_etl.validate import FileCheck, inspect_file


@dataclass(frozen=True)
class Fetched:
    row: LedgerRow
    local_path: Path | None  # None: the object vanished from landing, or cannot be read
    check: FileCheck | None
    problem: str | None = None  # why an object still in landing cannot be read


def local_name(row: LedgerRow) -> str:
    """Work-folder name: the ledger id plus a canonical extension the engines recognise."""
    return f"{row.id}.csv.gz" if row.file_name.lower().endswith(".gz") else f"{row.id}.csv"


def download_all(
    store: ObjectStore,
    rows: list[LedgerRow],
    landing_prefix: str,
    folder: Path,
    concurrency: int,
    advance: Callable[[int], None] = lambda _n: None,
) -> list[Fetched]:
    folder.mkdir(parents=True, exist_ok=True)

    def fetch(row: LedgerRow) -> Fetched:
        key = landing_prefix + row.file_name
        if not store.exists(key):
            advance(0)
            return Fetched(row, None, None)
        dest = folder / local_name(row)
        dest.unlink(missing_ok=True)
        try:
            store.download(key, dest)
        except StorageError as exc:
            # The store answers for this object (it exists) but will not give its bytes
            # (permissions, a link, an archived storage class): the object's problem, not the
            # store's. When the store itself is down, exists() raises and the run stops.
            if not store.exists(key):
                advance(0)
                return Fetched(row, None, None)
            advance(0)
            return Fetched(row, None, None, f"cannot be downloaded: {exc}")
        check = inspect_file(dest, row.file_name)
        advance(check.size)
        return Fetched(row, dest, check)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="download") as pool:
        return list(pool.map(fetch, rows))
