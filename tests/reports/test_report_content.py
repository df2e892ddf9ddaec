"""Reports (retail_etl/reports): the figures, hand-computed from tiny files, and the HTML:
self-contained, money formatted, everything from data escaped."""

from __future__ import annotations

import gzip
import re
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import Env, csv_text
from helpers import cli
from sqlalchemy import delete, select, update

from retail_etl import reports
from retail_etl.reports import day as daily_report
from retail_etl.reports import month as monthly_report
from retail_etl.warehouse.schema import customer, rule_count

D = Decimal
XSS = "<script>alert(1)</script>"
DAY = date(2024, 3, 5)


def row(c: int, store: int, product: str, day: str, person: int, price: str, qty: int) -> str:
    total = D(price) * qty
    return f'{c},{store},"{product}",{day},{person},{price},{qty},{total}'


A = csv_text(
    row(1, 1, "Whole Milk 1L", "2024-03-05", 2, "1.19", 2),  # 2.38
    row(2, 1, XSS, "2024-03-05", 3, "10.00", 1),  # 10.00
    row(1, 1, "Whole Milk 1L", "2024-03-04", 2, "1.19", 1),  # another day: 1.19
    row(1, 1, "Whole Milk 1L", "2024-03-05", 2, "1.19", -1),  # rejected: quantity, total
    row(999999, 1, "Whole Milk 1L", "2024-03-05", 2, "1.19", 1),  # rejected: customer
)
B = csv_text(
    row(3, 2, "Basmati Rice 5kg", "2024-03-05", 4, "11.90", 3),  # 35.70
    row(4, 2, "Extra Virgin Olive Oil 750ml", "2024-03-05", 5, "1234.50", 1),  # 1234.50
)
C = csv_text(row(5, 3, "Bananas 1kg", "2024-03-04", 6, "1.39", 10))  # 13.90, another day only
BROKEN = csv_text(  # no sales_person_id column: quarantined
    "1,1,x,2024-03-05,1,1,1",
    header="customer_id,store_id,product_name,sales_date,price,quantity,total_cost",
)


@pytest.fixture
def loaded(env: Env) -> Env:
    env.land("2024-03-05/a.csv", A)
    env.land("2024-03-05/b.csv", B)
    env.land("2024-03-05/broken.csv", BROKEN)
    env.land("2024-03-04/c.csv", C)
    summary = env.run()
    assert (summary.files_processed, summary.files_quarantined) == (3, 1)
    return env


def daily(env: Env, day: date = DAY) -> daily_report.DailyReport:
    return daily_report.build(env.settings, env.warehouse, env.store, day)


def test_daily_figures(loaded: Env) -> None:
    r = daily(loaded)
    assert (r.total_sales, r.items, r.sales_rows, r.customer_count) == (D("1282.58"), 7, 4, 4)
    assert [(s.label, s.total, s.items) for s in r.stores] == [
        ("Store 1", D("12.38"), 3),
        ("Store 2", D("1270.20"), 4),
    ]
    assert [(p.label, p.total) for p in r.products] == [
        ("Extra Virgin Olive Oil 750ml", D("1234.50")),
        ("Basmati Rice 5kg", D("35.70")),
        (XSS, D("10.00")),
        ("Whole Milk 1L", D("2.38")),
    ]
    assert [(c.key, c.total) for c in r.customers] == [
        (4, D("1234.50")),
        (3, D("35.70")),
        (2, D("10.00")),
        (1, D("2.38")),
    ]
    assert [(p.store_id, p.key[1], p.total, p.best) for p in r.sales_people] == [
        (1, 3, D("10.00"), True),
        (1, 2, D("2.38"), False),
        (2, 5, D("1234.50"), True),
        (2, 4, D("35.70"), False),
    ]
    trend = dict(r.trend)
    assert len(r.trend) == daily_report.TREND_DAYS and r.trend[-1][0] == DAY
    assert trend[date(2024, 3, 4)] == D("15.09")
    assert trend[date(2024, 3, 3)] is None  # no sales loaded: a gap, not 0
    assert r.days_without_sales == [date(2024, 2, 21) + timedelta(days=i) for i in range(12)]


