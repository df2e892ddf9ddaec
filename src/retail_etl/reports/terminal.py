"""What a person at a terminal sees of a run and of the ledger: progress bars while the run
works, then Rich tables."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from retail_etl.config import Settings
from retail_etl.progress import TerminalProgress
from retail_etl.run import RunSummary
from retail_etl.run import run as run_pipeline
from retail_etl.run.dry_run import DRY_RUN, dry_run


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


# The widest file name column needs (then names wrap at their folders), and the least.
MIN_FILE_WIDTH = 20
MIN_NOTE_WIDTH = 12


def fit_key(name: str, width: int) -> str:
    """A file name in at most `width` columns a line, keeping what tells files apart: whole
    when it fits, else broken after its folders ("2026-08-01/" and "sales_store1_....csv" on
    lines of their own), and a part still too long keeps its tail behind an ellipsis."""
    if len(name) <= width:
        return name
    lines: list[str] = []
    for part in re.findall(r"[^/]*/|[^/]+$", name):
        if lines and len(lines[-1]) + len(part) <= width:
            lines[-1] += part
        else:
            lines.append(part if len(part) <= width else "…" + part[-(width - 1) :])
    return "\n".join(lines)


def _file_table(
    out: Console, title: str, columns: list[str], rows: list[list[str]], file_at: int
) -> Table:
    """A table whose file column gets the width the other columns leave, its names fitted to
    it (fit_key), and whose last column (a note or message) wraps."""
    table = Table(title=title)
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    last = len(columns) - 1
    widths[last] = min(widths[last], MIN_NOTE_WIDTH)
    others = sum(w for i, w in enumerate(widths) if i != file_at)
    room = max(MIN_FILE_WIDTH, out.width - others - 3 * len(columns) - 1)
    file_width = min(widths[file_at], room)
    for index, column in enumerate(columns):
        if index == file_at:
            table.add_column(column, min_width=file_width, no_wrap=True)
        elif index == last:
            table.add_column(column, overflow="fold")
        elif column in ("id", "rows", "valid", "rejected"):
            table.add_column(column, justify="right", no_wrap=True)
        else:
            table.add_column(column, no_wrap=True)
    for row in rows:
        cells = list(row)
        cells[file_at] = fit_key(cells[file_at], file_width)
        table.add_row(*(Text(cell) for cell in cells))  # data, not markup
    return table


def landing_url(settings: Settings) -> str:
    return f"{settings.storage.url.rstrip('/')}/{settings.storage.landing_prefix}"


def show_run(
    out: Console, summary: RunSummary, landing_url: str, max_files: int | None = None
) -> None:
    """The run's files as a table, or "nothing new in <landing URL>" when it found none.
    With max_files, a longer list keeps the files with something to say (not processed,
    rejected rows, a note) and as many others as fit, and says how many it left out."""
    title = f"run {summary.run_id} ({summary.engine}): {summary.outcome} in {summary.seconds:.1f}s"
    if summary.outcome == DRY_RUN:  # no run id: nothing was recorded
        title = f"dry run ({summary.engine}) in {summary.seconds:.1f}s"
    if not summary.files and summary.outcome in ("succeeded", DRY_RUN):
        out.print(
            f"{title}: nothing new in {landing_url}", soft_wrap=True, highlight=False, markup=False
        )
        return
    files = summary.files
    left_out = 0
    if max_files is not None and len(files) > max_files:
        notable = [f for f in files if f.status != "I" or f.rows_rejected or f.message]
        kept = {f.id for f in notable[:max_files]}
        for f in files:
            if len(kept) >= max_files:
                break
            kept.add(f.id)
        left_out = len(files) - len(kept)
        files = [f for f in files if f.id in kept]
    rows = [
        [
            f.file_name,
            f.status,
            str(f.rows_read),
            str(f.rows_valid),
            str(f.rows_rejected),
            f.message or "",
        ]
        for f in files
    ]
    columns = ["file", "status", "rows", "valid", "rejected", "note"]
    out.print(_file_table(out, title, columns, rows, 0))
    if left_out:
        out.print(f"... and {left_out} more processed files (retail-etl status lists the latest)")
    out.print(
        f"files: {summary.files_processed} processed, {summary.files_quarantined} quarantined, "
        f"{summary.files_duplicate} duplicate, {summary.files_corrected} corrections, "
        f"{summary.files_resumed} resumed; rows: {summary.rows_valid} valid, "
        f"{summary.rows_rejected} rejected"
    )
    transfers = [
        f"{stage} {moved / 1e6:.1f} MB at {summary.stage_mb_per_s[stage]:.1f} MB/s"
        for stage, moved in summary.stage_bytes.items()
        if moved and stage in summary.stage_mb_per_s
    ]
    if transfers:
        out.print("transfers: " + "; ".join(transfers))
    if summary.rules:
        out.print("rules broken: " + top_rules(summary.rules, len(summary.rules)), markup=False)
    if summary.outcome == DRY_RUN:
        changes = ", ".join(
            f"{month}: {marts['customers_data_mart']} customer and "
            f"{marts['sales_team_data_mart']} sales-team rows"
            for month, marts in summary.mart_rows_changed.items()
        )
        out.print(f"dry run, nothing changed; the marts would change in {changes or 'no month'}")


def top_rules(rules: dict[str, int], count: int = 3) -> str:
    """The most broken rules first: 'quantity is not an integer (6), ...'."""
    ranked = sorted(rules.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{rule} ({n})" for rule, n in ranked[:count])


RUNS_WIDTH = 78  # the recent runs table without its note column
MIN_RUN_NOTE_WIDTH = 24


def show_status(out: Console, data: dict[str, Any]) -> None:
    """reports.status.collect's data as tables."""
    out.print(f"warehouse: {data['warehouse']}", markup=False)
    out.print("files: " + ", ".join(f"{s}={n}" for s, n in data["files_by_status"].items()))
    runs = Table(title="recent runs")
    for column in ("run", "started", "outcome", "engine", "files", "valid", "rejected", "secs"):
        numeric = column in ("run", "files", "valid", "rejected", "secs")
        runs.add_column(column, justify="right" if numeric else "left", no_wrap=True)
    # the note (an error, or the rules broken most) in its own column when there is room for
    # it, else under the table
    notes = {
        r["run_id"]: r["message"] or top_rules(r.get("rules") or {}) for r in data["recent_runs"]
    }
    below = out.width < RUNS_WIDTH + MIN_RUN_NOTE_WIDTH
    if not below:
        runs.add_column("note", overflow="fold")
    for r in data["recent_runs"]:
        started = r["started_at"]
        runs.add_row(
            str(r["run_id"]),
            # the day above the time: the whole timestamp in 10 columns
            started.strftime("%Y-%m-%d\n%H:%M:%S")
            if hasattr(started, "strftime")
            else str(started),
            r["outcome"],
            r["engine"],
            str(r["files_processed"] or 0),
            str(r["rows_valid"] or 0),
            str(r["rows_rejected"] or 0),
            f"{r['seconds'] or 0:.1f}",
            *(() if below else (Text(notes[r["run_id"]]),)),
        )
    out.print(runs)
    if below:
        for run_id, note in notes.items():
            if note:
                out.print(f"run {run_id}: {note}", highlight=False, markup=False)
    rows = [
        [
            str(f["id"]),
            f["file_name"],
            f["status"],
            str(f["rows_read"] or 0),
            str(f["rows_valid"] or 0),
            str(f["rows_rejected"] or 0),
            f["message"] or "",
        ]
        for f in data["recent_files"]
    ]
    columns = ["id", "file", "status", "rows", "valid", "rejected", "message"]
    files = _file_table(out, "recent files", columns, rows, 1)
    out.print(files)
