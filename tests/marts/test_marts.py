"""SPEC section 6: the marts equal an independent pure-Python Decimal computation."""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import Env, csv_text
from helpers import customer_mart_rows, keys, object_bytes, team_mart
from sqlalchemy import select

from retail_etl.marts import snapshots
from retail_etl.tools.generate import generate
from retail_etl.warehouse.schema import customer, sales_team, store

INT = re.compile(r"[+-]?\d+")
MONEY = re.compile(r"[+-]?(\d+(\.\d{0,2})?|\.\d{1,2})")


def reference_marts(env: Env, texts: list[str], rate: Decimal = Decimal("0.01")):
    """The marts computed the slow, obvious way from the CSV texts."""
    with env.warehouse.begin() as conn:
        customers = {r.customer_id: r for r in conn.execute(select(customer))}
        stores = {r.id for r in conn.execute(select(store))}
        sellers = {r.id: r for r in conn.execute(select(sales_team))}
    by_customer: dict[tuple[int, date], Decimal] = defaultdict(Decimal)
    by_seller: dict[tuple[int, int, str], Decimal] = defaultdict(Decimal)
    for text in texts:
        for row in csv.DictReader(io.StringIO(text)):
            values = {k: (v or "").strip() for k, v in row.items()}
            ints = ("customer_id", "store_id", "sales_person_id", "quantity")
            if not all(INT.fullmatch(values[k]) for k in ints):
                continue
            if not all(MONEY.fullmatch(values[k]) for k in ("price", "total_cost")):
                continue
            if not values["product_name"] or not re.fullmatch(
                r"\d{4}-\d{2}-\d{2}", values["sales_date"]
            ):
                continue
            try:
                day = date.fromisoformat(values["sales_date"])
            except ValueError:
                continue
            cid, sid, pid, qty = (int(values[k]) for k in ints)
            price, total = Decimal(values["price"]), Decimal(values["total_cost"])
            if qty <= 0 or price < 0 or total < 0:
                continue
            if cid not in customers or sid not in stores or pid not in sellers:
                continue
            by_customer[(cid, day.replace(day=1))] += total
            by_seller[(sid, pid, day.strftime("%Y-%m"))] += total
    customer_rows = [
        {
            "customer_id": cid,
            "full_name": f"{customers[cid].first_name} {customers[cid].last_name}",
            "address": customers[cid].address,
            "phone_number": customers[cid].phone_number,
            "sales_date_month": month,
            "total_sales": total,
        }
        for (cid, month), total in sorted(by_customer.items())
    ]
    best: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
    for (sid, _pid, month), total in by_seller.items():
        best[(sid, month)] = max(best[(sid, month)], total)
    team = {
        key: (
            total,
            (total * rate).quantize(Decimal("0.01"), ROUND_HALF_UP)
            if total == best[(key[0], key[2])]
            else Decimal("0.00"),
        )
        for key, total in by_seller.items()
    }
    return customer_rows, team


def landed_texts(env: Env, tmp_path) -> list[str]:
    return [object_bytes(env, key, tmp_path).decode() for key in keys(env, env.landing)]


def test_marts_equal_an_independent_decimal_computation(env: Env, tmp_path) -> None:
    # Two months, bad rows included, several runs.
    generate(
        env.store,
        env.warehouse,
        env.landing,
        date(2024, 3, 27),
        days=3,
        rows=400,
        files=4,
        seed=11,
        bad_fraction=0.02,
    )
    texts = landed_texts(env, tmp_path)
    env.run()
    generate(
        env.store,
        env.warehouse,
        env.landing,
        date(2024, 3, 30),
        days=4,
        rows=400,
        files=4,
        seed=12,
        bad_fraction=0.02,
        extra_columns=("payment",),
    )
    texts += landed_texts(env, tmp_path)
    env.run()
    expected_customers, expected_team = reference_marts(env, texts)
    internal = {"sales_rows", "total_cents"}
    actual = [{k: v for k, v in r.items() if k not in internal} for r in customer_mart_rows(env)]
    assert actual == expected_customers
    assert team_mart(env) == expected_team
    assert len({month for (_s, _p, month) in expected_team}) == 2


def test_top_seller_ties_all_get_the_incentive_rounded_half_up(env: Env) -> None:
    # Store 3, March: sellers 6 and 7 tie at 1234.50 -> 12.345 -> 12.35 each (half-up).
    # Store 1, March: seller 2 alone on top.
    env.land(
        "ties.csv",
        csv_text(
            "1,3,Rice,2024-03-01,6,1234.50,1,1234.50",
            "2,3,Rice,2024-03-02,7,1000.00,1,1000.00",
            "3,3,Rice,2024-03-03,7,234.50,1,234.50",
            "4,1,Milk,2024-03-04,2,10.05,1,10.05",
            "4,1,Milk,2024-03-04,3,10.04,1,10.04",
        ),
    )
    env.run()
    assert team_mart(env) == {
        (3, 6, "2024-03"): (Decimal("1234.50"), Decimal("12.35")),
        (3, 7, "2024-03"): (Decimal("1234.50"), Decimal("12.35")),
        (1, 2, "2024-03"): (Decimal("10.05"), Decimal("0.10")),
        (1, 3, "2024-03"): (Decimal("10.04"), Decimal("0.00")),
    }
    # A later file breaks the tie: only the new leader keeps an incentive.
    env.land("later.csv", csv_text("5,3,Rice,2024-03-20,7,0.01,1,0.01"))
    env.run()
    assert team_mart(env)[(3, 6, "2024-03")] == (Decimal("1234.50"), Decimal("0.00"))
    assert team_mart(env)[(3, 7, "2024-03")] == (Decimal("1234.51"), Decimal("12.35"))