def test_daily_files_and_reject_reasons(loaded: Env) -> None:
    r = daily(loaded)
    files = {f.file_name: (f.status, f.rows_rejected, f.carries_day) for f in r.files}
    # c.csv only carries 2024-03-04: left to that day's report.
    assert files == {
        "2024-03-05/a.csv": ("I", 2, True),
        "2024-03-05/b.csv": ("I", 0, True),
        "2024-03-05/broken.csv": ("E", 0, False),
    }
    assert r.rows_rejected == 2
    # the quantity row also has a negative total: one row, two problems; the quarantined
    # file counts under the file-level rule it broke
    assert sorted(r.reasons) == [
        ("customer_id not in customer", 1),
        ("file: missing mandatory columns", 1),
        ("quantity is not greater than 0", 1),
        ("total_cost is negative", 1),
    ]
    # files loaded before runs counted rules: their rejected-row CSVs are read instead
    with loaded.warehouse.begin() as conn:
        conn.execute(delete(rule_count))
    assert sorted(daily(loaded).reasons) == [
        ("customer_id not in customer", 1),
        ("quantity is not greater than 0", 1),
        ("total_cost is negative", 1),
    ]
    other = daily(loaded, date(2024, 3, 4))
    assert {f.file_name for f in other.files} == {
        "2024-03-05/a.csv",
        "2024-03-04/c.csv",
        "2024-03-05/broken.csv",
    }


def test_reject_reasons_of_uncounted_files_are_read_where_their_run_put_them(env: Env) -> None:
    """x.csv.gz beside x.csv: the .gz's rejected rows went to x.csv.gz.csv, not to the
    x.csv its name alone would give; the report finds both files' reasons there."""
    good = "2,1,Tea,2024-03-05,1,1.00,1,1.00"
    env.land("2024-03-05/x.csv", csv_text(good, "1,1,Tea,2024-03-05,1,1.00,0,0.00"))
    env.land(
        "2024-03-05/x.csv.gz",
        gzip.compress(csv_text(good, "999999,1,Tea,2024-03-05,1,1.00,1,1.00").encode()),
    )
    assert env.run().files_processed == 2
    with env.warehouse.begin() as conn:
        conn.execute(delete(rule_count))

    r = daily(env)

    assert r.reasons_missing == []
    assert sorted(r.reasons) == [
        ("customer_id not in customer", 1),
        ("quantity is not greater than 0", 1),
    ]


def test_reject_reasons_are_split_and_malformed_lines_grouped() -> None:
    lines = [
        "customer_id,quantity,reject_reason\n",
        "1,x,quantity is not an integer; customer_id not in customer\n",
        '2,"a, b",quantity is not an integer\n',
        ",,malformed CSV line 7: too many columns: 1,2,3,4\n",
        ",,malformed CSV line 9: unterminated quote: x\n",
    ]
    assert daily_report.count_reasons(lines) == {
        "quantity is not an integer": 2,
        "customer_id not in customer": 1,
        "malformed CSV line": 2,
    }


def test_a_day_without_sales(loaded: Env) -> None:
    r = daily(loaded, date(2024, 2, 1))
    assert not r.has_sales and r.files == [] and r.total_sales == 0
    html = reports.render_daily(r)
    assert "No sales dated 2024-02-01 have been loaded." in html


def test_correction_replaces_the_days_figures(loaded: Env) -> None:
    loaded.land(
        "2024-03-05/b.csv", csv_text(row(3, 2, "Basmati Rice 5kg", "2024-03-05", 4, "11.90", 1))
    )
    assert loaded.run().files_corrected == 1
    r = daily(loaded)
    assert r.total_sales == D("2.38") + D("10.00") + D("11.90")
    assert [(s.label, s.total) for s in r.stores] == [
        ("Store 1", D("12.38")),
        ("Store 2", D("11.90")),
    ]
    # customer figures come from the lake objects of the current files only
    assert [(c.key, c.total) for c in r.customers] == [
        (3, D("11.90")),
        (2, D("10.00")),
        (1, D("2.38")),
    ]
    assert r.customer_count == 3 and r.lake_missing == []


def test_customer_totals_add_up_across_files(env: Env) -> None:
    env.land("s1.csv", csv_text(row(7, 1, "Bananas 1kg", "2024-03-05", 2, "1.39", 2)))
    env.land("s2.csv", csv_text(row(7, 2, "Bananas 1kg", "2024-03-05", 4, "1.39", 3)))
    env.land("s3.csv", csv_text(row(8, 2, "Bananas 1kg", "2024-03-05", 4, "5.00", 1)))
    env.run()
    r = daily(env)
    assert [(c.key, c.total, c.items, c.sales_rows) for c in r.customers] == [
        (7, D("6.95"), 5, 2),
        (8, D("5.00"), 1, 1),
    ]
    assert r.customer_count == 2
    assert r.customers[0].label == customer_name(env, 7)  # the name as loaded with the sale


