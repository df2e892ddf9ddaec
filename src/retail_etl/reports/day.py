"""The daily report's figures: sales dated D, and the loads that brought them.

Store, sales-person and product figures come from the per-day sums kept at publish time
(retail_etl/daily.py explains why). Customer figures (customer x day is as large as the sales
themselves, too big to keep) are summed here with DuckDB from the lake objects of exactly
the files that carry D, downloaded through the object store: one day's data, on any backend.
Money is summed in Decimal or DuckDB's DECIMAL, never by the warehouse (SQLite would sum
money as binary floats).

The loads section answers "can I trust these figures?": the files that carry sales dated D,
plus everything else the same runs did not turn into sales -- quarantined files, duplicates,
files all of whose rows were rejected. Processed files that only carry other days are left to
those days' reports. The rules those files broke are the counts their runs recorded
(etl_rule_count): rows per row rule, and the file-level rule of each quarantined file.
"""

from __future__ import annotations

import csv
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, or_, select

from retail_etl import local_duckdb
from retail_etl.config import Settings
from retail_etl.errors import StorageError
from retail_etl.run import ledger
from retail_etl.run.keys import rejected_keys
from retail_etl.storage import ObjectStore
from retail_etl.warehouse import Warehouse
from retail_etl.warehouse.schema import (
    daily_product_partial,
    daily_sales_person_partial,
    lake_object,
    product_staging_table,
    rule_count,
    sales_team,
    store,
)

ZERO = Decimal("0.00")
TREND_DAYS = 14
TOP = 10


@dataclass
class Line:
    """One row of a breakdown: a store, product, customer or sales person."""

    key: Any
    label: str
    total: Decimal = ZERO
    items: int = 0
    sales_rows: int = 0
    detail: str = ""
    store_id: int | None = None
    best: bool = False


@dataclass
class FileLine:
    id: int
    file_name: str
    status: str
    run_id: int
    rows_read: int
    rows_valid: int
    rows_rejected: int
    message: str | None
    carries_day: bool


@dataclass
class DailyReport:
    day: date
    total_sales: Decimal = ZERO
    items: int = 0
    sales_rows: int = 0
    stores: list[Line] = field(default_factory=list)
    products: list[Line] = field(default_factory=list)
    product_count: int = 0
    customers: list[Line] = field(default_factory=list)
    customer_count: int = 0
    sales_people: list[Line] = field(default_factory=list)
    trend: list[tuple[date, Decimal | None]] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)
    files: list[FileLine] = field(default_factory=list)
    rows_rejected: int = 0
    reasons: list[tuple[str, int]] = field(default_factory=list)
    reasons_missing: list[str] = field(default_factory=list)
    lake_missing: list[str] = field(default_factory=list)

    @property
    def has_sales(self) -> bool:
        return self.sales_rows > 0

    @property
    def days_without_sales(self) -> list[date]:
        """The trend's days with no loaded sales (no files, or none of their rows valid)."""
        return [d for d, total in self.trend if total is None]


