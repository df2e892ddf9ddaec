"""Per-day sums (daily.py): equal to the lake, and exactly once whatever happens."""

from __future__ import annotations

from collections import Counter
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from conftest import BACKENDS, Env, make_env
from helpers import lake_rows
from sqlalchemy import select

from retail_etl.tools.generate import generate
from retail_etl.warehouse.schema import (
    customer_coupons,
    daily_product_partial,
    daily_sales_person_partial,
)


def land(env: Env, start: date = date(2024, 3, 30), seed: int = 5) -> None:
    # two days across a month boundary, a few bad rows
    generate(env.store, env.warehouse, env.landing, start, 2, 300, 3, seed=seed, bad_fraction=0.01)


def daily_sums(env: Env) -> dict[str, Counter[Any]]:
    """What the daily report reads, without the file ids (which differ between installations)."""
    sp, pr = daily_sales_person_partial, daily_product_partial
    people: Counter[Any] = Counter()
    products: Counter[Any] = Counter()
    with env.warehouse.begin() as conn:
        for r in conn.execute(select(sp)):
            people[(r.sales_date, r.store_id, r.sales_person_id)] += r.total_sales
            people[(r.sales_date, r.store_id, r.sales_person_id, "items")] += r.items
        for r in conn.execute(select(pr)):
            products[(r.sales_date, r.product_name)] += r.total_sales
            products[(r.sales_date, r.product_name, "rows")] += r.sales_rows
    return {"people": people, "products": products}


def coupon_rows(env: Env) -> list[tuple[Any, ...]]:
    t = customer_coupons
    with env.warehouse.begin() as conn:
        return [tuple(r) for r in conn.execute(select(t).order_by(t.c.month, t.c.customer_id))]


def test_daily_sums_equal_the_lake(env: Env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    land(env)
    env.run()
    people: Counter[Any] = Counter()
    products: Counter[Any] = Counter()
    for row, n in lake_rows(env, tmp_path).items():
        _month, store_id, _c, product, day, person, _price, qty, total, _extra, _src = row
        people[(day, store_id, person)] += total * n
        people[(day, store_id, person, "items")] += qty * n
        products[(day, product)] += total * n
        products[(day, product, "rows")] += n
    sums = daily_sums(env)
    assert sums["people"] == people and sums["products"] == products
    assert {k[0] for k in people} == {date(2024, 3, 30), date(2024, 3, 31)}
    assert all(isinstance(v, Decimal) for k, v in sums["people"].items() if len(k) == 3)


CHECKPOINTS = ["enriched", "lake_written", "rejected_written", "marts_committed", "finished"]


class Crash(Exception):
    pass


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("where", CHECKPOINTS)
def test_resume_anywhere_gives_the_same_sums_and_coupons(
    request: pytest.FixtureRequest, tmp_path, where: str, backend: str
) -> None:  # type: ignore[no-untyped-def]
    reference = make_env(backend, tmp_path / "reference", request)
    crashed = make_env(backend, tmp_path / "crashed", request)
    for environment in (reference, crashed):
        land(environment)
    reference.run()

    def crash(stage: str) -> None:
        if stage == where:
            raise Crash(stage)

    with pytest.raises(Crash):
        crashed.run(checkpoint=crash)
    crashed.run()
    assert daily_sums(crashed) == daily_sums(reference)
    assert coupon_rows(crashed) == coupon_rows(reference)
    assert coupon_rows(reference)  # there is something to compare


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_correction_replaces_a_files_sums(
    request: pytest.FixtureRequest, tmp_path, backend: str
) -> None:  # type: ignore[no-untyped-def]
    corrected = make_env(backend, tmp_path / "corrected", request)
    land(corrected)
    corrected.run()
    before = daily_sums(corrected)
    land(corrected, seed=6)  # the same names, other content: every file is a correction
    assert corrected.run().files_corrected == 6
    assert daily_sums(corrected) != before

    direct = make_env(backend, tmp_path / "direct", request)
    land(direct, seed=6)
    direct.run()
    assert daily_sums(corrected) == daily_sums(direct)
    assert coupon_rows(corrected) == coupon_rows(direct)
