"""`retail-etl run`: the stages in order, under the run lock, recorded in the run log."""

from __future__ import annotations

import errno
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from pathlib import Path

from sqlalchemy import insert, update

from retail_etl import archive, daily, isolate, ledger, publish
from retail_etl.config import Settings, StorageSettings
from retail_etl.discover import discover
from retail_etl.download import Fetched, download_all
from retail_etl.engines import (
    BatchFile,
    Dimensions,
    EngineResult,
    FileCounts,
    RowLimits,
    open_engine,
)
from retail_etl.enrich import load_dimensions
from retail_etl.errors import EngineError, WarehouseError, WorkFolderError
from retail_etl.ledger import LedgerRow
from retail_etl.logs import run_context
from retail_etl.progress import NullProgress, Progress
from retail_etl.redact import redact
from retail_etl.storage import ObjectStore, open_store
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
                if not warehouse.heartbeat(holder):
                    # Warehouse.fence stops the run at its next commit.
                    log.error("the run lock was taken over by another run")
                    return
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
    wait_seconds: float = 0.0,
) -> RunSummary:
    """Process every pending landed object exactly once. Raises RetailEtlError subclasses.

    Only one run works at a time: another run holding the lock makes this one wait up to
    wait_seconds, then raise LockedError."""
    progress = progress or NullProgress()
    warehouse = Warehouse(settings.warehouse)
    try:
        warehouse.create_all()
        holder = lock_holder()
        warehouse.acquire_lock(holder, wait_seconds)
        try:
            heartbeat_every = max(1.0, settings.warehouse.stale_lock_seconds / 5)
            with _Heartbeat(warehouse, holder, heartbeat_every):
                return _run_locked(settings, warehouse, engine_name, progress, checkpoint)
        finally:
            # A lock left behind is taken over by the next run (its holder is dead); the
            # run's own outcome or error matters more than a failed release.
            try:
                warehouse.release_lock(holder)
            except WarehouseError:
                log.warning("could not release the run lock", exc_info=True)
    finally:
        warehouse.dispose()


def _start_run(warehouse: Warehouse, engine: str) -> int:
    with warehouse.begin() as conn:
        result = conn.execute(
            insert(run_log).values(started_at=datetime.now(), outcome="running", engine=engine)
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]


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
    with run_context(run_id):
        log.info("run started", extra={"engine": engine_chosen})
        try:
            try:
                _stages(settings, warehouse, summary, progress, checkpoint)
            except OSError as exc:  # the stores and the warehouse raise their own errors
                error = _work_folder_error(settings, exc)
                if error is None:
                    raise
                raise error from exc
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


def _work_folder_error(settings: Settings, exc: OSError) -> WorkFolderError | None:
    """The error as the work folder's, when it is about a file there or a full disk."""
    path = exc.filename2 or exc.filename  # a copy's destination, else the one path
    work_dir = settings.engine.work_dir.resolve()
    inside = path is not None and work_dir in Path(str(path)).resolve().parents
    if not inside and exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return None
    where = f" ({path})" if path else ""
    return WorkFolderError(
        f"work folder {settings.engine.work_dir}: {exc.strerror or exc}{where}; the next run "
        "redoes the unfinished files"
    )


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


@dataclass
class _Triage:
    """File-level outcomes of a run's downloads: what goes to the engine, what is settled."""

    batch: list[BatchFile] = field(default_factory=list)
    checksums: dict[int, str] = field(default_factory=dict)
    corrections: dict[int, int] = field(default_factory=dict)  # new ledger id -> replaced id
    settled: list[LedgerRow] = field(default_factory=list)  # E / D with their destination


def _triage(
    warehouse: Warehouse, fetched: list[Fetched], storage: StorageSettings, summary: RunSummary
) -> _Triage:
    """Quarantine unusable files, set duplicates aside, spot corrections (one transaction)."""
    triage = _Triage()
    with warehouse.begin() as conn:
        warehouse.fence(conn)
        usable = [f.check.checksum for f in fetched if f.check is not None and f.check.ok]
        known = ledger.processed_by_checksum(conn, sorted(set(usable)))
        current = ledger.processed_by_name(conn, [f.row.file_name for f in fetched])
        for item in fetched:
            row, check = item.row, item.check
            message: str | None
            if item.problem is not None:  # unreadable, still in landing: moved to error
                dest = archive.archive_key(storage.error_prefix, row)
                ledger.set_pending(conn, row.id, ledger.QUARANTINED, dest, message=item.problem)
                triage.settled.append(_with_pending(row, ledger.QUARANTINED, dest))
                summary.files.append(FileOutcome(row.id, row.file_name, "E", message=item.problem))
                summary.files_quarantined += 1
                continue
            if check is None or item.local_path is None:
                message = "object vanished from landing before it was processed"
                ledger.finish(conn, row.id, ledger.QUARANTINED, message)
                summary.files.append(FileOutcome(row.id, row.file_name, "E", message=message))
                continue
            if not check.ok:
                status, dest, message = (
                    ledger.QUARANTINED,
                    archive.archive_key(storage.error_prefix, row),
                    check.problem,
                )
                summary.files_quarantined += 1
            elif check.checksum in known:
                original_id, original_name = known[check.checksum]
                status, dest = ledger.DUPLICATE, archive.archive_key(storage.archive_prefix, row)
                message = f"duplicate of {original_name} (file id {original_id})"
                summary.files_duplicate += 1
            else:
                known[check.checksum] = (row.id, row.file_name)
                previous = current.get(row.file_name)
                if previous is not None and previous[0] != row.id:
                    triage.corrections[row.id] = previous[0]
                triage.checksums[row.id] = check.checksum
                triage.batch.append(BatchFile(row.id, row.file_name, item.local_path, check.header))
                continue
            ledger.set_pending(
                conn,
                row.id,
                status,
                dest,
                checksum=check.checksum,
                size=check.size,
                message=message,
            )
            triage.settled.append(_with_pending(row, status, dest))
            summary.files.append(FileOutcome(row.id, row.file_name, status, message=message))
    summary.files_corrected = len(triage.corrections)
    return triage


