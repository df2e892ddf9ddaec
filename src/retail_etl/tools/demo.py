"""`retail-etl demo`: the whole job on embedded defaults, in one command."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from rich.console import Console

from retail_etl.config import Settings
from retail_etl.storage import open_store
from retail_etl.tools import sample_data
from retail_etl.tools.generate import generate
from retail_etl.warehouse import Warehouse


def run_demo(settings: Settings, days: int, rows: int, out: Console) -> None:
    warehouse = Warehouse(settings.warehouse)
    warehouse.create_all()
    sample_data.load(warehouse)
    store = open_store(settings.storage)
    landing = settings.storage.landing_prefix
    start = date.today().replace(day=1) - timedelta(days=days)
    # A week of sales with a few bad rows, one file with an extra column, and one file that
    # lost a mandatory column: every outcome of the job shows up once.
    generate(store, warehouse, landing, start, days, rows, 4, seed=2024, bad_fraction=0.002)
    generate(
        store,
        warehouse,
        landing,
        start + timedelta(days=days),
        1,
        rows,
        1,
        seed=7,
        extra_columns=("payment_mode",),
    )
    generate(
        store,
        warehouse,
        landing,
        start + timedelta(days=days + 1),
        1,
        rows,
        1,
        seed=8,
        drop_columns=("sales_person_id",),
    )
    # The same week of the three months before, so the monthly report has a trend to show.
    month = start.replace(day=1)
    for _ in range(3):
        month = (month - timedelta(days=1)).replace(day=1)
        generate(store, warehouse, landing, month, min(days, 7), rows, 4, seed=month.toordinal())
    from retail_etl.reports import terminal

    summary = terminal.run_with_progress(settings, None, Console(stderr=True))
    terminal.show_run(out, summary, terminal.landing_url(settings), max_files=30)
    from retail_etl import reports

    report_month = (start + timedelta(days=days - 1)).strftime("%Y-%m")
    report = reports.write(
        reports.monthly_html(settings, report_month), Path(f"report-{report_month}.html")
    )
    bucket = settings.storage.url
    out.print("\n[bold]Where things are[/bold]")
    out.print(f"  warehouse (marts, ledger, run log): {warehouse.display_url}")
    out.print(f"  Parquet lake:       {bucket}/{settings.storage.lake_prefix}")
    out.print(f"  archived sources:   {bucket}/{settings.storage.archive_prefix}")
    out.print(f"  quarantine:         {bucket}/{settings.storage.error_prefix}")
    out.print(f"  logs:               {settings.log.dir}/retail-etl.jsonl")
    out.print(f"  monthly report:     {report}", soft_wrap=True, markup=False, highlight=False)
