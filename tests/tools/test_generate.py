"""`generate`: realistic, deterministic synthetic sales files."""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest
from conftest import Env
from helpers import keys, object_bytes

from retail_etl.errors import ConfigError
from retail_etl.tools.generate import generate


def test_same_seed_same_bytes_other_seed_other_bytes(embedded: Env, tmp_path) -> None:
    def contents(seed: int) -> list[bytes]:
        written = generate(
            embedded.store,
            embedded.warehouse,
            f"gen{seed}-{len(keys(embedded, ''))}/",
            date(2024, 5, 1),
            days=2,
            rows=500,
            files=2,
            seed=seed,
        )
        return [object_bytes(embedded, key, tmp_path) for key, _size in written]

    assert contents(1) == contents(1)
    assert contents(1) != contents(2)


def test_rows_are_valid_sales_with_consistent_money(embedded: Env, tmp_path) -> None:
    written = generate(
        embedded.store, embedded.warehouse, "g/", date(2024, 5, 1), days=1, rows=2000, files=4
    )
    assert len(written) == 4
    for key, _size in written:
        rows = list(csv.DictReader(io.StringIO(object_bytes(embedded, key, tmp_path).decode())))
        assert len(rows) == 2000
        assert {r["sales_date"] for r in rows} == {"2024-05-01"}
        assert len({r["store_id"] for r in rows}) == 1
        for r in rows[:200]:
            price, qty, total = float(r["price"]), int(r["quantity"]), float(r["total_cost"])
            assert qty >= 1 and 0 < total <= price * qty + 1e-9
            assert len(r["price"].split(".")[1]) == 2


def test_extra_and_dropped_columns(embedded: Env, tmp_path) -> None:
    written = generate(
        embedded.store,
        embedded.warehouse,
        "g/",
        date(2024, 5, 1),
        rows=10,
        files=1,
        extra_columns=("payment_mode",),
        drop_columns=("price",),
    )
    header = object_bytes(embedded, written[0][0], tmp_path).decode().splitlines()[0].split(",")
    assert "payment_mode" in header and "price" not in header
    with pytest.raises(ConfigError, match="nope"):
        generate(embedded.store, embedded.warehouse, "g/", date(2024, 5, 1), drop_columns=("nope",))


def test_bad_rows_fraction_produces_rejected_rows(embedded: Env) -> None:
    generate(
        embedded.store,
        embedded.warehouse,
        embedded.landing,
        date(2024, 5, 1),
        rows=5000,
        files=1,
        bad_fraction=0.05,
    )
    summary = embedded.run()
    assert 150 < summary.rows_rejected < 350
    assert summary.rows_valid + summary.rows_rejected == 5000


def test_generate_needs_dimensions(tmp_path, request) -> None:
    from conftest import make_env

    bare = make_env("embedded", tmp_path, request, demo=False)
    with pytest.raises(ConfigError, match="init --demo"):
        generate(bare.store, bare.warehouse, "g/", date(2024, 5, 1))


def test_more_stores_than_files_spread_every_file_over_a_region(embedded: Env, tmp_path) -> None:
    from retail_etl.tools import sample_data
    from retail_etl.tools.generate import Limits

    size = sample_data.ChainSize(customers=3_000, stores=20, products=200, sales_people_per_store=3)
    sample_data.load(embedded.warehouse, size)

    def files(seed: int, limits: Limits | None = None) -> list[list[dict[str, str]]]:
        written = generate(
            embedded.store,
            embedded.warehouse,
            f"r{seed}-{len(keys(embedded, ''))}/",
            date(2024, 5, 1),
            rows=4_000,
            files=4,
            seed=seed,
            limits=limits,
        )
        assert [k.rsplit("/", 1)[1] for k, _ in written] == [
            f"sales_region{i}_2024-05-01_0{i}.csv" for i in range(1, 5)
        ]
        return [
            list(csv.DictReader(io.StringIO(object_bytes(embedded, k, tmp_path).decode())))
            for k, _ in written
        ]

    day = files(1)
    assert day == files(1)  # deterministic for a seed
    for index, rows in enumerate(day):
        # file i holds stores i, i + 4, ...: each of its five stores sells, by its own team
        assert {int(r["store_id"]) for r in rows} == set(range(index + 1, 21, 4))
        for r in rows:
            assert (int(r["sales_person_id"]) - 1) // 3 + 1 == int(r["store_id"])
    every = [r for rows in day for r in rows]
    assert len({r["customer_id"] for r in every}) > 2_000
    assert len({r["product_name"] for r in every}) == 200
    # limits: the first customers, stores, products and sales people only
    small = [r for rows in files(2, Limits(100, 8, 10, 1)) for r in rows]
    assert max(int(r["customer_id"]) for r in small) <= 100
    assert {int(r["store_id"]) for r in small} == set(range(1, 9))
    assert len({r["product_name"] for r in small}) == 10
    assert {(int(r["sales_person_id"]) - 1) % 3 for r in small} == {0}
    # the whole day loads: every row valid, spread over all 20 stores
    generate(embedded.store, embedded.warehouse, embedded.landing, date(2024, 5, 1), rows=500)
    summary = embedded.run()
    assert summary.rows_valid == 2_000 and summary.rows_rejected == 0
