"""`retail-etl demo`: the whole job on embedded defaults, in one command.

It loads a chain large enough for its reports to look like a real one's (a few thousand
customers, a dozen stores, dozens of products), lands a few months of daily sales files
ending yesterday (never a file dated in the future), runs the job and writes the monthly and
daily reports. The sales are drawn so that every part of the reports has something to show:
busier weekends and stores of different sizes, a few best-selling products, a star seller in
each store, regular customers and occasional ones, customers who join during the history
(welcome coupons) and some who stop buying (win-back coupons). A few bad rows, one file with
an extra column and one that lost a mandatory column show the job's other outcomes.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from rich.console import Console

from retail_etl.config import Settings
from retail_etl.marts.coupons import shift_month
from retail_etl.storage import ObjectStore, open_store
from retail_etl.tools import sample_data
from retail_etl.tools.generate import Catalogue, land, sales_table
from retail_etl.warehouse import Warehouse

# The demo's chain: about a real small chain's size, loaded in well under a second.
CHAIN = sample_data.ChainSize(customers=3_000, stores=12, products=60)
DAYS = 92  # about three months of history
ROWS = 150  # sales lines per store and day, on average
SEED = 2024
WEEKDAY = np.array([0.8, 0.85, 0.9, 1.0, 1.2, 1.45, 1.3])  # Monday .. Sunday


@dataclass(frozen=True)
class Landed:
    """What the demo put into the landing prefix."""

    files: int
    rows: int
    first_day: date
    last_day: date
    stores: int
    customers: int  # the customers who bought at least once
    products: int

    @property
    def days(self) -> int:
        return (self.last_day - self.first_day).days + 1


def land_history(
    store: ObjectStore,
    warehouse: Warehouse,
    landing: str,
    last_day: date,
    days: int = DAYS,
    rows: int = ROWS,
    seed: int = SEED,
) -> Landed:
    """One file per store and day, `days` days up to last_day, about `rows` sales lines a
    store and day; then the two broken files on last_day."""
    catalogue = Catalogue.from_warehouse(warehouse)
    rng = np.random.default_rng(seed)
    first_day = last_day - timedelta(days=days - 1)
    customers = catalogue.customer_ids
    # Regular customers buy far more often than occasional ones (a long tail); a third join
    # during the history, and about one in eight stops buying at some point.
    weight = rng.lognormal(0.0, 1.0, len(customers))
    joins = np.where(rng.random(len(customers)) < 0.66, 0, rng.integers(0, days, len(customers)))
    leaves = np.where(
        rng.random(len(customers)) < 0.12, rng.integers(0, days, len(customers)), days
    )
    # A few products sell far better than the rest (Zipf-like), each store sells at its own
    # size, and each store has a star seller who is not its manager.
    popularity = 1.0 / np.arange(1, len(catalogue.product_names) + 1) ** 0.8
    product_index = rng.choice(len(popularity), 4_000, p=popularity / popularity.sum())
    sellers = {}
    for store_id, ids in catalogue.sellers_by_store.items():
        star = 1 + int(rng.integers(0, len(ids) - 1)) if len(ids) > 1 else 0
        sellers[store_id] = np.concatenate([ids[star : star + 1], np.delete(ids, star)])
    catalogue = replace(
        catalogue,
        product_names=pc.take(catalogue.product_names, product_index),
        product_cents=catalogue.product_cents[product_index],
        sellers_by_store=sellers,
    )
    store_size = rng.uniform(0.6, 1.5, len(catalogue.store_ids))
    bought = np.zeros(len(customers), dtype=bool)
    files = total = 0
    with tempfile.TemporaryDirectory(prefix="retail-etl-demo-") as tmp:
        for offset in range(days):
            day = first_day + timedelta(days=offset)
            active = np.flatnonzero((joins <= offset) & (offset < leaves))
            growth = 1.0 + 0.15 * offset / max(days - 1, 1)
            for index, store_id in enumerate(catalogue.store_ids):
                day_rng = np.random.default_rng([seed, day.toordinal(), int(store_id)])
                count = max(1, int(rows * store_size[index] * WEEKDAY[day.weekday()] * growth))
                count = max(1, int(day_rng.poisson(count)))
                chosen = day_rng.choice(active, count, p=weight[active] / weight[active].sum())
                bought[chosen] = True
                table = sales_table(
                    replace(catalogue, customer_ids=customers[chosen]),
                    day,
                    int(store_id),
                    count,
                    day_rng,
                    # the last day's files hold a few bad rows, for its daily report
                    bad_fraction=0.01 if day == last_day else 0.0,
                )
                name = f"{day.isoformat()}/sales_store{store_id}_{day.isoformat()}.csv"
                land(store, landing + name, table, Path(tmp))
                files, total = files + 1, total + count
        # Two files from a till with a new firmware: one more column, one column lost.
        for index, extra, drop in ((0, ("payment_mode",), ()), (1, (), ("sales_person_id",))):
            store_id = int(catalogue.store_ids[index % len(catalogue.store_ids)])
            day_rng = np.random.default_rng([seed, last_day.toordinal(), index])
            table = sales_table(catalogue, last_day, store_id, rows, day_rng, extra, drop)
            name = f"sales_store{store_id}_{last_day.isoformat()}_till2.csv"
            key = f"{landing}{last_day.isoformat()}/{name}"
            land(store, key, table, Path(tmp))
            files, total = files + 1, total + rows
    return Landed(
        files,
        total,
        first_day,
        last_day,
        len(catalogue.store_ids),
        int(np.count_nonzero(bought)),
        len(popularity),
    )


def report_month(landed: Landed) -> str:
    """The latest month the history covers whole, else the month of its last day."""
    last = landed.last_day.strftime("%Y-%m")
    if (landed.last_day + timedelta(days=1)).day == 1:
        return last
    previous = shift_month(last, -1)
    return previous if landed.first_day <= date.fromisoformat(f"{previous}-01") else last


def run_demo(
    settings: Settings,
    days: int,
    rows: int,
    out: Console,
    chain: sample_data.ChainSize = CHAIN,
    today: date | None = None,
) -> None:
    warehouse = Warehouse(settings.warehouse)
    warehouse.create_all()
    loaded = sample_data.load(warehouse, chain)
    store = open_store(settings.storage)
    landing = settings.storage.landing_prefix
    yesterday = (today or date.today()) - timedelta(days=1)  # a day whose files are all in
    landed = land_history(store, warehouse, landing, yesterday, days, rows)
    out.print(
        f"[bold]Sample chain[/bold]: {loaded['store']} stores, {loaded['sales_team']} sales "
        f"people, {loaded['product']:,} products, {loaded['customer']:,} customers",
        highlight=False,
    )
    out.print(
        f"[bold]Landed[/bold] {landed.files:,} files in {settings.storage.url}/{landing}: "
        f"{landed.days} days ({landed.first_day} to {landed.last_day}), {landed.rows:,} sales "
        f"lines, {landed.stores} stores, {landed.customers:,} customers buying "
        f"{landed.products} products; a few bad rows, one file with an extra column and one "
        "missing a mandatory column",
        highlight=False,
    )
    from retail_etl.reports import terminal

    summary = terminal.run_with_progress(settings, None, Console(stderr=True))
    terminal.show_run(out, summary, terminal.landing_url(settings), max_files=15)
    from retail_etl import reports

    month = report_month(landed)
    monthly = reports.write(reports.monthly_html(settings, month), Path(f"report-{month}.html"))
    day = landed.last_day.isoformat()
    daily = reports.write(reports.daily_html(settings, landed.last_day), Path(f"report-{day}.html"))
    bucket = settings.storage.url
    out.print("\n[bold]Where things are[/bold]")
    out.print(f"  warehouse (marts, ledger, run log): {warehouse.display_url}")
    out.print(f"  Parquet lake:       {bucket}/{settings.storage.lake_prefix}")
    out.print(f"  archived sources:   {bucket}/{settings.storage.archive_prefix}")
    out.print(f"  quarantine:         {bucket}/{settings.storage.error_prefix}")
    out.print(f"  logs:               {settings.log.dir}/retail-etl.jsonl")
    out.print(f"  monthly report:     {monthly}", soft_wrap=True, markup=False, highlight=False)
    out.print(f"  daily report:       {daily}", soft_wrap=True, markup=False, highlight=False)
    warehouse.dispose()