def _process(
    settings: Settings,
    warehouse: Warehouse,
    store: ObjectStore,
    rows_by_id: dict[int, LedgerRow],
    triage: _Triage,
    work_dir: Path,
    summary: RunSummary,
    progress: Progress,
    checkpoint: Checkpoint,
) -> tuple[list[LedgerRow], set[str]]:
    """Engine, lake, rejected rows and the marts transaction for the files of the batch.
    Returns the rows now pending their archive move and the months whose marts changed."""
    storage = settings.storage
    with _timed(summary, "enrich", progress):
        dims = load_dimensions(warehouse)
        limits = RowLimits.of(settings.rules, date.today())
        result, unusable = _run_engine(settings, triage.batch, dims, limits, summary, work_dir)
    pending = _set_aside(warehouse, storage, rows_by_id, triage, unusable, summary)
    checkpoint("enriched")
    if result is None:
        return pending, set()

    with _timed(summary, "publish", progress):
        planned = publish.plan_lake_objects(result.rows_dir, storage.lake_prefix)
        summary.lake_objects = publish.upload_lake(
            store, warehouse, planned, [b.ledger_id for b in triage.batch], storage.max_concurrency
        )
        checkpoint("lake_written")
        summary.rejected_files = publish.write_rejected(
            store,
            result,
            triage.batch,
            {i: r.run_id for i, r in rows_by_id.items()},
            storage.error_prefix,
            work_dir,
        )
        checkpoint("rejected_written")
        per_day = daily.compute(result.rows_dir)
        months: set[str] = set()

        def commit(part: list[BatchFile]) -> None:
            changes = publish.commit_batch(
                warehouse,
                result,
                per_day,
                part,
                triage.checksums,
                triage.corrections,
                {item.ledger_id: _archive_key(storage, rows_by_id, item) for item in part},
                settings.rules,
            )
            months.update(changes.months)

        committed = isolate.bisect(
            triage.batch, commit, "the warehouse commit", lambda item: item.file_name
        )
        checkpoint("marts_committed")
    pending += _set_aside(
        warehouse,
        storage,
        rows_by_id,
        triage,
        {
            item.ledger_id: f"cannot be stored in the warehouse: {why}"
            for item, why in committed.set_aside
        },
        summary,
    )

    for item in triage.batch:
        counts = result.counts.get(item.ledger_id, FileCounts())
        message = None
        if item.ledger_id in triage.corrections:
            message = f"correction of file id {triage.corrections[item.ledger_id]}"
        summary.files.append(
            FileOutcome(
                item.ledger_id,
                item.file_name,
                ledger.DONE,
                counts.rows_read,
                counts.rows_valid,
                counts.rows_rejected,
                message,
            )
        )
        summary.rows_read += counts.rows_read
        summary.rows_valid += counts.rows_valid
        summary.rows_rejected += counts.rows_rejected
        pending.append(
            _with_pending(
                rows_by_id[item.ledger_id], ledger.DONE, _archive_key(storage, rows_by_id, item)
            )
        )
    summary.files_processed = len(triage.batch)
    return pending, months


def _archive_key(
    storage: StorageSettings, rows_by_id: dict[int, LedgerRow], item: BatchFile
) -> str:
    return archive.archive_key(storage.archive_prefix, rows_by_id[item.ledger_id])


