"""The `retail-etl` command line (SPEC section 8)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from retail_etl.config import Settings, load_settings
from retail_etl.errors import RetailEtlError
from retail_etl.redact import redact

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Nightly retail sales ETL: landing bucket -> lake, marts and quarantine.",
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()


class _State:
    config: Path | None = None
    debug: bool = False


state = _State()


@app.callback()
def _main(
    config: Annotated[Path | None, typer.Option("--config", help="TOML config file")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks")] = False,
) -> None:
    state.config = config
    state.debug = debug


def _settings() -> Settings:
    settings = load_settings(state.config)
    from retail_etl.logs import setup_logging

    setup_logging(settings.log)
    return settings


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str) + "\n")


@app.command()
def init(
    demo: Annotated[bool, typer.Option("--demo", help="Load sample dimension rows")] = False,
    customers: Annotated[int, typer.Option(help="Sample customers with --demo", min=1)] = 40,
) -> None:
    """Create every table if missing (idempotent); --demo loads sample dimension rows."""
    from retail_etl import sample_data
    from retail_etl.warehouse import Warehouse

    warehouse = Warehouse(_settings().warehouse)
    warehouse.create_all()
    console.print(f"tables ready in {warehouse.display_url}")
    if demo:
        loaded = sample_data.load(warehouse, customers)
        console.print("sample rows loaded: " + ", ".join(f"{n} {t}" for t, n in loaded.items()))


@app.command()
def generate(
    date_: Annotated[str, typer.Option("--date", help="First sales day, YYYY-MM-DD")],
    days: Annotated[int, typer.Option(min=1)] = 1,
    rows: Annotated[int, typer.Option(min=0, help="Rows per file")] = 1000,
    files: Annotated[int, typer.Option(min=1, help="Files per day")] = 4,
    seed: Annotated[int, typer.Option()] = 42,
    extra_column: Annotated[
        list[str] | None, typer.Option(help="Add a column (repeatable)")
    ] = None,
    drop_column: Annotated[
        list[str] | None, typer.Option(help="Drop a column (repeatable)")
    ] = None,
    bad_rows: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of invalid rows")] = 0.0,
    gzip: Annotated[bool, typer.Option("--gzip", help="Write .csv.gz")] = False,
) -> None:
    """Write realistic synthetic sales CSVs into the landing prefix."""
    from retail_etl.generate import generate as write
    from retail_etl.storage import open_store
    from retail_etl.warehouse import Warehouse

    try:
        start = date.fromisoformat(date_)
    except ValueError:
        raise typer.BadParameter(f"--date must be YYYY-MM-DD, got {date_!r}") from None
    settings = _settings()
    written = write(
        open_store(settings.storage),
        Warehouse(settings.warehouse),
        settings.storage.landing_prefix,
        start,
        days,
        rows,
        files,
        seed,
        tuple(extra_column or ()),
        tuple(drop_column or ()),
        bad_rows,
        gzip,
    )
    total = sum(size for _k, size in written)
    console.print(
        f"wrote {len(written)} files, {total / 1e6:.1f} MB, "
        f"into {settings.storage.url}/{settings.storage.landing_prefix}"
    )


def _run(settings: Settings, engine: str | None, as_json: bool, wait: float = 0.0) -> Any:
    from retail_etl.pipeline import run as run_pipeline
    from retail_etl.progress import TerminalProgress

    if not as_json and console.is_terminal:
        with TerminalProgress(console) as progress:
            return run_pipeline(settings, engine, progress, wait_seconds=wait)
    return run_pipeline(settings, engine, wait_seconds=wait)


def _show_summary(summary: Any) -> None:
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


@app.command()
def run(
    engine: Annotated[str | None, typer.Option(help="duckdb or spark (default: config)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout")] = False,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            min=0,
            metavar="SECONDS",
            help="When another run holds the lock, wait up to this long for it (default: "
            "exit at once with status 5)",
        ),
    ] = 0.0,
) -> None:
    """Process every pending landed file."""
    if engine not in (None, "duckdb", "spark"):
        raise typer.BadParameter("--engine must be duckdb or spark")
    summary = _run(_settings(), engine, as_json, wait)
    if as_json:
        _print_json(asdict(summary))
    else:
        _show_summary(summary)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout")] = False,
) -> None:
    """The ledger and recent runs."""
    from retail_etl.status import collect
    from retail_etl.warehouse import Warehouse

    warehouse = Warehouse(_settings().warehouse)
    warehouse.create_all()
    data = collect(warehouse)
    if as_json:
        _print_json(data)
        return
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


@app.command()
def demo(
    days: Annotated[int, typer.Option(min=1, help="Days of sales to generate")] = 7,
    rows: Annotated[int, typer.Option(min=1, help="Rows per file")] = 2000,
) -> None:
    """The whole job on embedded defaults: init --demo, generate, run, report."""
    from retail_etl.demo import run_demo

    run_demo(_settings(), days, rows, out)


def main() -> None:
    try:
        app(standalone_mode=False)
    except RetailEtlError as exc:
        if state.debug:
            raise
        console.print(f"[red]error:[/red] {redact(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors and the unexpected
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if state.debug:
            raise
        console.print(
            f"[red]error:[/red] {redact(f'{type(exc).__name__}: {exc}')} (--debug for details)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