def _names(conn: Connection, table: Any, key: Any, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = conn.execute(
        select(key, table.c.first_name, table.c.last_name).where(key.in_(sorted(ids)))
    )
    return {r[0]: " ".join(p for p in (r[1], r[2]) if p) for r in rows}


def _sum(lines: dict[Any, Line], key: Any, row: Any) -> Line:
    line = lines.get(key)
    if line is None:
        line = lines[key] = Line(key, str(key))
    line.total += row.total_sales
    line.items += int(row.items)
    line.sales_rows += int(row.sales_rows)
    return line


def reject_reason_parts(reason: str) -> list[str]:
    """A row's reject_reason split into its problems; malformed lines lose their detail."""
    parts = []
    for part in (reason or "").split("; "):
        part = part.strip()
        if part.startswith("malformed CSV line"):
            part = "malformed CSV line"
        if part:
            parts.append(part)
    return parts


def count_reasons(lines: Iterable[str]) -> Counter[str]:
    """Problems counted over a rejected-rows CSV (its reject_reason column is the last)."""
    reader = csv.reader(lines)
    header = next(reader, None)
    counts: Counter[str] = Counter()
    if not header or "reject_reason" not in header:
        return counts
    column = len(header) - 1 - header[::-1].index("reject_reason")
    for record in reader:
        if len(record) > column:
            counts.update(reject_reason_parts(record[column]))
    return counts


def build(settings: Settings, warehouse: Warehouse, objects: ObjectStore, day: date) -> DailyReport:
    report = DailyReport(day)
    with warehouse.begin() as conn:
        _sales(conn, report)
        carrying = _loads(conn, report)
        keys = _lake_keys(conn, carrying)
        _reasons(settings, conn, objects, report)
    _customers(objects, keys, report)
    return report


def _sales(conn: Connection, report: DailyReport) -> None:
    day = report.day
    sp, pr = daily_sales_person_partial, daily_product_partial

    stores: dict[int, Line] = {}
    people: dict[tuple[int, int], Line] = {}
    for row in conn.execute(select(sp).where(sp.c.sales_date == day)):
        _sum(stores, row.store_id, row)
        _sum(people, (row.store_id, row.sales_person_id), row)
        report.total_sales += row.total_sales
        report.items += int(row.items)
        report.sales_rows += int(row.sales_rows)
    store_info = {
        r.id: r
        for r in conn.execute(select(store.c.id, store.c.address, store.c.store_manager_name))
    }
    for store_id, line in stores.items():
        line.label = f"Store {store_id}"
        info = store_info.get(store_id)
        line.detail = f"{info.address} (manager {info.store_manager_name})" if info else ""
    report.stores = sorted(stores.values(), key=lambda s: s.key)

    person_names = _names(conn, sales_team, sales_team.c.id, {k[1] for k in people})
    best: dict[int, Decimal] = {}
    for (store_id, _person), line in people.items():
        best[store_id] = max(best.get(store_id, line.total), line.total)
    for (store_id, person_id), line in people.items():
        line.label = person_names.get(person_id, f"sales person {person_id}")
        line.store_id = store_id
        line.best = line.total == best[store_id]
    report.sales_people = sorted(people.values(), key=lambda p: (p.store_id, -p.total, p.key))

    products: dict[str, Line] = {}
    for row in conn.execute(select(pr).where(pr.c.sales_date == day)):
        _sum(products, row.product_key, row).label = row.product_name
    report.product_count = len(products)
    report.products = sorted(products.values(), key=lambda p: (-p.total, p.label))

    first = day - timedelta(days=TREND_DAYS - 1)
    # None for a day without loaded sales: drawn as a gap, not as a day that sold nothing.
    per_day: dict[date, Decimal | None] = {
        first + timedelta(days=i): None for i in range(TREND_DAYS)
    }
    for sales_date, total in conn.execute(
        select(sp.c.sales_date, sp.c.total_sales).where(sp.c.sales_date.between(first, day))
    ):
        per_day[sales_date] = (per_day[sales_date] or ZERO) + total
    report.trend = sorted(per_day.items())


def _loads(conn: Connection, report: DailyReport) -> list[int]:
    """The files of the report's loads; returns the ids of those that carry the day."""
    sp, t = daily_sales_person_partial, product_staging_table
    carrying = set(
        conn.execute(select(sp.c.ledger_id).where(sp.c.sales_date == report.day).distinct())
        .scalars()
        .all()
    )
    if not carrying:
        return []
    runs = set(
        conn.execute(select(t.c.last_run_id).where(t.c.id.in_(sorted(carrying))).distinct())
        .scalars()
        .all()
    )
    report.runs = sorted(runs)
    rows = conn.execute(
        select(t)
        .where(
            t.c.last_run_id.in_(report.runs),
            or_(
                t.c.id.in_(sorted(carrying)),
                t.c.status != "I",
                t.c.rows_valid.is_(None),
                t.c.rows_valid == 0,
            ),
        )
        .order_by(t.c.id)
    ).fetchall()
    for r in rows:
        report.files.append(
            FileLine(
                r.id,
                r.file_name,
                r.pending_status if r.status == "A" and r.pending_status else r.status,
                r.run_id,
                int(r.rows_read or 0),
                int(r.rows_valid or 0),
                int(r.rows_rejected or 0),
                r.message,
                r.id in carrying,
            )
        )
    report.rows_rejected = sum(f.rows_rejected for f in report.files)
    return sorted(carrying)


def _lake_keys(conn: Connection, ledger_ids: list[int]) -> list[str]:
    keys: list[str] = []
    for start in range(0, len(ledger_ids), 500):
        chunk = ledger_ids[start : start + 500]
        keys += conn.execute(
            select(lake_object.c.object_key).where(lake_object.c.ledger_id.in_(chunk))
        ).scalars()
    return sorted(keys)


def _customers(objects: ObjectStore, keys: list[str], report: DailyReport) -> None:
    """Spend per customer on the day, from the lake objects of the files that carry it."""
    if not keys:
        return
    with tempfile.TemporaryDirectory(prefix="retail-etl-report-") as tmp:
        paths = []
        for index, key in enumerate(keys):
            local = Path(tmp) / f"part-{index}.parquet"
            try:
                objects.download(key, local)
            except StorageError:
                report.lake_missing.append(key)  # replaced by a correction meanwhile
                continue
            paths.append(str(local))
        if not paths:
            return
        con = local_duckdb.connect(threads=2)
        try:
            source = "read_parquet($paths, union_by_name = true)"
            report.customer_count = con.execute(
                f"SELECT count(DISTINCT customer_id) FROM {source} WHERE sales_date = $day",
                {"paths": paths, "day": report.day},
            ).fetchone()[0]  # type: ignore[index]
            top = con.execute(
                "SELECT customer_id, max(customer_full_name), sum(total_cost), sum(quantity), "
                f"count(*) FROM {source} WHERE sales_date = $day GROUP BY customer_id "
                "ORDER BY 3 DESC, 1 LIMIT $top",
                {"paths": paths, "day": report.day, "top": TOP},
            ).fetchall()
        finally:
            con.close()
    report.customers = [
        Line(
            customer_id,
            name or f"customer {customer_id}",
            total.quantize(ZERO),
            int(items),
            int(lines),
        )
        for customer_id, name, total, items, lines in top
    ]


def _reasons(
    settings: Settings, conn: Connection, objects: ObjectStore, report: DailyReport
) -> None:
    """Rows per rule broken (files, for a file-level rule) over the report's files, as each
    run counted them (etl_rule_count); files loaded before runs counted them are read from
    their rejected-row CSVs."""
    ids = [f.id for f in report.files]
    counts: Counter[str] = Counter()
    counted: set[int] = set()
    for ledger_id, rule, n in conn.execute(
        select(rule_count.c.ledger_id, rule_count.c.rule, rule_count.c.occurrences).where(
            rule_count.c.ledger_id.in_(ids)
        )
    ):
        counts[rule] += int(n)
        counted.add(ledger_id)
    uncounted = [f for f in report.files if f.rows_rejected > 0 and f.id not in counted]
    error_prefix = settings.storage.error_prefix
    keys: dict[int, str] = {}
    for run_id in sorted({f.run_id for f in uncounted}):
        keys |= rejected_keys(error_prefix, run_id, ledger.registered_names(conn, run_id))
    with tempfile.TemporaryDirectory(prefix="retail-etl-report-") as tmp:
        for f in uncounted:
            key = keys[f.id]
            local = Path(tmp) / f"rejected-{f.id}.csv"
            if not objects.exists(key):
                report.reasons_missing.append(key)
                continue
            objects.download(key, local)
            with open(local, encoding="utf-8", errors="replace", newline="") as handle:
                counts.update(count_reasons(handle))
    report.reasons = counts.most_common(TOP)
