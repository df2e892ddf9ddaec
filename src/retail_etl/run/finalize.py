"""Stage 7, finalize: rewrite the mart snapshots of the months that changed, move each
settled or committed object out of landing (archive, or error for quarantined files) and flip
its ledger status, then remove the lake objects of files that were corrected or set aside."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, or_, select

from retail_etl.config import StorageSettings
from retail_etl.errors import (
    ObjectConflictError,
    ObjectMissingError,
    ObjectReplacedError,
    StorageError,
)
from retail_etl.marts.snapshots import write_snapshots
from retail_etl.run import ledger
from retail_etl.run.ledger import LedgerRow
from retail_etl.run.validate import checksum_of
from retail_etl.storage import ObjectStore
from retail_etl.warehouse import Warehouse
from retail_etl.warehouse.schema import lake_object, product_staging_table

log = logging.getLogger("retail_etl.run")
OUTAGE_AFTER = 3  # moves failing to a prefix none reached: the store is down, not the files


@dataclass(frozen=True)
class Finalized:
    snapshots: int  # mart snapshot objects rewritten
    moved: Moved
    lake_objects_removed: int


@dataclass(frozen=True)
class Moved:
    # ledger id -> why its move is left to a later run, or why its object was not moved
    notes: Mapping[int, str]
    bytes: int  # of the objects moved
    seconds: float  # from the first move's start to the last one's end


def finalize(
    store: ObjectStore,
    warehouse: Warehouse,
    pending: Sequence[LedgerRow],
    months: Iterable[str],
    storage: StorageSettings,
    checkpoint: Callable[[str], None] = lambda _s: None,
    read_versions: Mapping[int, str] | None = None,
) -> Finalized:
    """The snapshots are written while the objects move (both wait on the store, not on each
    other); no file is finished before they are written: a run that dies before that leaves
    its files pending, and the next run rewrites their months' snapshots. read_versions: as
    for move_objects."""
    # the months of files committed by an earlier run that died before its snapshots
    with warehouse.begin() as conn:
        committed = [row.id for row in pending if row.pending_status == ledger.DONE]
        months = set(months) | ledger.affected_months(conn, committed)
    with ThreadPoolExecutor(1, thread_name_prefix="snapshots") as pool:
        snapshots = pool.submit(write_snapshots, store, warehouse, months, storage.lake_prefix)

        def snapshots_written() -> None:
            snapshots.result()  # raises what writing them raised
            checkpoint("snapshots_written")

        moved = move_objects(
            store,
            warehouse,
            storage.landing_prefix,
            pending,
            checkpoint,
            storage.max_concurrency,
            before_finish=snapshots_written,
            read_versions=read_versions,
        )
    removed = remove_superseded_lake_objects(store, warehouse)
    return Finalized(snapshots.result(), moved, removed)


def move_objects(
    store: ObjectStore,
    warehouse: Warehouse,
    landing_prefix: str,
    rows: Sequence[LedgerRow],
    checkpoint: Callable[[str], None] = lambda _s: None,
    concurrency: int = 1,
    before_finish: Callable[[], None] = lambda: None,
    read_versions: Mapping[int, str] | None = None,
) -> Moved:
    """Carry out the committed outcome of each row: move (up to `concurrency` at once), then
    flip A -> pending status, in the rows' order; before_finish is called once, before the
    first flip (or at the end when nothing is flipped).

    A move that fails for one object while others to the same prefix succeed (or that
    would overwrite a different object someone put at its destination) leaves that row
    pending: the next run tries the move again, and the other files are not held up. When
    moves to a prefix fail and none succeeds, the store is the problem: the run stops
    (StorageError).

    An object someone removed from landing or replaced after the run read it is not moved,
    and its row finishes all the same (its outcome is committed): a replacement stays in
    landing, where the next run takes it as a new version of the file. read_versions: ledger
    id -> ObjectStore.version of the object this run read; an object an earlier run read is
    the same when its bytes have the checksum the ledger holds (its size, without one).
    Returns a note for each of those rows and for the rows left pending, and what moved."""
    todo = [row for row in rows if row.pending_status is not None]
    started = ended = time.perf_counter()
    read_versions = read_versions or {}

    def move(row: LedgerRow) -> tuple[StorageError | None, str | None, float]:
        """What the move raised, why the object was not moved, and when it ended."""
        if row.dest_key:
            source = landing_prefix + row.landing_name
            try:
                expected = read_versions.get(row.id) or _version_read_earlier(store, source, row)
                store.move(source, row.dest_key, expected)
            except ObjectReplacedError:
                note = (
                    "not archived: its object in landing was replaced after it was read; "
                    "the next run takes the new one"
                )
                return None, note, time.perf_counter()
            except ObjectMissingError:
                note = "not archived: its object was removed from landing after it was read"
                return None, note, time.perf_counter()
            except StorageError as exc:
                return exc, None, time.perf_counter()
        return None, None, time.perf_counter()

    notes: dict[int, str] = {}
    failures: dict[str, list[StorageError]] = {}  # per destination, before any move there
    moved: set[str] = set()  # destinations (archive, error) some move reached
    moved_bytes = 0
    ready = False
    with ThreadPoolExecutor(concurrency, thread_name_prefix="move") as pool:
        for row, (error, not_moved, end) in zip(todo, pool.map(move, todo), strict=True):
            where = "error" if row.pending_status == ledger.QUARANTINED else "archive"
            if error is not None:
                if where not in moved and not isinstance(error, ObjectConflictError):
                    failed = failures.setdefault(where, [])
                    failed.append(error)
                    if len(failed) >= OUTAGE_AFTER:
                        raise failed[0] from error
                notes[row.id] = f"its move to {row.dest_key} failed, retried next run: {error}"
                log.error("archive move failed", extra={"file": row.file_name, "error": str(error)})
                continue
            if not_moved is not None:
                notes[row.id] = not_moved
                log.warning("object not archived", extra={"file": row.file_name, "why": not_moved})
            elif row.dest_key:
                moved.add(where)
                moved_bytes += row.size or 0
                ended = max(ended, end)
            if not ready:
                before_finish()
                ready = True
            with warehouse.begin() as conn:
                warehouse.fence(conn)
                ledger.finish(conn, row, notes.get(row.id))
            checkpoint(f"archived:{row.file_name}")
    if not ready:
        before_finish()
    for where, failed in failures.items():
        if where not in moved:
            raise failed[0]
    return Moved(notes, moved_bytes, ended - started)


def _version_read_earlier(store: ObjectStore, key: str, row: LedgerRow) -> str | None:
    """The version of the object at key when it is the one an earlier run read for row (it
    stopped before moving it), None when it is gone; ObjectReplacedError when it is another.
    Only a resumed run reads objects again here."""
    version = store.version(key)
    if version is None:
        return None
    if row.checksum is None:  # never read whole (set aside before its download finished)
        size = store.size(key)
        if None not in (row.size, size) and size != row.size:
            raise ObjectReplacedError(f"{key} is not the object that was read")
        return version
    with tempfile.TemporaryDirectory(prefix="retail-etl-verify-") as folder:
        copy = Path(folder) / "object"
        store.download(key, copy)
        if checksum_of(copy) != row.checksum:
            raise ObjectReplacedError(f"{key} is not the object that was read")
    return version


def remove_superseded_lake_objects(store: ObjectStore, warehouse: Warehouse) -> int:
    """Lake objects whose rows are not (or no longer) in the marts: deleted from the bucket,
    then forgotten. Those of corrected files, and those an interrupted attempt uploaded for a
    file that then ended quarantined or duplicate (it vanished from landing before the retry,
    say): left alone, readers of the lake would count rows the marts do not."""
    staging = product_staging_table
    with warehouse.begin() as conn:
        doomed = conn.execute(
            select(lake_object.c.id, lake_object.c.object_key)
            .join(staging, staging.c.id == lake_object.c.ledger_id)
            .where(
                or_(
                    staging.c.superseded_by.is_not(None),
                    staging.c.status.in_([ledger.QUARANTINED, ledger.DUPLICATE]),
                )
            )
        ).fetchall()
    for _id, key in doomed:
        store.delete(key)
    if doomed:
        with warehouse.begin() as conn:
            conn.execute(delete(lake_object).where(lake_object.c.id.in_([i for i, _k in doomed])))
    return len(doomed)