def customer_name(env: Env, customer_id: int) -> str:
    with env.warehouse.begin() as conn:
        first, last = conn.execute(
            select(customer.c.first_name, customer.c.last_name).where(
                customer.c.customer_id == customer_id
            )
        ).one()
    return f"{first} {last}"


def test_missing_lake_object_is_reported_not_fatal(loaded: Env) -> None:
    prefix = loaded.settings.storage.lake_prefix + "sales/sales_month=2024-03/store_id=2/"
    [key] = [info.key for info in loaded.store.list(prefix)]
    loaded.store.delete(key)
    r = daily(loaded)
    assert r.lake_missing == [key]
    assert [c.key for c in r.customers] == [2, 1]  # store 2's customers are gone
    assert r.total_sales == D("1282.58")  # the stored sums do not depend on the lake
    assert "Incomplete: 1 lake object(s)" in reports.render_daily(r)


def assert_self_contained(html: str) -> None:
    assert "<script" not in html.lower()
    # nothing to fetch: no src/href attribute, no CSS url() or @import, one http(s) string only
    # (the SVG namespace, an identifier that is never fetched)
    assert not re.search(r"<[^>]*\s(src|href|xlink:href)\s*=", html, re.I)
    assert "url(" not in html and "@import" not in html
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) <= {"http://www.w3.org/2000/svg"}
    assert "default-src 'none'" in html  # and a policy that forbids fetching anyway


def test_daily_html(loaded: Env) -> None:
    html = reports.render_daily(daily(loaded))
    assert_self_contained(html)
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "1,282.58" in html and "1,234.50" in html  # money, thousands separated
    assert html.count("<svg") >= 4  # trend (line), stores, customers, products, reasons
    assert "<polyline" in html and "<rect" in html
    assert "Tuesday 05 March 2024" in html
    assert "quantity is not greater than 0" in html and "2024-03-05/broken.csv" in html

    # days without data: gaps in the line, marked, and named under the chart
    trend = html[html.index("Total sales per day") : html.index("</svg>")]
    assert trend.count("<polyline") == 1  # only 4 and 5 March connect
    assert trend.count('class="missing"') == 12 and "no sales" in trend and "no data" not in trend
    assert "No sales loaded for Wed 21 Feb, Thu 22 Feb," in html
    # a sales person's id is labelled as an id, not shown as a rank
    assert "sales person id 3" in html and "customer id 4" in html
    assert not re.search(r">#\d", html)


def test_currency_is_shown_with_every_amount(loaded: Env) -> None:
    r = daily(loaded)
    plain = reports.render_daily(r)
    assert "1,282.58" in plain and "EUR" not in plain and "€" not in plain
    code = reports.render_daily(r, "EUR")
    assert "1,282.58 EUR" in code and "1,234.50 EUR" in code  # KPI, tables, charts
    assert "Total sales per day" in code and "12.38 EUR" in code
    assert "in EUR." in code  # the footnote says so
    assert reports.money(D("-5"), "€") == "-€5.00"


def test_currency_symbol_in_the_monthly_report(months: Env) -> None:
    symbol = reports.render_monthly(monthly_report.build(months.warehouse, "2024-03"), "€")
    assert "€1,140.00" in symbol and "€380.00" in symbol and "€11.20" in symbol
    assert "10.00% off" in symbol and "€10.00%" not in symbol  # a discount is no amount


def test_currency_setting_reaches_the_report_command(tmp_path: Path) -> None:
    (tmp_path / "retail-etl.toml").write_text('[report]\ncurrency = "EUR"\n')
    assert cli(tmp_path, "init", "--demo").returncode == 0
    args = ["generate", "--date", "2024-06-01", "--rows", "50", "--files", "2"]
    assert cli(tmp_path, *args).returncode == 0
    assert cli(tmp_path, "run").returncode == 0
    for period in (["--month", "2024-06"], ["--date", "2024-06-01"]):
        result = cli(tmp_path, "report", *period, "--out", "r.html")
        assert result.returncode == 0, result.stderr
        html = (tmp_path / "r.html").read_text(encoding="utf-8")
        assert re.search(r"\d,\d{3}\.\d\d EUR", html), period
    bad = cli(tmp_path, "status", env={"RETAIL_ETL_REPORT__CURRENCY": "<b>"})
    assert bad.returncode == 2 and "report.currency" in bad.stderr


