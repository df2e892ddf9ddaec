"""Stage 2, fetch: download the files to process into the work folder in parallel (bounded)
and check each one as it arrives (checksum, decodability, header: validate.py). The files that
have arrived are handed on (to the engine, run/read_ahead.py) while the rest download."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from retail_etl.config import StorageSettings
from retail_etl.engines import BatchFile
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
    version: str | None = None  # ObjectStore.version of the object downloaded

    @property
    def batch_file(self) -> BatchFile | None:
        """What the engine reads, when the file downloaded and passed its checks."""
        if self.local_path is None or self.check is None or not self.check.ok or self.problem:
            return None
        return BatchFile(self.row.id, self.row.file_name, self.local_path, self.check.header)


@dataclass(frozen=True)
class Fetched:
    files: tuple[FetchedFile, ...]
    seconds: float = 0.0  # from the first download's start to the last one's end

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
    arrived: Callable[[list[FetchedFile]], None] = lambda _files: None,
) -> Fetched:
    """Each row's object, downloaded into folder (at most storage.max_concurrency at once) and
    checked; advance is told the bytes of each file done. arrived is given, on this thread,
    the files done since it was last called, in the rows' order, while the rest download."""
    landing_prefix = storage.landing_prefix
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    finished = [started]

    def one(row: LedgerRow) -> FetchedFile:
        fetched = _download(store, landing_prefix, row, folder, advance)
        finished.append(time.perf_counter())
        return fetched

    with ThreadPoolExecutor(storage.max_concurrency, thread_name_prefix="download") as pool:
        futures = [pool.submit(one, row) for row in rows]
        order = {future: index for index, future in enumerate(futures)}
        pending: set[Future[FetchedFile]] = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                arrived([future.result() for future in sorted(done, key=order.__getitem__)])
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return Fetched(tuple(future.result() for future in futures), max(finished) - started)


def _download(
    store: ObjectStore,
    landing_prefix: str,
    row: LedgerRow,
    folder: Path,
    advance: Callable[[int], None],
) -> FetchedFile:
    key = landing_prefix + row.file_name
    version = store.version(key)
    if version is None:
        advance(0)
        return FetchedFile(row, None, None)
    dest = folder / local_name(row)
    dest.unlink(missing_ok=True)
    try:
        store.download(key, dest)
    except StorageError as exc:
        # The store answers for this object (it exists) but will not give its bytes
        # (permissions, a link, an archived storage class): the object's problem, not the
        # store's. When the store itself is down, version() raises and the run stops.
        advance(0)
        if not store.exists(key):
            return FetchedFile(row, None, None)
        return FetchedFile(row, None, None, f"cannot be downloaded: {exc}")
    check = inspect_file(dest, row.file_name)
    advance(check.size)
    return FetchedFile(row, dest, check, version=version)
