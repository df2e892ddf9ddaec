"""`run --metrics-file`: the last run as a Prometheus textfile, for node_exporter's textfile
collector. Written atomically (a temporary file renamed over the old one), after every run,
failed ones included, so an alert on a stale last-success timestamp fires when runs fail."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from sqlalchemy import func, select

from retail_etl.errors import RetailEtlError, WorkFolderError
from retail_etl.run.summary import RunSummary
from retail_etl.warehouse import Warehouse
from retail_etl.warehouse.schema import product_staging_table, run_log

log = logging.getLogger("retail_etl.run")
PREFIX = "retail_etl_"


def write_metrics(
    path: Path,
    summary: RunSummary,
    started: datetime,
    finished: datetime,
    warehouse: Warehouse,
    quiet: bool = False,
) -> None:
    """The run's metrics into path. Raises WorkFolderError when path cannot be written
    (quiet: logs it instead, when another error is already on its way)."""
    registry = CollectorRegistry()

    def gauge(name: str, help_text: str, value: float, **labels: str) -> None:
        metric = gauges.get(name)
        if metric is None:
            metric = gauges[name] = Gauge(
                PREFIX + name, help_text, sorted(labels), registry=registry
            )
        (metric.labels(**labels) if labels else metric).set(value)

    gauges: dict[str, Gauge] = {}
    succeeded = summary.outcome == "succeeded"
    gauge("last_run_start_timestamp_seconds", "When the last run started", started.timestamp())
    gauge("last_run_finish_timestamp_seconds", "When the last run ended", finished.timestamp())
    gauge("last_run_success", "1 if the last run succeeded, 0 if it failed", int(succeeded))
    gauge("last_run_duration_seconds", "How long the last run took", summary.seconds)

    def per(name: str, help_text: str, label: str, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            gauge(name, help_text, value, **{label: key})

    per("last_run_stage_duration_seconds", "Seconds per stage", "stage", summary.stage_seconds)
    files = {
        "seen": summary.files_seen,
        "resumed": summary.files_resumed,
        "processed": summary.files_processed,
        "quarantined": summary.files_quarantined,
        "duplicate": summary.files_duplicate,
        "corrected": summary.files_corrected,
    }
    per("last_run_files", "Files of the last run, per outcome", "outcome", files)
    rows = {"read": summary.rows_read, "valid": summary.rows_valid}
    rows["rejected"] = summary.rows_rejected
    per("last_run_rows", "Rows of the files the last run processed", "kind", rows)
    per(
        "last_run_rule_violations",
        "Rows that broke each rule (files, for a rule whose name starts with 'file:')",
        "rule",
        summary.rules,
    )
    per(
        "last_run_stage_transfer_bytes",
        "Bytes a transfer moved (fetch: downloaded, publish: uploaded, archive: moved)",
        "stage",
        summary.stage_bytes,
    )
    gauge("last_run_lake_objects", "Parquet objects the last run wrote", summary.lake_objects)
    gauge("last_run_lake_bytes", "Bytes of Parquet the last run wrote", summary.lake_bytes)
    gauge(
        "last_run_warehouse_rows_written",
        "Warehouse rows the last run inserted, updated or deleted",
        summary.warehouse_rows_written,
    )
    try:
        last_success, oldest_pending = _from_ledger(warehouse)
    except RetailEtlError:  # the warehouse is what failed: say what is known
        log.warning("metrics: the warehouse cannot say the last success or what is pending")
    else:
        if last_success is not None:
            gauge(  # as the run log has it: whole seconds on MySQL
                "last_success_timestamp_seconds",
                "When a run last succeeded",
                last_success.timestamp(),
            )
        gauge(
            "oldest_pending_file_age_seconds",
            "Age of the oldest file registered but not yet finished (0: none)",
            max(0.0, (finished - oldest_pending).total_seconds()) if oldest_pending else 0.0,
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(path), registry)
    except OSError as exc:
        error = WorkFolderError(f"metrics file {path}: {exc.strerror or exc}")
        if not quiet:
            raise error from exc
        log.warning(str(error))


def _from_ledger(warehouse: Warehouse) -> tuple[datetime | None, datetime | None]:
    t = product_staging_table
    with warehouse.begin() as conn:
        last_success = conn.execute(
            select(func.max(run_log.c.finished_at)).where(run_log.c.outcome == "succeeded")
        ).scalar()
        oldest = conn.execute(select(func.min(t.c.created_date)).where(t.c.status == "A")).scalar()
    return last_success, oldest