def test_customer_mart_month_is_first_day_and_full_name_joined(env: Env) -> None:
    env.land("m.csv", csv_text("1,1,Milk,2024-02-29,2,1.00,1,1.00"))
    env.run()
    (row,) = customer_mart_rows(env)
    with env.warehouse.begin() as conn:
        person = conn.execute(select(customer).where(customer.c.customer_id == 1)).one()
    assert row["sales_date_month"] == date(2024, 2, 1)
    assert row["full_name"] == f"{person.first_name} {person.last_name}"
    assert row["sales_rows"] == 1


def test_snapshots_hold_each_months_mart_rows_read_a_few_at_a_time(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "SNAPSHOT_BATCH_ROWS", 3)  # several row groups per snapshot
    generate(env.store, env.warehouse, env.landing, date(2024, 3, 30), days=3, rows=50, files=2)
    env.run()
    lake = env.settings.storage.lake_prefix
    snapshot: list[tuple[int, date, Decimal]] = []
    row_groups = 0
    for key in keys(env, lake + "customers_data_mart/"):
        table = pq.ParquetFile(io.BytesIO(object_bytes(env, key, tmp_path)))
        row_groups += table.num_row_groups
        snapshot += [
            (r["customer_id"], r["sales_date_month"], r["total_sales"])
            for r in table.read().to_pylist()
        ]
    mart = [
        (r["customer_id"], r["sales_date_month"], r["total_sales"]) for r in customer_mart_rows(env)
    ]
    assert sorted(snapshot) == sorted(mart)
    assert {month for _c, month, _t in mart} == {date(2024, 3, 1), date(2024, 4, 1)}
    assert row_groups > 2


def test_a_months_snapshot_is_the_marts_after_a_batch_committed_in_parts(
    env: Env, tmp_path: Path
) -> None:
    """A file that would overflow a stored total is set aside and the rest of the batch is
    committed in parts: the month's snapshot holds every part, as the marts do."""
    raised = env.with_settings(rules={"max_amount": "9999999999999999.99"})
    env.land(
        "weeks-ago.csv", csv_text("2,1,Gold,2024-03-05,2,9999999999999999.00,1,9999999999999999.00")
    )
    assert raised.run().outcome == "succeeded"
    env.land("a.csv", csv_text("1,1,Tea,2024-03-06,3,10.00,1,10.00"))
    env.land("b-overflows.csv", csv_text("2,1,Tea,2024-03-06,2,1.00,1,1.00"))
    env.land("c.csv", csv_text("3,1,Tea,2024-03-07,3,20.00,1,20.00"))

    summary = raised.run()

    assert sorted((f.file_name, f.status) for f in summary.files) == [
        ("a.csv", "I"),
        ("b-overflows.csv", "E"),
        ("c.csv", "I"),
    ]
    [key] = keys(env, env.settings.storage.lake_prefix + "customers_data_mart/")
    snapshot = pq.read_table(io.BytesIO(object_bytes(env, key, tmp_path))).to_pylist()
    assert all(row.pop("updated_at") for row in snapshot)
    assert sorted(snapshot, key=lambda r: r["customer_id"]) == sorted(
        customer_mart_rows(env), key=lambda r: r["customer_id"]
    )
    assert sorted(r["customer_id"] for r in snapshot) == [1, 2, 3]


def test_money_reads_back_as_exact_decimals_on_sqlite(embedded: Env, tmp_path: Path) -> None:
    """SQLite stores DECIMAL as REAL (59481.00 as the integer 59481, 10.10 as 10.1): every
    output of the tool still reads two-place Decimals, never floats."""
    from retail_etl import reports
    from retail_etl.marts import coupons

    embedded.land(
        "day.csv",
        csv_text(
            "1,1,Sofa,2024-03-05,1,59481.00,1,59481.00",
            "2,1,Whole Milk 1L,2024-03-05,1,10.10,1,10.10",
        ),
    )
    embedded.run()
    customers = {r["customer_id"]: r["total_sales"] for r in customer_mart_rows(embedded)}
    assert customers == {1: Decimal("59481.00"), 2: Decimal("10.10")}
    assert all(type(v) is Decimal and v.as_tuple().exponent == -2 for v in customers.values())
    assert team_mart(embedded) == {(1, 1, "2024-03"): (Decimal("59491.10"), Decimal("594.91"))}

    listing = {
        r["customer_id"]: r["total_sales"] for r in coupons.listing(embedded.warehouse, "2024-03")
    }
    assert listing == {1: Decimal("59481.00"), 2: Decimal("10.10")}
    out = tmp_path / "coupons.csv"
    coupons.export_csv(embedded.warehouse, "2024-03", out)
    with open(out, encoding="utf-8", newline="") as handle:
        assert sorted(r["total_sales"] for r in csv.DictReader(handle)) == ["10.10", "59481.00"]

    html = reports.monthly_html(embedded.settings, "2024-03")
    assert "59,481.00" in html and "59,491.10" in html and "59481.0<" not in html
    daily = reports.daily_html(embedded.settings, date(2024, 3, 5))
    assert "59,481.00" in daily and "59,491.10" in daily

    snapshot = f"{embedded.settings.storage.lake_prefix}customers_data_mart/"
    [key] = keys(embedded, snapshot)
    rows = pq.read_table(io.BytesIO(object_bytes(embedded, key, tmp_path))).to_pylist()
    assert sorted(r["total_sales"] for r in rows) == [Decimal("10.10"), Decimal("59481.00")]
