"""`retail-etl run`: the stages in order, under the run lock, recorded in the run log.

    discover -> fetch -> triage -> transform -> publish -> commit -> finalize

(the engine starts reading the files that have arrived during fetch: run/read_ahead.py).
Each stage takes what the earlier ones returned and returns a frozen result; only the ledger
(run/ledger.py) changes a file's status. This module only sequences the stages, times each one
under its own name, and builds the run's summary from their results at the end.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from functools import partial
from pathlib import Path

from retail_etl.config import Settings
from retail_etl.engines.dimensions import prefetch_dimensions
from retail_etl.logs import run_context
from retail_etl.progress import NullProgress, Progress
from retail_etl.reports.metrics import write_metrics
from retail_etl.run import isolate
from retail_etl.run.commit import Committed, commit
from retail_etl.run.discover import discover
from retail_etl.run.fetch import fetch
from retail_etl.run.finalize import finalize
from retail_etl.run.lifecycle import (
    StageTimer,
    first_line,
    fresh_work_dir,
    record,
    run_lock,
    start_run,
    work_folder_error,
)
from retail_etl.run.publish import Published, publish
from retail_etl.run.read_ahead import ReadAhead
from retail_etl.run.summary import RunSummary, summarize
from retail_etl.run.transform import engine_out, transform
from retail_etl.run.triage import settle_copies, triage
from retail_etl.storage import open_store
from retail_etl.warehouse import Warehouse

log = logging.getLogger("retail_etl.run")
Checkpoint = Callable[[str], None]


def run(
    settings: Settings,
    engine_name: str | None = None,
    progress: Progress | None = None,
    checkpoint: Checkpoint = lambda _stage: None,
    wait_seconds: float = 0.0,
    metrics_file: Path | None = None,
) -> RunSummary:
    """Process every pending landed object exactly once. Raises RetailEtlError subclasses.

    Only one run works at a time: another run holding the lock makes this one wait up to
    wait_seconds, then raise LockedError. metrics_file: where to write the run's metrics
    (reports/metrics.py), whatever its outcome."""
    warehouse = Warehouse(settings.warehouse)
    engine = engine_name or settings.engine.name
    timer = StageTimer(progress or NullProgress())
    started = datetime.now()
    try:
        warehouse.ensure_installed()
        with run_lock(warehouse, wait_seconds):
            summary = _logged(settings, warehouse, engine, timer, checkpoint)
    except BaseException as exc:
        if metrics_file is not None:  # the run's own error matters more than the metrics'
            failed = RunSummary(0, engine, "failed", message=first_line(exc))
            failed = failed.timed(timer.elapsed, timer.seconds)
            write_metrics(metrics_file, failed, started, datetime.now(), warehouse, quiet=True)
        raise
    else:
        if metrics_file is not None:
            write_metrics(metrics_file, summary, started, datetime.now(), warehouse)
        return summary
    finally:
        warehouse.dispose()


def _logged(
    settings: Settings,
    warehouse: Warehouse,
    engine: str,
    timer: StageTimer,
    checkpoint: Checkpoint,
) -> RunSummary:
    """The stages, recorded in the run log as succeeded or failed (with the first line of
    the error)."""
    run_id = start_run(warehouse, engine)
    with run_context(run_id):
        log.info("run started", extra={"engine": engine})
        try:
            try:
                summary = _stages(settings, warehouse, run_id, engine, timer, checkpoint)
            except OSError as exc:  # the stores and the warehouse raise their own errors
                error = work_folder_error(settings, exc)
                if error is None:
                    raise
                raise error from exc
        except BaseException as exc:
            message = first_line(exc)
            log.error("run failed", extra={"error": message})
            record(warehouse, RunSummary(run_id, engine, "failed", message=message), timer)
            raise
        summary = record(warehouse, summary, timer)
        log.info("run finished", extra={"summary": asdict(summary) | {"files": len(summary.files)}})
    return summary


def _stages(
    settings: Settings,
    warehouse: Warehouse,
    run_id: int,
    engine: str,
    timed: StageTimer,
    checkpoint: Checkpoint,
) -> RunSummary:
    storage = settings.storage
    store = open_store(storage)
    work_dir = fresh_work_dir(settings, run_id)
    written_before = warehouse.rows_written

    with timed("discover"):
        found = discover(store, warehouse, storage.landing_prefix, storage.error_prefix, run_id)
    checkpoint("discovered")
    dims = prefetch_dimensions(warehouse) if found.todo else None  # while the files download
    set_aside: list[isolate.SetAside] = []
    transformed = None
    with ReadAhead(settings, engine, dims, run_id, engine_out(work_dir)) as ahead:
        with timed("fetch", sum(row.size or 0 for row in found.todo)):
            advance = partial(timed.progress.advance, "fetch")
            landing = work_dir / "landing"
            fetched = fetch(store, found.todo, storage, landing, advance, arrived=ahead)
        checkpoint("downloaded")
        with timed("triage"):
            triaged = triage(warehouse, fetched, storage)
        checkpoint("validated")
        if triaged.batch and dims is not None:
            with timed("transform"):
                transformed = transform(
                    settings,
                    engine,
                    store,
                    warehouse,
                    triaged,
                    run_id,
                    work_dir,
                    dims.result(),
                    ahead.limits,
                    ahead.take(),
                )
                del dims  # a million customers' names: not kept through the commit
                set_aside.append(
                    isolate.set_aside(
                        warehouse,
                        storage.error_prefix,
                        triaged,
                        transformed.set_aside,
                        transformed.gated_counts,
                        transformed.gated_rules,
                    )
                )

    published, committed = Published(0, 0, 0, 0), Committed((), (), {}, frozenset(), {})
    if transformed is not None:
        checkpoint("enriched")
        batch = tuple(b for b in triaged.batch if b.ledger_id not in transformed.set_aside)
        if transformed.manifest is not None:
            manifest = transformed.manifest
            with timed("publish"):  # the lake index; the uploads run beside the commit
                publishing = publish(
                    store, warehouse, manifest, batch, triaged, storage, work_dir, checkpoint
                )
            with publishing, timed("commit"):
                committed = commit(warehouse, manifest, batch, triaged, settings, publishing.wait)
                published = publishing.wait()
                aside = isolate.set_aside(
                    warehouse, storage.error_prefix, triaged, committed.set_aside
                )
                set_aside.append(aside)
            checkpoint("marts_committed")

    with timed("finalize"):
        why_aside = {o.id: o.message or "" for aside in set_aside for o in aside.outcomes}
        copies = settle_copies(warehouse, triaged, storage, why_aside)
        pending = [*found.pending, *triaged.settled, *committed.committed, *copies.settled]
        pending += [row for aside in set_aside for row in aside.settled]
        read_versions = {f.row.id: f.version for f in fetched.files if f.version is not None}
        finalized = finalize(
            store, warehouse, pending, committed.months, storage, checkpoint, read_versions
        )
    shutil.rmtree(work_dir, ignore_errors=True)
    checkpoint("finished")
    return summarize(
        run_id,
        engine,
        [
            *found.quarantined,
            *triaged.outcomes,
            *(outcome for aside in set_aside for outcome in aside.outcomes),
            *committed.outcomes,
            *copies.outcomes,
        ],
        finalized.moved.notes,
        seen=len(found.new),
        resumed=len(found.resumed),
        corrected=sum(1 for row in committed.committed if row.id in triaged.corrections),
        lake_objects=published.lake_objects,
        lake_bytes=published.lake_bytes,
        rejected_files=published.rejected_files,
        mart_rows_changed=committed.mart_rows,
        warehouse_rows_written=warehouse.rows_written - written_before,
        stage_bytes={
            "fetch": fetched.bytes,
            "publish": published.lake_bytes + published.rejected_bytes,
            "archive": finalized.moved.bytes,
        },
        transfer_seconds={
            "fetch": fetched.seconds,
            "publish": published.seconds,
            "archive": finalized.moved.seconds,
        },
    )
