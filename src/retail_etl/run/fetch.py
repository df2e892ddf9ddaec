"""Stage 2, fetch: download the files to process into the work folder in parallel (bounded)
and check each one as it arrives (checksum, decodability, header: validate.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from retail_etl.config import StorageSettings
from retail_etl.errors import StorageError
from retail_etl.run.ledger import LedgerRow
from retail_etl.run.validate import FileCheck, inspect_file
from retail_etl.storage import ObjectStore


@dataclass(frozen=True)
class FetchedFile:
    row: LedgerRow
    local_path: Path | None  # None: the object vanished from landing, or cannot be read
    check: FileCheck | None
    problem: str | None = None  # why an object still in landing cannot be read


@dataclass(frozen=True)
class Fetched:
    files: tuple[FetchedFile, ...]

    @property
    def bytes(self) -> int:
        """Downloaded."""
        return sum(f.check.size for f in self.files if f.check is not None)


def local_name(row: LedgerRow) -> str:
    """Work-folder name: the ledger id plus a canonical extension the engines recognise."""
    return f"{row.id}.csv.gz" if row.file_name.lower().endswith(".gz") else f"{row.id}.csv"


def fetch(
    store: ObjectStore,
    rows: Sequence[LedgerRow],
    storage: StorageSettings,
    folder: Path,
    advance: Callable[[int], None] = lambda _n: None,
) -> Fetched:
    """Each row's object, downloaded into folder (at most storage.max_concurrency at once) and
    checked; advance is told the bytes of each file done."""
    landing_prefix = storage.landing_prefix
    folder.mkdir(parents=True, exist_ok=True)

    def one(row: LedgerRow) -> FetchedFile:
        key = landing_prefix + row.file_name
        if not store.exists(key):
            advance(0)
            return FetchedFile(row, None, None)
        dest = folder / local_name(row)
        dest.unlink(missing_ok=True)
        try:
            store.download(key, dest)
        except StorageError as exc:
            # The store answers for this object (it exists) but will not give its bytes
            # (permissions, a link, an archived storage class): the object's problem, not the
            # store's. When the store itself is down, exists() raises and the run stops.
            advance(0)
            if not store.exists(key):
                return FetchedFile(row, None, None)
            return FetchedFile(row, None, None, f"cannot be downloaded: {exc}")
        check = inspect_file(dest, row.file_name)
        advance(check.size)
        return FetchedFile(row, dest, check)

    with ThreadPoolExecutor(storage.max_concurrency, thread_name_prefix="download") as pool:
        return Fetched(tuple(pool.map(one, rows)))