# --- monthly ------------------------------------------------------------------------------------
def sale(c: int, store: int, person: int, day: str, total: str) -> str:
    return f"{c},{store},Whole Milk 1L,{day},{person},{total},1,{total}"


FEB = csv_text(
    sale(1, 1, 2, "2024-02-10", "100.00"),
    sale(2, 1, 3, "2024-02-11", "40.00"),
    sale(3, 2, 4, "2024-02-11", "80.00"),
)
MAR = csv_text(
    sale(1, 1, 2, "2024-03-01", "60.00"),  # store 1: sellers 2 and 3 tie at 60
    sale(2, 1, 3, "2024-03-02", "60.00"),
    sale(4, 2, 4, "2024-03-03", "1000.00"),  # store 2: seller 4 wins
    sale(4, 2, 5, "2024-03-03", "20.00"),
)


@pytest.fixture
def months(env: Env) -> Env:
    with env.warehouse.begin() as conn:
        conn.execute(
            update(customer)
            .where(customer.c.customer_id == 4)
            .values(first_name="<img src=x onerror=alert(1)>", last_name="Evil & Co")
        )
    env.land("feb.csv", FEB)
    env.land("mar.csv", MAR)
    env.run()
    return env


def test_monthly_figures(months: Env) -> None:
    r = monthly_report.build(months.warehouse, "2024-03")
    assert (r.total_sales, r.customer_count, r.previous_total) == (D("1140.00"), 3, D("220.00"))
    assert r.change == D("418.2")  # (1140 - 220) / 220
    assert r.average_spend == D("380.00")
    assert [(s.customer_id, s.total, s.coupon) for s in r.top_spenders] == [
        (4, D("1020.00"), "loyalty"),
        (1, D("60.00"), None),
        (2, D("60.00"), None),
    ]
    stores = {s.store_id: s for s in r.stores}
    assert (stores[1].total, stores[1].previous, stores[1].change) == (
        D("120.00"),
        D("140.00"),
        D("-14.3"),
    )
    assert [(p.sales_person_id, p.winner, p.incentive) for p in stores[1].sellers] == [
        (2, True, D("0.60")),
        (3, True, D("0.60")),
    ]
    assert [(p.sales_person_id, p.winner, p.incentive) for p in stores[2].winners] == [
        (4, True, D("10.00"))
    ]
    assert r.incentive_total == D("11.20")
    assert r.trend_months == ["2024-02", "2024-03"]
    assert r.trend == [
        ("Store 1", [D("140.00"), D("120.00")]),
        ("Store 2", [D("80.00"), D("1020.00")]),
    ]
    # 2: 40 -> 60, 3: 80 -> 0 (win-back), 4: new but top (loyalty), 1: 100 -> 60
    assert {(c["customer_id"], c["segment"]) for c in r.coupons} == {
        (4, "loyalty"),
        (3, "win-back"),
    }
    assert r.coupon_segments == [("loyalty", 1, D("10.00")), ("win-back", 1, D("15.00"))]
    assert sum(n for _l, n in r.distribution) == 3


def test_monthly_html(months: Env) -> None:
    html = reports.render_monthly(monthly_report.build(months.warehouse, "2024-03"))
    assert "&lt;img src=x onerror=alert(1)&gt; Evil &amp; Co" in html
    assert "<img" not in html
    assert_self_contained(html)
    assert "1,140.00" in html and "1,020.00" in html
    assert html.count('class="winner"') == 3  # both tied sellers of store 1, one of store 2
    assert html.count("<svg") == 4 and "<polyline" in html
    assert "March 2024" in html and "win-back" in html
    # a manager's subtitle: no warehouse table names
    assert (
        "Sales, sales team and coupons of March 2024, 2 stores, compared with February 2024" in html
    )
    assert "_data_mart" not in html and "customer_coupons" not in html
    assert "sales person id 4" in html and "customer id 4" in html
    assert not re.search(r">#\d", html)


