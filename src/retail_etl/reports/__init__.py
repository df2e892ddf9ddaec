"""`retail-etl report`: daily and monthly business reports as one self-contained HTML file.

The file needs nothing else to open: styles are inline, charts are inline SVG drawn here
(reports/charts.py), there is no script and no external URL, and a Content-Security-Policy
forbids fetching anything, so it reads the same offline, in a mail attachment or an archive.
Templates are Jinja2 with autoescaping on: text from data is always shown as text.
"""

from __future__ import annotations

import os
import tempfile
from datetime import date, datetime
from decimal import Decimal
from functools import cache, partial
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, pass_context
from jinja2.runtime import Context

from retail_etl.config import Settings
from retail_etl.marts.coupons import shift_month
from retail_etl.reports import charts
from retail_etl.reports.day import DailyReport
from retail_etl.reports.day import build as build_day
from retail_etl.reports.month import MonthlyReport
from retail_etl.reports.month import build as build_month
from retail_etl.storage import open_store
from retail_etl.warehouse import Warehouse


def money(value: Decimal | int | None, currency: str | None = None) -> str:
    """1234.5 -> '1,234.50'; with a currency symbol '€1,234.50', with a code (letters)
    '1,234.50 EUR'; None -> '–'."""
    if value is None:
        return "–"
    amount = Decimal(value).quantize(Decimal("0.01"))
    text = f"{abs(amount):,.2f}"
    sign = "-" if amount < 0 else ""
    if not currency:
        return sign + text
    if currency.isalpha() and currency.isascii():
        return f"{sign}{text} {currency}"
    return f"{sign}{currency}{text}"


@pass_context
def _money_filter(context: Context, value: Decimal | int | None) -> str:
    """`|money` in a template: with the currency the report was rendered with."""
    return money(value, context.get("currency"))


def plain(value: Decimal | int | None) -> str:
    """A number with two decimals and no currency (a discount's percent)."""
    return money(value)


def number(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def percent(value: Decimal | None) -> str:
    if value is None:
        return "–"
    return f"{'+' if value > 0 else ''}{value}%"


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("retail_etl.reports", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(money=_money_filter, plain=plain, number=number, percent=percent)
    return env


PRODUCT_ROWS = 25
FULL, HALF = 1040, 520  # chart widths: a whole section, a section in the two-column grid
STATUS_NAMES = {"I": "processed", "E": "quarantined", "D": "duplicate", "A": "in progress"}


def _count(value: Decimal | int) -> str:
    return number(int(value))


def render_daily(report: DailyReport, currency: str | None = None) -> str:
    r = report
    amount = partial(money, currency=currency)
    figures = {
        "trend": charts.line_chart(
            [d.strftime("%d %b") for d, _t in r.trend],
            [("Total sales", [t for _d, t in r.trend])],
            f"Total sales per day, {len(r.trend)} days to {r.day.isoformat()}",
            amount,
            width=FULL,
            height=220,
            missing="no sales",
        ),
        "stores": charts.bar_chart(
            [(s.label, s.total) for s in r.stores], "Sales by store", amount, width=HALF
        ),
        "customers": charts.bar_chart(
            [(c.label, c.total) for c in r.customers],
            "Top customers of the day",
            amount,
            width=HALF,
        ),
        "products": charts.bar_chart(
            [(p.label, p.total) for p in r.products[:15]],
            "Sales by product (top 15)",
            amount,
            width=FULL,
        ),
        "reasons": charts.bar_chart(
            r.reasons, "Rows rejected (files quarantined), by rule", _count, width=HALF
        ),
    }
    return (
        environment()
        .get_template("daily.html.j2")
        .render(
            r=r,
            charts=figures,
            product_rows=PRODUCT_ROWS,
            status_names=STATUS_NAMES,
            carrying=[f for f in r.files if f.carries_day],
            quarantined=[f for f in r.files if f.status == "E"],
            duplicates=[f for f in r.files if f.status == "D"],
            generated=datetime.now().replace(microsecond=0),
            currency=currency,
        )
    )


SELLERS_CHARTED = 25


def render_monthly(report: MonthlyReport, currency: str | None = None) -> str:
    r = report
    amount = partial(money, currency=currency)
    sellers = [(s, p) for s in r.stores for p in s.sellers]
    # a chart a manager can read: the best sellers, the table below lists everyone
    charted = sorted(sellers, key=lambda sp: -sp[1].total)[:SELLERS_CHARTED]
    figures = {
        "trend": charts.line_chart(
            [date.fromisoformat(f"{m}-01").strftime("%b %Y") for m in r.trend_months],
            r.trend,
            f"Sales per store, months to {r.month}",
            amount,
            width=FULL,
        ),
        "sellers": charts.bar_chart(
            [(f"{s.label} · {p.name}", p.total) for s, p in charted],
            f"Sales per sales person, {r.month}"
            + (
                f" (the top {len(charted)} of {len(sellers)})"
                if len(charted) < len(sellers)
                else ""
            ),
            amount,
            highlight=[p.winner for _s, p in charted],
            width=FULL,
        ),
        "spenders": charts.bar_chart(
            [(c.name, c.total) for c in r.top_spenders],
            f"Top spenders, {r.month}",
            amount,
            width=HALF,
        ),
        "distribution": charts.column_chart(
            r.distribution, f"Customers per spend range, {r.month}", _count, width=HALF
        ),
    }
    first_day = date.fromisoformat(f"{r.month}-01")
    return (
        environment()
        .get_template("monthly.html.j2")
        .render(
            r=r,
            charts=figures,
            month_name=first_day.strftime("%B %Y"),
            previous_month=shift_month(r.month, -1),
            previous_name=date.fromisoformat(f"{shift_month(r.month, -1)}-01").strftime("%B %Y"),
            winners=[p for _s, p in sellers if p.winner],
            generated=datetime.now().replace(microsecond=0),
            currency=currency,
        )
    )


def daily_html(settings: Settings, day: date) -> str:
    warehouse = Warehouse(settings.warehouse)
    try:
        warehouse.ensure_installed()
        report = build_day(settings, warehouse, open_store(settings.storage), day)
        return render_daily(report, settings.report.currency)
    finally:
        warehouse.dispose()


def monthly_html(settings: Settings, month: str) -> str:
    warehouse = Warehouse(settings.warehouse)
    try:
        warehouse.ensure_installed()
        return render_monthly(
            build_month(warehouse, month, settings.rules), settings.report.currency
        )
    finally:
        warehouse.dispose()


def write(html: str, out: Path) -> Path:
    """Write atomically (a reader never sees half a report); returns the absolute path."""
    out = out.expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(html)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


__all__ = ["daily_html", "monthly_html", "render_daily", "render_monthly", "write"]
