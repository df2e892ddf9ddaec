"""`retail-etl run --dry-run`: what a run would do now, without doing it.

The same stages as a run, up to the engine: discovery, downloads, every file and row check and
the engine itself, in a scratch folder; then, instead of publish, commit and finalize, the
summary a run would return: each file's outcome, rows valid and rejected per rule, and the
mart rows each month would gain or change. Nothing is written to the bucket, the warehouse or
the ledger, and no lock is taken: a real run may start at any time. New files get
provisional ids (the ledger assigns the real ones when a run registers them).
"""

from __future__ import annotations

import shutil
import tempfile
from functools import partial
from pathlib import Path

from sqlalchemy import func, select

from retail_etl.config import Settings
from retail_etl.engines.dimensions import load_dimensions
from retail_etl.marts import merge
from retail_etl.progress import NullProgress, Progress
from retail_etl.run import ledger
from retail_etl.run.commit import done_outcome
from retail_etl.run.discover import name_problem_message, survey
from retail_etl.run.fetch import fetch
from retail_etl.run.isolate import aside_outcome
from retail_etl.run.ledger import LedgerRow
from retail_etl.run.lifecycle import StageTimer
from retail_etl.run.summary import FileOutcome, RunSummary, summarize
from retail_etl.run.transform import transform
from retail_etl.run.triage import copy_verdicts, judge, outcomes_of
from retail_etl.storage import open_store
from retail_etl.warehouse import Warehouse
from retail_etl.warehouse.schema import product_staging_table

DRY_RUN = "dry run"  # the summary's outcome
PREVIEW_RUN_ID = 0  # the run id the engine writes into the scratch lake rows


def dry_run(
    settings: Settings, engine_name: str | None = None, progress: Progress | None = None
) -> RunSummary:
    warehouse = Warehouse(settings.warehouse)
    work_root = settings.engine.work_dir
    work_root.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="dry-run-", dir=work_root))
    try:
        warehouse.ensure_installed(upgrade=False)
        return _preview(
            settings,
            warehouse,
            engine_name or settings.engine.name,
            StageTimer(progress or NullProgress()),
            work_dir,
        )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        warehouse.dispose()


def _preview(
    settings: Settings, warehouse: Warehouse, engine: str, timed: StageTimer, work_dir: Path
) -> RunSummary:
    storage = settings.storage
    store = open_store(storage)
    with timed("discover"):
        found = survey(store, warehouse, storage.landing_prefix)
        with warehouse.begin() as conn:
            last_id = conn.execute(select(func.max(product_staging_table.c.id))).scalar() or 0
        names = [*found.usable, *((ledger.shown_name(n), s) for n, s in found.odd)]
        new = [
            LedgerRow(last_id + i, name, ledger.ACTIVE, PREVIEW_RUN_ID, size, None, None, None)
            for i, (name, size) in enumerate(names, start=1)
        ]
        quarantined = [
            FileOutcome(row.id, row.file_name, ledger.QUARANTINED, message=name_problem_message(n))
            for row, (n, _size) in zip(new[len(found.usable) :], found.odd, strict=True)
        ]
        todo = [row for row in found.resumed if row.pending_status is None]
        todo += new[: len(found.usable)]
    with timed("fetch", sum(row.size or 0 for row in todo)):
        advance = partial(timed.progress.advance, "fetch")
        fetched = fetch(store, todo, storage, work_dir / "landing", advance)
    with timed("triage"), warehouse.begin() as conn:
        triaged = judge(conn, fetched, storage).triage
    outcomes = [*quarantined, *triaged.outcomes]
    lake_objects = lake_bytes = rejected_files = 0
    mart_rows: dict[str, dict[str, int]] = {}
    if triaged.batch:
        with timed("transform"):
            dims = load_dimensions(warehouse)
            transformed = transform(
                settings, engine, store, warehouse, triaged, PREVIEW_RUN_ID, work_dir, dims
            )
        outcomes += [
            aside_outcome(
                ledger_id,
                triaged.rows[ledger_id].file_name,
                message,
                transformed.gated_counts,
                transformed.gated_rules,
            )
            for ledger_id, message in transformed.set_aside.items()
        ]
        outcomes += outcomes_of(copy_verdicts(triaged, storage, transformed.set_aside))
        manifest = transformed.manifest
        if manifest is not None:
            batch = [b for b in triaged.batch if b.ledger_id not in transformed.set_aside]
            outcomes += [
                done_outcome(b.ledger_id, b.file_name, manifest, triaged.corrections) for b in batch
            ]
            lake_objects = len(manifest.lake_parts)
            lake_bytes = sum(part.path.stat().st_size for part in manifest.lake_parts)
            rejected_files = len(
                set(manifest.rejected_parts) | set(manifest.malformed["ledger_id"].to_pylist())
            )
            mart_rows = merge.rows_per_month(*merge.manifest_deltas(manifest))
    summary = summarize(
        PREVIEW_RUN_ID,
        engine,
        outcomes,
        {},
        seen=len(new),
        resumed=len(found.resumed),
        corrected=sum(
            1 for o in outcomes if o.status == ledger.DONE and o.id in triaged.corrections
        ),
        lake_objects=lake_objects,
        lake_bytes=lake_bytes,
        rejected_files=rejected_files,
        mart_rows_changed=mart_rows,
        warehouse_rows_written=0,
        stage_bytes={"fetch": fetched.bytes},
        transfer_seconds={"fetch": fetched.seconds},
        outcome=DRY_RUN,
    )
    return summary.timed(timed.elapsed, timed.seconds)
