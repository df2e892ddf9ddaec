"""`retail-etl run`: the stages in order, under the run lock, recorded in the run log."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy import insert, update

from retail_etl import archive, ledger, publish
from retail_etl.config import Settings
from retail_etl.discover import discover
from retail_etl.download import download_all
from retail_etl.engines import BatchFile, open_engine
from retail_etl.enrich import enrich, load_dimensions
from retail_etl.ledger import LedgerRow
from retail_etl.progress import NullProgress, Progress
from retail_etl.redact import redact
from retail_etl.storage import open_store
from retail_etl.warehouse import Warehouse, lock_holder
from retail_etl.warehouse.schema import run_log

log = logging.getLogger("retail_etl.run")
Checkpoint = Callable[[str], None]


@dataclass
class FileOutcome:
    id: int
    file_name: str
    status: str
    rows_read: int = 0
    rows_valid: int = 0
    rows_rejected: int = 0
    message: str | None = None


@dataclass
class RunSummary:
    run_id: int
    engine: str
    outcome: str = "running"
    files_seen: int = 0
    files_resumed: int = 0
    files_processed: int = 0
    files_quarantined: int = 0
    files_duplicate: int = 0
    files_corrected: int = 0
    rows_read: int = 0
    rows_valid: int = 0
    rows_rejected: int = 0
    lake_objects: int = 0
    rejected_files: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    files: list[FileOutcome] = field(default_factory=list)
    message: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)


class _Heartbeat:
    """Keeps the run lock fresh while a long stage runs, so it is not taken over."""

    def __init__(self, warehouse: Warehouse, holder: str, every: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, args=(warehouse, holder, every), daemon=True
        )

    def _beat(self, warehouse: Warehouse, holder: str, every: float) -> None:
        while not self._stop.wait(every):
            try:
                warehouse.heartbeat(holder)
            except Exception:  # noqa: BLE001 - a missed beat is retried; the run goes on
                log.warning("lock heartbeat failed", exc_info=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run(
    settings: Settings,
    engine_name: str | None = None,
    progress: Progress | None = None,
    checkpoint: Checkpoint = lambda _stage: None,
) -> RunSummary:
    """Process every pending landed object exactly once. Raises RetailEtlError subclasses."""
    progress = progress or NullProgress()
    warehouse = Warehouse(settings.warehouse)
    try:
        warehouse.create_all()
        holder = lock_holder()
        warehouse.acquire_lock(holder)
        try:
            heartbeat_every = max(1.0, settings.warehouse.stale_lock_seconds / 5)
            with _Heartbeat(warehouse, holder, heartbeat_every):
                return _run_locked(settings, warehouse, engine_name, progress, checkpoint)
        finally:
            warehouse.release_lock(holder)
    finally:
        warehouse.dispose()


def _start_run(warehouse: Warehouse, engine: str) -> int:
    with warehouse.begin() as conn:
        result = conn.execute(
            insert(run_log).values(started_at=datetime.now(), outcome="running", engine=engine)
        )
        return int(result.inserted_primary_key[0])


def _record_run(warehouse: Warehouse, summary: RunSummary) -> None:
    with warehouse.begin() as conn:
        conn.execute(
            update(run_log)
            .where(run_log.c.run_id == summary.run_id)
            .values(
                finished_at=datetime.now(),
                outcome=summary.outcome,
                files_seen=summary.files_seen,
                files_processed=summary.files_processed,
                files_quarantined=summary.files_quarantined,
                files_duplicate=summary.files_duplicate,
                files_corrected=summary.files_corrected,
                rows_read=summary.rows_read,
                rows_valid=summary.rows_valid,
                rows_rejected=summary.rows_rejected,
                seconds=round(summary.seconds, 3),
                stage_seconds=json.dumps(summary.stage_seconds),
                message=summary.message,
            )
        )


def _run_locked(
    settings: Settings,
    warehouse: Warehouse,
    engine_name: str | None,
    progress: Progress,
    checkpoint: Checkpoint,
) -> RunSummary:
    engine_chosen = engine_name or settings.engine.name
    run_id = _start_run(warehouse, engine_chosen)
    summary = RunSummary(run_id=run_id, engine=engine_chosen)
    started = time.perf_counter()
    from retail_etl.logs import run_context

    with run_context(run_id):
        log.info("run started", extra={"engine": engine_chosen})
        try:
            _stages(settings, warehouse, summary, progress, checkpoint)
            summary.outcome = "succeeded"
        except BaseException as exc:
            summary.outcome = "failed"
            summary.message = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            log.error("run failed", extra={"error": summary.message})
            raise
        finally:
            summary.seconds = time.perf_counter() - started
            try:
                _record_run(warehouse, summary)
            except Exception:  # noqa: BLE001 - the original error matters more
                log.warning("could not record the run outcome", exc_info=True)
        log.info("run finished", extra={"summary": asdict(summary) | {"files": len(summary.files)}})
    return summary


@contextmanager
def _timed(
    summary: RunSummary, stage: str, progress: Progress, total: float | None = None
) -> Iterator[None]:
    started = time.perf_counter()
    progress.start(stage, total)
    try:
        yield
    finally:
        progress.finish(stage)
        summary.stage_seconds[stage] = round(
            summary.stage_seconds.get(stage, 0.0) + time.perf_counter() - started, 3
        )


def _stages(
    settings: Settings,
    warehouse: Warehouse,
    summary: RunSummary,
    progress: Progress,
    checkpoint: Checkpoint,
) -> None:
    storage = settings.storage
    store = open_store(storage)
    run_id = summary.run_id
    work_dir = settings.engine.work_dir / f"run-{run_id}"

    with _timed(summary, "discover", progress):
        found = discover(store, warehouse, storage.landing_prefix, run_id)
    summary.files_seen = len(found.new)
    summary.files_resumed = len(found.resumed)
    checkpoint("discovered")

    # Rows whose outcome is already committed only need their move; the rest start over.
    finishing = [row for row in found.work if row.pending_status is not None]
    todo = [row for row in found.work if row.pending_status is None]

    with _timed(summary, "download", progress, sum(row.size or 0 for row in todo)):
        fetched = download_all(
            store,
            todo,
            storage.landing_prefix,
            work_dir / "landing",
            storage.max_concurrency,
            lambda n: progress.advance("download", n),
        )
    checkpoint("downloaded")

    # File-level outcomes: quarantine, duplicates, corrections.
    batch: list[BatchFile] = []
    checksums: dict[int, str] = {}
    corrections: dict[int, int] = {}
    with _timed(summary, "validate", progress), warehouse.begin() as conn:
        valid = [f for f in fetched if f.check is not None and f.check.ok]
        known = ledger.processed_by_checksum(conn, sorted({f.check.checksum for f in valid}))
        current = ledger.processed_by_name(conn, [f.row.file_name for f in valid])
        for item in fetched:
            row, check = item.row, item.check
            if check is None:
                ledger.finish(
                    conn,
                    row.id,
                    ledger.QUARANTINED,
                    "object vanished from landing before it was processed",
                )
                summary.files.append(
                    FileOutcome(
                        row.id, row.file_name, ledger.QUARANTINED, message="object vanished"
                    )
                )
                continue
            if not check.ok:
                dest = archive.archive_key(storage.error_prefix, row)
                ledger.set_pending(
                    conn,
                    row.id,
                    ledger.QUARANTINED,
                    dest,
                    checksum=check.checksum,
                    size=check.size,
                    message=check.problem,
                )
                finishing.append(_with_pending(row, ledger.QUARANTINED, dest))
                summary.files_quarantined += 1
                summary.files.append(
                    FileOutcome(row.id, row.file_name, ledger.QUARANTINED, message=check.problem)
                )
                continue
            original = known.get(check.checksum)
            if original is not None:
                dest = archive.archive_key(storage.archive_prefix, row)
                message = f"duplicate of {original[1]} (file id {original[0]})"
                ledger.set_pending(
                    conn,
                    row.id,
                    ledger.DUPLICATE,
                    dest,
                    checksum=check.checksum,
                    size=check.size,
                    message=message,
                )
                finishing.append(_with_pending(row, ledger.DUPLICATE, dest))
                summary.files_duplicate += 1
                summary.files.append(
                    FileOutcome(row.id, row.file_name, ledger.DUPLICATE, message=message)
                )
                continue
            known[check.checksum] = (row.id, row.file_name)
            previous = current.get(row.file_name)
            if previous is not None and previous[0] != row.id:
                corrections[row.id] = previous[0]
            checksums[row.id] = check.checksum
            assert item.local_path is not None
            batch.append(BatchFile(row.id, row.file_name, item.local_path, check.header))
    summary.files_corrected = len(corrections)
    checkpoint("validated")

    if batch:
        engine = open_engine(settings.engine, summary.engine)
        try:
            with _timed(summary, "enrich", progress):
                dims = load_dimensions(warehouse)
                result = enrich(engine, batch, dims, run_id, work_dir / "out")
        finally:
            engine.close()
        checkpoint("enriched")

        with _timed(summary, "publish", progress):
            planned = publish.plan_lake_objects(result.rows_dir, storage.lake_prefix)
            summary.lake_objects = publish.upload_lake(
                store, warehouse, planned, [b.ledger_id for b in batch], storage.max_concurrency
            )
            checkpoint("lake_written")
            registered = {row.id: row.run_id for row in found.work}
            summary.rejected_files = publish.write_rejected(
                store, result, batch, registered, storage.error_prefix, work_dir
            )
            checkpoint("rejected_written")
            archive_keys = {
                row.id: archive.archive_key(storage.archive_prefix, row)
                for row in found.work
                if row.id in checksums
            }
            changes = publish.commit_batch(
                warehouse,
                result,
                batch,
                checksums,
                corrections,
                archive_keys,
                settings.rules.incentive_rate,
            )
            checkpoint("marts_committed")
        for item in batch:
            counts = result.counts.get(item.ledger_id)
            outcome = FileOutcome(item.ledger_id, item.file_name, ledger.DONE)
            if counts:
                outcome.rows_read, outcome.rows_valid, outcome.rows_rejected = (
                    counts.rows_read,
                    counts.rows_valid,
                    counts.rows_rejected,
                )
            if item.ledger_id in corrections:
                outcome.message = f"correction of file id {corrections[item.ledger_id]}"
            summary.files.append(outcome)
            summary.rows_read += outcome.rows_read
            summary.rows_valid += outcome.rows_valid
            summary.rows_rejected += outcome.rows_rejected
            finishing.append(
                _with_pending(
                    next(r for r in found.work if r.id == item.ledger_id),
                    ledger.DONE,
                    archive_keys[item.ledger_id],
                )
            )
        summary.files_processed = len(batch)
        months = set(changes.months)
    else:
        months = set()

    with _timed(summary, "archive", progress):
        with warehouse.begin() as conn:
            months |= ledger.affected_months(
                conn, [r.id for r in finishing if r.pending_status == ledger.DONE]
            )
        publish.write_snapshots(store, warehouse, months, storage.lake_prefix)
        checkpoint("snapshots_written")
        archive.finalize(store, warehouse, storage.landing_prefix, finishing, checkpoint)
        archive.remove_superseded_lake_objects(store, warehouse)
    shutil.rmtree(work_dir, ignore_errors=True)
    checkpoint("finished")


def _with_pending(row: LedgerRow, status: str, dest: str | None) -> LedgerRow:
    return LedgerRow(
        row.id, row.file_name, row.status, row.run_id, row.size, row.checksum, status, dest
    )
