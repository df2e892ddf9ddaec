"""Stage 5, publish: the manifest's lake parts and each file's rejected rows go to the bucket,
under keys fixed by the file's registration (keys.py), so a resumed run rewrites rather than
adds. The lake index (etl_lake_object) records the keys a file will own before any upload, so
that a file later corrected, quarantined or found vanished can have exactly its objects
removed.

The uploads run on a thread beside the marts' commit (they wait on the store, the commit on
the warehouse), which waits for them before it commits: a committed file's lake objects
exist, and a failed upload rolls the marts back."""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from sqlalchemy import delete, select

from retail_etl.config import StorageSettings
from retail_etl.engines import MANDATORY_COLUMNS, BatchFile, Manifest
from retail_etl.run import ledger
from retail_etl.run.keys import lake_key, rejected_keys
from retail_etl.run.ledger import LedgerRow
from retail_etl.run.triage import Triage
from retail_etl.storage import ObjectStore
from retail_etl.warehouse import Warehouse, bulk
from retail_etl.warehouse.schema import lake_object

log = logging.getLogger("retail_etl.run")


@dataclass(frozen=True)
class Published:
    lake_objects: int
    lake_bytes: int
    rejected_files: int
    rejected_bytes: int
    seconds: float = 0.0  # the uploads' wall time


class Publishing:
    """A batch's uploads, on a thread of their own from the start of the `with` block to
    its end: they never outlive the stage that waits for them."""

    def __init__(self, uploads: Callable[[], Published], checkpoint: Callable[[str], None]) -> None:
        self._uploads = uploads
        self._checkpoint = checkpoint
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="publish")
        self._future: Future[Published] | None = None
        self._failure: BaseException | None = None
        self._written = False

    def __enter__(self) -> Publishing:
        self._future = self._pool.submit(self._uploads)
        return self

    def wait(self) -> Published:
        """What the uploads published, once they are done; raises what they raised, every
        time it is called (a commit that failed for them must not be retried in parts)."""
        if self._failure is not None:
            raise self._failure
        assert self._future is not None, "wait() inside the with block"
        try:
            published = self._future.result()
            if not self._written:
                self._written = True
                self._checkpoint("lake_written")
                self._checkpoint("rejected_written")
        except BaseException as exc:
            self._failure = exc
            raise
        return published

    def __exit__(self, *_exc: object) -> None:
        self._pool.shutdown(wait=True)
        failed = self._future.exception() if self._future is not None else None
        if failed is not None and self._failure is None:  # the run failed for another reason
            log.warning("the lake uploads failed too", exc_info=failed)


def publish(
    store: ObjectStore,
    warehouse: Warehouse,
    manifest: Manifest,
    batch: Sequence[BatchFile],
    triaged: Triage,
    storage: StorageSettings,
    work_dir: Path,
    checkpoint: Callable[[str], None],
) -> Publishing:
    """Record the lake keys each file will own; the uploads (the lake parts, then the
    rejected rows) start when the returned Publishing's `with` block does."""
    planned = index_lake(store, warehouse, manifest, batch, storage.lake_prefix)
    checkpoint("lake_indexed")

    def uploads() -> Published:
        started = time.perf_counter()
        lake_objects, lake_bytes = upload_lake(store, planned, storage.max_concurrency)
        rejected_files, rejected_bytes = write_rejected(
            store, warehouse, manifest, batch, triaged.rows, storage.error_prefix, work_dir
        )
        seconds = time.perf_counter() - started
        return Published(lake_objects, lake_bytes, rejected_files, rejected_bytes, seconds)

    return Publishing(uploads, checkpoint)