def _run_engine(
    settings: Settings,
    batch: list[BatchFile],
    dims: Dimensions,
    limits: RowLimits,
    summary: RunSummary,
    work_dir: Path,
) -> tuple[EngineResult | None, dict[int, str]]:
    """The engine over the batch, and the files it had to leave out, with why.

    When the engine fails on the input itself (not on the machine: disk, memory), the files
    at fault are found by bisection (isolate.py) and left out, so that one such file does not
    stop every file of every run from now on. A file whose rows sum, for one mart row, to more
    than the warehouse can hold is left out too."""
    unusable: dict[int, str] = {}

    def attempt(files: list[BatchFile], out: Path) -> EngineResult:
        engine = open_engine(settings.engine, summary.engine)
        try:
            return engine.process(files, dims, limits, summary.run_id, out)
        finally:
            engine.close()

    def probe(files: list[BatchFile]) -> None:
        try:
            attempt(files, work_dir / "probe")
        finally:
            shutil.rmtree(work_dir / "probe", ignore_errors=True)

    while batch:
        try:
            result = attempt(batch, work_dir / "out")
        except Exception as exc:
            if not (isolate.is_input_fault(exc) or isolate.is_unforeseen(exc)):
                raise
            shutil.rmtree(work_dir / "out", ignore_errors=True)
            found = isolate.bisect(
                batch, probe, "the engine", lambda item: item.file_name, failed_with=exc
            )
            if not found.set_aside:  # only fails together: nothing to set aside
                raise EngineError(
                    "the engine fails on the batch but on none of its files alone: "
                    + isolate.describe(exc)
                ) from exc
            unusable |= {
                item.ledger_id: f"the engine cannot read it: {why}" for item, why in found.set_aside
            }
            batch = list(found.passed)
            continue
        unstorable = publish.unstorable_files(result)
        if not unstorable:
            return result, unusable
        unusable |= unstorable
        batch = [item for item in batch if item.ledger_id not in unstorable]
        shutil.rmtree(work_dir / "out", ignore_errors=True)
    return None, unusable


def _set_aside(
    warehouse: Warehouse,
    storage: StorageSettings,
    rows_by_id: dict[int, LedgerRow],
    triage: _Triage,
    problems: dict[int, str],
    summary: RunSummary,
) -> list[LedgerRow]:
    """Quarantine files of the batch that cannot go on (their messages name the problem);
    the batch goes on without them."""
    pending: list[LedgerRow] = []
    if not problems:
        return pending
    with warehouse.begin() as conn:
        warehouse.fence(conn)
        for ledger_id, message in problems.items():
            row = rows_by_id[ledger_id]
            dest = archive.archive_key(storage.error_prefix, row)
            ledger.set_pending(
                conn,
                ledger_id,
                ledger.QUARANTINED,
                dest,
                checksum=triage.checksums.pop(ledger_id),
                message=message,
            )
            triage.corrections.pop(ledger_id, None)
            pending.append(_with_pending(row, ledger.QUARANTINED, dest))
            summary.files.append(FileOutcome(ledger_id, row.file_name, "E", message=message))
            log.warning("file set aside", extra={"file": row.file_name, "problem": message})
    triage.batch = [item for item in triage.batch if item.ledger_id not in problems]
    summary.files_quarantined += len(problems)
    summary.files_corrected = len(triage.corrections)
    return pending


def _stages(
    settings: Settings,
    warehouse: Warehouse,
    summary: RunSummary,
    progress: Progress,
    checkpoint: Checkpoint,
) -> None:
    storage = settings.storage
    store = open_store(storage)
    work_root = settings.engine.work_dir
    # Work folders of runs that died are garbage: their files are redone from the bucket.
    for stale in work_root.glob("run-*"):
        shutil.rmtree(stale, ignore_errors=True)
    work_dir = work_root / f"run-{summary.run_id}"

    with _timed(summary, "discover", progress):
        found = discover(
            store, warehouse, storage.landing_prefix, storage.error_prefix, summary.run_id
        )
    summary.files_seen = len(found.new)
    summary.files_resumed = len(found.resumed)
    for row in found.new:  # quarantined by name at registration
        if row.pending_status == ledger.QUARANTINED:
            message = f"quarantined by name: {ledger.name_problem(row.landing_name)}"
            summary.files.append(FileOutcome(row.id, row.file_name, "E", message=message))
            summary.files_quarantined += 1
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

    with _timed(summary, "validate", progress):
        triage = _triage(warehouse, fetched, storage, summary)
    finishing += triage.settled
    checkpoint("validated")

    months: set[str] = set()
    if triage.batch:
        pending, months = _process(
            settings,
            warehouse,
            store,
            {row.id: row for row in found.work},
            triage,
            work_dir,
            summary,
            progress,
            checkpoint,
        )
        finishing += pending

    with _timed(summary, "archive", progress):
        with warehouse.begin() as conn:
            resumed_done = [r.id for r in found.resumed if r.pending_status == ledger.DONE]
            months |= ledger.affected_months(conn, resumed_done)
        publish.write_snapshots(store, warehouse, months, storage.lake_prefix)
        checkpoint("snapshots_written")
        stuck = archive.finalize(store, warehouse, storage.landing_prefix, finishing, checkpoint)
        for outcome in summary.files:
            if outcome.id in stuck:
                outcome.message = "; ".join(filter(None, [outcome.message, stuck[outcome.id]]))
        archive.remove_superseded_lake_objects(store, warehouse)
    shutil.rmtree(work_dir, ignore_errors=True)
    checkpoint("finished")


def _with_pending(row: LedgerRow, status: str, dest: str | None) -> LedgerRow:
    return replace(row, pending_status=status, dest_key=dest)
