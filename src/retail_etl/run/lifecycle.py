"""What surrounds a run's stages: the run lock and its heartbeat, the run log row, the stage
timers and the work folder."""

from __future__ import annotations

import errno
import json
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, insert, update

from retail_etl.config import Settings
from retail_etl.errors import WarehouseError, WorkFolderError
from retail_etl.progress import Progress
from retail_etl.redact import redact
from retail_etl.run.summary import RunSummary
from retail_etl.warehouse import Warehouse, bulk, lock_holder
from retail_etl.warehouse.schema import rule_count, run_log

log = logging.getLogger("retail_etl.run")


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


@contextmanager
def run_lock(warehouse: Warehouse, wait_seconds: float) -> Iterator[None]:
    """Hold the single run lock (waiting up to wait_seconds for it), kept fresh by a
    heartbeat. Raises LockedError when another run holds it."""
    holder = lock_holder()
    warehouse.acquire_lock(holder, wait_seconds)
    try:
        every = max(1.0, warehouse.settings.stale_lock_seconds / 5)
        with _Heartbeat(warehouse, holder, every):
            yield
    finally:
        # A lock left behind is taken over by the next run (its holder is dead); the run's
        # own outcome or error matters more than a failed release.
        try:
            warehouse.release_lock(holder)
        except WarehouseError:
            log.warning("could not release the run lock", exc_info=True)


def start_run(warehouse: Warehouse, engine: str) -> int:
    """The run's row in the run log; its id is the run id (always increasing)."""
    with warehouse.begin() as conn:
        result = conn.execute(
            insert(run_log).values(started_at=datetime.now(), outcome="running", engine=engine)
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]


def record_run(warehouse: Warehouse, summary: RunSummary) -> None:
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
        rows = [
            {
                "run_id": summary.run_id,
                "ledger_id": item.id,
                "rule": rule,
                "file_name": item.file_name,
                "occurrences": n,
            }
            for item in summary.files
            for rule, n in item.rules.items()
        ]
        conn.execute(delete(rule_count).where(rule_count.c.run_id == summary.run_id))
        bulk.insert_many(conn, rule_count, rows)


def first_line(exc: BaseException) -> str:
    """What a failed run's log and summary say of its error."""
    return redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def record(warehouse: Warehouse, summary: RunSummary, timer: StageTimer) -> RunSummary:
    """The summary with the timer's seconds, recorded in the run log (when it can be)."""
    summary = summary.timed(timer.elapsed, timer.seconds)
    try:
        record_run(warehouse, summary)
    except Exception:  # noqa: BLE001 - the run's own outcome or error matters more
        log.warning("could not record the run outcome", exc_info=True)
    return summary


class StageTimer:
    """Times each stage under its own name, and shows it on the progress display."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextmanager
    def __call__(self, stage: str, total: float | None = None) -> Iterator[None]:
        started = time.perf_counter()
        self.progress.start(stage, total)
        try:
            yield
        finally:
            self.progress.finish(stage)
            self.seconds[stage] = round(
                self.seconds.get(stage, 0.0) + time.perf_counter() - started, 3
            )

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def fresh_work_dir(settings: Settings, run_id: int) -> Path:
    """The run's work folder. Those of runs that died are garbage: their files are redone
    from the bucket."""
    root = settings.engine.work_dir
    for stale in root.glob("run-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return root / f"run-{run_id}"


def work_folder_error(settings: Settings, exc: OSError) -> WorkFolderError | None:
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
