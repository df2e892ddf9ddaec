"""The whole job on every backend: each test taking `env` runs on the embedded parts and on
S3 (moto over HTTP) + MariaDB, with the same body."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import HEADER, Env, csv_text, make_env
from helpers import (
    customer_mart,
    keys,
    lake_columns,
    lake_rows,
    ledger,
    ledger_outcomes,
    object_bytes,
    state,
    team_mart,
)
from sqlalchemy import func, select

from retail_etl.engines import LAKE_COLUMNS
from retail_etl.errors import UnexpectedError
from retail_etl.marts import coupons
from retail_etl.tools.generate import generate
from retail_etl.warehouse.schema import (
    customer,
    daily_product_partial,
    daily_sales_person_partial,
)

FILE_A = csv_text(
    "1,1,Whole Milk 1L,2024-03-01,2,1.19,3,3.57",
    "1,1,Whole Milk 1L,2024-03-15,2,1.19,1,1.19",
    "2,1,Rolled Oats 1kg,2024-03-02,3,3.49,2,6.98",
    "2,1,Rolled Oats 1kg,2024-04-02,3,3.49,1,3.49",
    "3,1,Rolled Oats 1kg,2024-03-02,3,3.49,0,0.00",  # quantity 0
    "999999,1,Rolled Oats 1kg,2024-03-02,3,3.49,1,3.49",  # unknown customer
)
FILE_B = csv_text("1,2,Whole Milk 1L,2024-03-03,4,0.10,3,0.30")

EXPECTED_CUSTOMERS = {
    (1, "2024-03-01"): Decimal("5.06"),
    (2, "2024-03-01"): Decimal("6.98"),
    (2, "2024-04-01"): Decimal("3.49"),
}
EXPECTED_TEAM = {
    (1, 2, "2024-03"): (Decimal("4.76"), Decimal("0.00")),
    (1, 3, "2024-03"): (Decimal("6.98"), Decimal("0.07")),  # top seller: 0.0698 -> 0.07
    (1, 3, "2024-04"): (Decimal("3.49"), Decimal("0.03")),
    (2, 4, "2024-03"): (Decimal("0.30"), Decimal("0.00")),  # 0.003 rounds to 0.00
}


def test_known_rows_give_exact_marts_lake_and_quarantine(env: Env, tmp_path: Path) -> None:
    env.land("2024-03-01/a.csv", FILE_A)
    env.land("2024-03-01/b.csv", FILE_B)

    summary = env.run()

    assert summary.outcome == "succeeded"
    assert customer_mart(env) == EXPECTED_CUSTOMERS
    assert all(type(v) is Decimal for v in customer_mart(env).values())
    assert team_mart(env) == EXPECTED_TEAM
    assert ledger_outcomes(env) == [
        ("2024-03-01/a.csv", "I", 4, 2),
        ("2024-03-01/b.csv", "I", 1, 0),
    ]
    assert sum(lake_rows(env, tmp_path).values()) == 5
    # The lake's columns (SPEC section 7), not the engine's work columns of rejected rows.
    assert lake_columns(env, tmp_path) == {LAKE_COLUMNS}
    assert {"customer_full_name", "store_address", "source_file", "run_id"} <= set(LAKE_COLUMNS)
    assert not {"reject_reason", "extra_values"} & set(LAKE_COLUMNS)
    assert not [name for name in LAKE_COLUMNS if name.startswith("raw_")]
    storage = env.settings.storage
    assert keys(env, env.landing) == []
    archived = f"{storage.archive_prefix}run-{summary.run_id}/2024-03-01/a.csv"
    assert object_bytes(env, archived, tmp_path) == FILE_A.encode()
    rejected = object_bytes(
        env, f"{storage.error_prefix}rejected/{summary.run_id}/2024-03-01/a.csv", tmp_path
    ).decode()
    lines = rejected.splitlines()
    assert lines[0] == HEADER + ",reject_reason"
    assert len(lines) == 3 and "quantity" in lines[1] and "customer_id" in lines[2]

    # Nothing new: a second run changes nothing.
    again = env.run()
    assert again.files_seen == 0
    assert customer_mart(env) == EXPECTED_CUSTOMERS


def test_correction_and_duplicate(env: Env, tmp_path: Path) -> None:
    env.land("2024-03-01/a.csv", FILE_A)
    env.land("2024-03-01/b.csv", FILE_B)
    env.run()

    env.land("2024-03-01/a.csv", csv_text("1,1,Whole Milk 1L,2024-03-01,2,1.19,1,1.19"))
    env.land("copy-of-b.csv", FILE_B)
    summary = env.run()

    assert (summary.files_corrected, summary.files_duplicate) == (1, 1)
    assert customer_mart(env) == {(1, "2024-03-01"): Decimal("1.49")}
    assert team_mart(env) == {
        (1, 2, "2024-03"): (Decimal("1.19"), Decimal("0.01")),
        (2, 4, "2024-03"): (Decimal("0.30"), Decimal("0.00")),
    }
    statuses = sorted(
        (r["file_name"], r["status"], r["superseded_by"] is None) for r in ledger(env)
    )
    assert statuses == [
        ("2024-03-01/a.csv", "I", False),
        ("2024-03-01/a.csv", "I", True),
        ("2024-03-01/b.csv", "I", True),
        ("copy-of-b.csv", "D", True),
    ]
    assert sum(lake_rows(env, tmp_path).values()) == 2


def test_a_mart_update_is_all_or_nothing(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.land("2024-03-01/a.csv", FILE_A)

    def fail(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("injected failure after the mart rows were written")

    # The coupons are computed after both marts and the daily sums were written, inside the
    # same transaction: none of it may survive the failure.
    monkeypatch.setattr(coupons, "refresh", fail)
    # a defect that fails the file alone is reported as such (exit 8), nothing quarantined
    with pytest.raises(UnexpectedError, match="injected failure"):
        env.run()
    assert customer_mart(env) == {}
    assert team_mart(env) == {}
    with env.warehouse.begin() as conn:
        for table in (daily_sales_person_partial, daily_product_partial):
            assert conn.execute(select(func.count()).select_from(table)).scalar() == 0
    assert [r["status"] for r in ledger(env)] == ["A"]

    monkeypatch.undo()
    env.land("2024-03-01/b.csv", FILE_B)
    assert env.run().outcome == "succeeded"
    assert customer_mart(env) == EXPECTED_CUSTOMERS
    assert team_mart(env) == EXPECTED_TEAM


def test_unicode_names_survive_the_warehouse(env: Env) -> None:
    """utf8mb4: four-byte characters and quotes round-trip through dimensions and marts."""
    with env.warehouse.begin() as conn:
        conn.execute(
            customer.update()
            .where(customer.c.customer_id == 1)
            .values(first_name="Zoë 🛒", last_name="O'Brien-Ñúñez")
        )
    env.land("u.csv", csv_text("1,1,Whole Milk 1L,2024-03-01,2,1.19,1,1.19"))
    env.run()
    from retail_etl.warehouse.schema import customers_data_mart

    with env.warehouse.begin() as conn:
        name = conn.execute(select(customers_data_mart.c.full_name)).scalar_one()
    assert name == "Zoë 🛒 O'Brien-Ñúñez"


@pytest.mark.slow
def test_generated_month_is_identical_on_every_backend(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The same landed files give the same ledger, lake and marts on every backend."""
    from conftest import BACKENDS

    results = {}
    for name in BACKENDS:
        env = make_env(name, tmp_path / name, request)
        try:
            landing = env.landing
            generate(
                env.store, env.warehouse, landing, date(2024, 5, 30), 3, 400, 2, 11, (), (), 0.02
            )
            generate(
                env.store, env.warehouse, landing, date(2024, 6, 2), 1, 300, 1, 12, ("payment",)
            )
            generate(
                env.store, env.warehouse, landing, date(2024, 6, 3), 1, 50, 1, 13, (), ("price",)
            )
            first = env.run()
            assert first.outcome == "succeeded" and first.files_quarantined == 1
            # A correction of one file in a later run.
            generate(env.store, env.warehouse, landing, date(2024, 5, 30), 1, 100, 1, 99)
            second = env.run()
            assert second.files_corrected == 1
            (tmp_path / f"{name}-read").mkdir()
            results[name] = state(env, tmp_path / f"{name}-read")
        finally:
            env.warehouse.dispose()
    reference = results.pop("embedded")
    assert reference["customers"] and reference["team"]
    for name, observed in results.items():
        assert observed == reference, f"{name} differs from the embedded backend"