def index_lake(
    store: ObjectStore,
    warehouse: Warehouse,
    manifest: Manifest,
    batch: Sequence[BatchFile],
    lake_prefix: str,
) -> list[tuple[Path, str, int]]:
    """Drop the keys an earlier attempt wrote but this one does not, and record the keys
    each file will own. Returns what to upload: local path, key, ledger id."""
    ledger_ids = [item.ledger_id for item in batch]
    planned: list[tuple[Path, str, int]] = []
    index: dict[tuple[int, str, int], int] = {}
    for part in manifest.lake_parts:
        group = (part.ledger_id, part.sales_month, part.store_id)
        index[group] = index.get(group, -1) + 1
        key = lake_key(lake_prefix, part.sales_month, part.store_id, part.ledger_id, index[group])
        planned.append((part.path, key, part.ledger_id))
    wanted = {(lid, key) for _path, key, lid in planned}
    with warehouse.begin() as conn:
        earlier = conn.execute(
            select(lake_object.c.ledger_id, lake_object.c.object_key).where(
                lake_object.c.ledger_id.in_(ledger_ids)
            )
        ).fetchall()
    for lid, key in earlier:
        if (lid, key) not in wanted:
            store.delete(key)
    with warehouse.begin() as conn:
        warehouse.fence(conn)
        conn.execute(delete(lake_object).where(lake_object.c.ledger_id.in_(ledger_ids)))
        bulk.insert_many(
            conn,
            lake_object,
            [{"ledger_id": lid, "object_key": key} for lid, key in sorted(wanted)],
        )
    return planned


def upload_lake(
    store: ObjectStore, planned: Sequence[tuple[Path, str, int]], concurrency: int
) -> tuple[int, int]:
    """Upload the indexed parts (each object appears atomically). Returns objects, bytes."""
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="upload") as pool:
        list(pool.map(lambda item: store.upload(item[0], item[1]), planned))
    return len(planned), sum(path.stat().st_size for path, _key, _lid in planned)


def write_rejected(
    store: ObjectStore,
    warehouse: Warehouse,
    manifest: Manifest,
    batch: Sequence[BatchFile],
    rows: Mapping[int, LedgerRow],
    error_prefix: str,
    work_dir: Path,
) -> tuple[int, int]:
    """Per file with rejected rows: its original columns plus reject_reason, as CSV. Returns
    the files and bytes written."""
    written = size = 0
    malformed_by_file: dict[int, list[str]] = {}
    for row in manifest.malformed.to_pylist():
        malformed_by_file.setdefault(int(row["ledger_id"]), []).append(row["reject_reason"])
    rejecting = [
        item
        for item in batch
        if manifest.rejected_parts.get(item.ledger_id) or item.ledger_id in malformed_by_file
    ]
    keys = _rejected_keys(warehouse, error_prefix, [rows[i.ledger_id] for i in rejecting])
    for item in rejecting:
        parts = manifest.rejected_parts.get(item.ledger_id, ())
        malformed = malformed_by_file.get(item.ledger_id, [])
        key = keys[item.ledger_id]
        if store.exists(key):
            continue  # written by an interrupted attempt of this same file: never overwrite
        local = work_dir / f"rejected-{item.ledger_id}.csv"
        with open(local, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow([*item.header, "reject_reason"])
            for part in parts:
                for rb in pq.ParquetFile(part).iter_batches(batch_size=65_536):
                    for row in rb.to_pylist():
                        writer.writerow(_original_values(item, row) + [row["reject_reason"]])
            for reason in malformed:
                writer.writerow([""] * len(item.header) + [reason])
        store.upload(local, key)
        written += 1
        size += local.stat().st_size
    return written, size


def _rejected_keys(
    warehouse: Warehouse, error_prefix: str, rows: Sequence[LedgerRow]
) -> dict[int, str]:
    """rejected_keys of these rows, from every name their registering runs registered."""
    keys: dict[int, str] = {}
    for run_id in sorted({row.run_id for row in rows}):
        with warehouse.begin() as conn:
            keys |= rejected_keys(error_prefix, run_id, ledger.registered_names(conn, run_id))
    return keys


def _original_values(item: BatchFile, row: dict[str, Any]) -> list[str | None]:
    extras = iter(row.get("extra_values") or [])
    values = []
    for name in item.columns:
        values.append(row[f"raw_{name}"] if name in MANDATORY_COLUMNS else next(extras, None))
    return values
