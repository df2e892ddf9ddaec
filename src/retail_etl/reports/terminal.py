"""What a person at a terminal sees of a run and of the ledger: progress bars while the run
works, then Rich tables."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from retail_etl.config import Settings
from retail_etl.progress import TerminalProgress
from retail_etl.run import RunSummary
from retail_etl.run import run as run_pipeline
from retail_etl.run.dry_run import dry_run


def run_with_progress(
    settings: Settings,
    engine: str | None,
    console: Console,
    show_progress: bool = True,
    wait: float = 0.0,
    metrics_file: Path | None = None,
    dry: bool = False,
) -> RunSummary:
    """A run (or a dry run), with progress bars on console when it is a terminal and
    show_progress is set."""
    with contextlib.ExitStack() as stack:
        progress = None
        if show_progress and console.is_terminal:
            progress = stack.enter_context(TerminalProgress(console))
        if dry:
            return dry_run(settings, engine, progress)
        return run_pipeline(
            settings, engine, progress, wait_seconds=wait, metrics_file=metrics_file
        )


def show_run(out: Console, summary: RunSummary) -> None:
    table = Table(
        title=f"run {summary.run_id} ({summary.engine}): "
        f"{summary.outcome} in {summary.seconds:.1f}s"
    )
    for column in ("file", "status", "rows", "valid", "rejected", "note"):
        table.add_column(column)
    for f in summary.files:
        table.add_row(
            f.file_name,
            f.status,
            str(f.rows_read),
            str(f.rows_valid),
            str(f.rows_rejected),
            f.message or "",
        )
    out.print(table)
    out.print(
        f"files: {summary.files_processed} processed, {summary.files_quarantined} quarantined, "
        f"{summary.files_duplicate} duplicate, {summary.files_corrected} corrections, "
        f"{summary.files_resumed} resumed; rows: {summary.rows_valid} valid, "
        f"{summary.rows_rejected} rejected"
    )


def show_status(out: Console, data: dict[str, Any]) -> None:
    """reports.status.collect's data as tables."""
    out.print(f"warehouse: {data['warehouse']}")
    out.print("files: " + ", ".join(f"{s}={n}" for s, n in data["files_by_status"].items()))
    runs = Table(title="recent runs")
    for column in (
        "run",
        "started",
        "outcome",
        "engine",
        "files",
        "valid rows",
        "rejected",
        "seconds",
        "message",
    ):
        runs.add_column(column)
    for r in data["recent_runs"]:
        runs.add_row(
            str(r["run_id"]),
            str(r["started_at"]),
            r["outcome"],
            r["engine"],
            str(r["files_processed"] or 0),
            str(r["rows_valid"] or 0),
            str(r["rows_rejected"] or 0),
            f"{r['seconds'] or 0:.1f}",
            r["message"] or "",
        )
    out.print(runs)
    files = Table(title="recent files")
    for column in ("id", "file", "status", "rows", "valid", "rejected", "message"):
        files.add_column(column)
    for f in data["recent_files"]:
        files.add_row(
            str(f["id"]),
            f["file_name"],
            f["status"],
            str(f["rows_read"] or 0),
            str(f["rows_valid"] or 0),
            str(f["rows_rejected"] or 0),
            f["message"] or "",
        )
    out.print(files)