def test_coupons_are_listed_in_the_order_of_their_rank(env: Env) -> None:
    rules = {
        "coupons": [
            {"kind": "top_spenders", "segment": "loyalty", "discount_pct": 10, "share": 1},
        ]
    }
    ranked = env.with_settings(rules=rules)
    # customer ids in the opposite order of their spend
    ranked.land(
        "apr.csv",
        csv_text(
            sale(1, 1, 2, "2024-04-01", "10.00"),
            sale(2, 1, 2, "2024-04-01", "30.00"),
            sale(3, 1, 2, "2024-04-01", "20.00"),
            sale(4, 1, 2, "2024-04-01", "50.00"),
        ),
    )
    ranked.run()
    r = monthly_report.build(ranked.warehouse, "2024-04", ranked.settings.rules)
    html = reports.render_monthly(r)
    listed = re.findall(r"rank (\d+), spent", html)
    assert listed == ["1", "2", "3", "4"]
    assert [c["customer_id"] for c in r.coupons] == [4, 2, 3, 1]


def test_spend_drop_coupons_are_listed_by_how_far_spend_fell() -> None:
    from retail_etl.config import DEFAULT_COUPON_RULES

    listing = [
        {"segment": "win-back", "customer_id": 1, "total_sales": D("40.00")},  # fell 60%
        {"segment": "win-back", "customer_id": 2, "total_sales": D("0.00")},  # fell 100%
        {"segment": "loyalty", "customer_id": 3, "total_sales": D("90.00")},
        {"segment": "win-back", "customer_id": 3, "total_sales": D("10.00")},  # fell 90%
        {"segment": "welcome", "customer_id": 5, "total_sales": D("5.00")},
        {"segment": "loyalty", "customer_id": 6, "total_sales": D("95.00")},
    ]
    previous = {1: D("100.00"), 2: D("50.00"), 3: D("100.00")}
    ordered = monthly_report.coupon_order(listing, DEFAULT_COUPON_RULES, previous)
    assert [(c["segment"], c["customer_id"]) for c in ordered] == [
        ("loyalty", 6),
        ("loyalty", 3),
        ("win-back", 2),
        ("win-back", 3),
        ("win-back", 1),
        ("welcome", 5),
    ]


def test_month_without_sales_still_renders(env: Env) -> None:
    r = monthly_report.build(env.warehouse, "2030-01")
    assert not r.has_sales
    html = reports.render_monthly(r)
    assert "No sales have been loaded for 2030-01." in html and "no data" in html


def test_distribution_buckets() -> None:
    dist = monthly_report.distribution([D("2100"), D("3400.5"), D("2999.99"), D("3000")])
    assert dist[0] == ("2k–2.2k", 1) and dist[-1] == ("3.4k–3.6k", 1)
    assert sum(n for _l, n in dist) == 4 and len(dist) == 8
    assert monthly_report.distribution([D("5")]) == [("5–6", 1)]
    assert monthly_report.distribution([]) == []


# --- command line -----------------------------------------------------------------------------


def test_report_command(tmp_path: Path) -> None:
    assert cli(tmp_path, "init", "--demo").returncode == 0
    args = ["generate", "--date", "2024-06-01", "--days", "2", "--rows", "50", "--files", "2"]
    assert cli(tmp_path, *args).returncode == 0
    assert cli(tmp_path, "run").returncode == 0
    result = cli(tmp_path, "report", "--month", "2024-06", "--out", "out/june.html")
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path == tmp_path / "out" / "june.html" and path.read_text().startswith("<!DOCTYPE html>")
    result = cli(tmp_path, "report", "--date", "2024-06-02", "--out", "day.html")
    assert result.returncode == 0, result.stderr
    assert "Sunday 02 June 2024" in (tmp_path / "day.html").read_text()
    for bad in (
        ["--out", "x.html"],
        ["--month", "2024-06", "--date", "2024-06-02", "--out", "x.html"],
        ["--month", "2024-6", "--out", "x.html"],
        ["--date", "2024-02-30", "--out", "x.html"],
    ):
        result = cli(tmp_path, "report", *bad)
        assert result.returncode == 2 and "Traceback" not in result.stderr, bad
    assert not (tmp_path / "x.html").exists()


def test_demo_writes_a_monthly_report(tmp_path: Path) -> None:
    result = cli(tmp_path, "demo", "--days", "2", "--rows", "100")
    assert result.returncode == 0, result.stderr
    match = re.search(r"monthly report:\s+(\S+\.html)", result.stdout)
    assert match, result.stdout
    html = Path(match.group(1)).read_text(encoding="utf-8")
    assert "Monthly report" in html and html.count("<svg") == 4
    assert "no data" not in html  # every chart has something to show
