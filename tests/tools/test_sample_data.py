"""`init --demo`'s sample chain: the small default kept as it was, larger chains generated
deterministically and loaded through each warehouse's bulk path."""

from __future__ import annotations

import pytest
from conftest import Env
from sqlalchemy import func, select

from retail_etl.errors import ConfigError
from retail_etl.tools import sample_data
from retail_etl.warehouse.schema import customer, product, sales_team, store


def _count(env: Env, table) -> int:
    with env.warehouse.begin() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_a_larger_chain_loads_every_row_on_each_backend(env: Env) -> None:
    size = sample_data.ChainSize(customers=5_000, stores=30, products=500, sales_people_per_store=3)
    loaded = sample_data.load(env.warehouse, size)
    assert loaded == {"store": 30, "sales_team": 90, "product": 500, "customer": 5_000}
    for table, rows in ((store, 30), (sales_team, 90), (product, 500), (customer, 5_000)):
        assert _count(env, table) == rows
    with env.warehouse.begin() as conn:
        team = conn.execute(
            select(sales_team.c.id, sales_team.c.store_id, sales_team.c.manager_id)
        ).fetchall()
        names = conn.execute(select(product.c.name)).scalars().all()
    # each store has its own team, led by its manager (NULL manager_id travels as NULL)
    assert {s for _i, s, _m in team} == set(range(1, 31))
    assert all(m is None or (m - 1) // 3 == (i - 1) // 3 for i, _s, m in team)
    assert sum(m is None for _i, _s, m in team) == 30
    assert len(set(names)) == 500  # products are looked up by name
    # loading again replaces the rows, in one transaction
    sample_data.load(env.warehouse, sample_data.ChainSize())
    assert [_count(env, t) for t in (store, sales_team, product, customer)] == [4, 10, 15, 40]


def test_the_chain_is_deterministic_and_vectorised() -> None:
    size = sample_data.ChainSize(customers=20_000, stores=300, products=5_000)
    first, again = sample_data.chain(size), sample_data.chain(size)
    assert all(first[t].equals(again[t]) for t in first)
    assert first[sales_team].num_rows == 300 * sample_data.SALES_PEOPLE_PER_STORE
    # the sample stores and products come first, then generated ones
    assert first[store].column("address")[0].as_py() == sample_data.STORES[0][1]
    assert first[product].column("name")[14].as_py() == sample_data.PRODUCTS[14][1]
    assert sample_data.customers(40).column("last_name")[1].as_py() == "Müller"  # as before


def test_sizes_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="--stores"):
        sample_data.ChainSize(stores=0)
