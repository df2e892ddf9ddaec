"""`retail-etl generate`: realistic synthetic sales CSVs, vectorised (NumPy + Arrow's CSV
writer) and deterministic for a given seed, written into the landing prefix."""

from __future__ import annotations

import gzip
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import select

from retail_etl.cents import decimals
from retail_etl.engines import MANDATORY_COLUMNS
from retail_etl.errors import ConfigError
from retail_etl.storage import ObjectStore
from retail_etl.warehouse import Warehouse
from retail_etl.warehouse.schema import customer, product, sales_team, store

EXTRA_VALUES = ["cash", "card", "wallet", "voucher"]


@dataclass(frozen=True)
class Catalogue:
    """What generated rows may refer to, read from the dimension tables."""

    customer_ids: np.ndarray
    store_ids: np.ndarray
    sellers_by_store: dict[int, np.ndarray]
    product_names: pa.Array
    product_cents: np.ndarray

    @classmethod
    def from_warehouse(cls, warehouse: Warehouse, limits: Limits | None = None) -> Catalogue:
        limits = limits or Limits()
        with warehouse.begin() as conn:
            customers = np.array(
                conn.execute(
                    select(customer.c.customer_id)
                    .order_by(customer.c.customer_id)
                    .limit(limits.customers)
                )
                .scalars()
                .all(),
                dtype=np.int64,
            )
            stores = np.array(
                conn.execute(select(store.c.id).order_by(store.c.id).limit(limits.stores))
                .scalars()
                .all(),
                dtype=np.int64,
            )
            team = conn.execute(
                select(sales_team.c.id, sales_team.c.store_id).order_by(sales_team.c.id)
            ).fetchall()
            products = conn.execute(
                select(product.c.name, product.c.current_price)
                .order_by(product.c.id)
                .limit(limits.products)
            ).fetchall()
        if not len(customers) or not len(stores) or not team or not products:
            raise ConfigError("the dimension tables are empty: run `retail-etl init --demo` first")
        by_store: dict[int, list[int]] = {}
        for seller, at in team:
            by_store.setdefault(at, []).append(seller)
        everyone = [i for i, _ in team]
        sellers = {
            int(s): np.array(by_store.get(int(s), everyone)[: limits.sales_people_per_store])
            for s in stores
        }
        return cls(
            customers,
            stores,
            {s: ids.astype(np.int64) for s, ids in sellers.items()},
            pa.array([name for name, _ in products], pa.string()),
            np.array([int(price * 100) for _, price in products], dtype=np.int64),
        )


@dataclass(frozen=True)
class Limits:
    """How much of the dimensions the sales draw from (None: all): the first customers,
    stores and products by id, the first sales people of each store."""

    customers: int | None = None
    stores: int | None = None
    products: int | None = None
    sales_people_per_store: int | None = None


def sales_table(
    catalogue: Catalogue,
    day: date,
    store_ids: int | np.ndarray,
    rows: int,
    rng: np.random.Generator,
    extra_columns: tuple[str, ...] = (),
    drop_columns: tuple[str, ...] = (),
    bad_fraction: float = 0.0,
) -> pa.Table:
    """One file's rows: the sales of one store, or of several (a region's file), each row
    sold by a sales person of its own store."""
    customer_ids = catalogue.customer_ids[rng.integers(0, len(catalogue.customer_ids), rows)]
    if isinstance(store_ids, int | np.integer):
        row_stores = np.full(rows, store_ids, dtype=np.int64)
        seller_ids = _sellers(catalogue.sellers_by_store[int(store_ids)], rows, rng)
    else:
        row_stores = store_ids[rng.integers(0, len(store_ids), rows)]
        seller_ids = np.empty(rows, dtype=np.int64)
        for store_id in store_ids:
            at = np.flatnonzero(row_stores == store_id)
            seller_ids[at] = _sellers(catalogue.sellers_by_store[int(store_id)], len(at), rng)
    product_index = rng.integers(0, len(catalogue.product_names), rows)
    quantity = rng.integers(1, 9, rows)
    price_cents = catalogue.product_cents[product_index]
    total_cents = price_cents * quantity
    discounted = rng.random(rows) < 0.08
    total_cents = np.where(discounted, total_cents * 9 // 10, total_cents)
    columns: dict[str, pa.Array] = {
        "customer_id": pa.array(customer_ids),
        "store_id": pa.array(row_stores),
        "product_name": pc.take(catalogue.product_names, pa.array(product_index)),
        "sales_date": pa.array(np.full(rows, np.datetime64(day, "D")), pa.date32()),
        "sales_person_id": pa.array(seller_ids),
        "price": decimals(price_cents),
        "quantity": pa.array(quantity),
        "total_cost": decimals(total_cents),
    }
    for name in extra_columns:
        columns[name] = pa.array(
            np.array(EXTRA_VALUES, dtype=object)[rng.integers(0, len(EXTRA_VALUES), rows)],
            pa.string(),
        )
    if bad_fraction > 0:
        columns = _inject_bad_rows(columns, rng, bad_fraction)
    for name in drop_columns:
        if name not in columns:
            raise ConfigError(f"--drop-column {name}: no such column")
        del columns[name]
    return pa.table(columns)


def _sellers(sellers: np.ndarray, rows: int, rng: np.random.Generator) -> np.ndarray:
    # A skewed choice of seller makes a clear top seller most months.
    weights = np.linspace(2.0, 1.0, len(sellers))
    return sellers[rng.choice(len(sellers), rows, p=weights / weights.sum())]


_BAD_VALUES = {
    "quantity": "-1",
    "customer_id": "999999999",
    "sales_date": "2024-02-30",
    "price": "abc",
    "store_id": "",
    "sales_person_id": "999999",
}


def _inject_bad_rows(
    columns: dict[str, pa.Array], rng: np.random.Generator, fraction: float
) -> dict[str, pa.Array]:
    rows = len(columns["customer_id"])
    bad = rng.random(rows) < fraction
    kinds = rng.integers(0, len(_BAD_VALUES), rows)
    out = dict(columns)
    for index, (name, value) in enumerate(_BAD_VALUES.items()):
        mask = pa.array(bad & (kinds == index))
        as_text = pc.cast(out[name], pa.string())
        out[name] = pc.if_else(mask, pa.scalar(value), as_text)
    return out


def generate(
    store: ObjectStore,
    warehouse: Warehouse,
    landing_prefix: str,
    start: date,
    days: int = 1,
    rows: int = 1000,
    files: int = 4,
    seed: int = 42,
    extra_columns: tuple[str, ...] = (),
    drop_columns: tuple[str, ...] = (),
    bad_fraction: float = 0.0,
    compress: bool = False,
    limits: Limits | None = None,
) -> list[tuple[str, int]]:
    """Write `files` files of `rows` rows for each of `days` days; returns (key, bytes).

    With at least as many files as stores each file is one store's day (store i of the
    file's index); with more stores than files, file i holds the sales of stores i,
    i + files, i + 2 x files... (a region's upload), so every store sells every day."""
    unknown = set(drop_columns) - set(MANDATORY_COLUMNS) - set(extra_columns)
    if unknown:
        raise ConfigError(f"--drop-column: unknown column(s) {', '.join(sorted(unknown))}")
    catalogue = Catalogue.from_warehouse(warehouse, limits)
    regions = len(catalogue.store_ids) > files
    written = []
    with tempfile.TemporaryDirectory(prefix="retail-etl-gen-") as tmp:
        for day_offset in range(days):
            day = start + timedelta(days=day_offset)
            for index in range(files):
                rng = np.random.default_rng([seed, day.toordinal(), index])
                where: int | np.ndarray
                if regions:
                    where = catalogue.store_ids[index::files]
                    source = f"region{index + 1}"
                else:
                    where = int(catalogue.store_ids[index % len(catalogue.store_ids)])
                    source = f"store{where}"
                table = sales_table(
                    catalogue, day, where, rows, rng, extra_columns, drop_columns, bad_fraction
                )
                name = f"{day.isoformat()}/sales_{source}_{day.isoformat()}_{index + 1:02d}.csv"
                written.append(land(store, landing_prefix + name, table, Path(tmp), compress))
    return written


def land(
    store: ObjectStore, key: str, table: pa.Table, tmp: Path, compress: bool = False
) -> tuple[str, int]:
    """Upload one file's rows as CSV (.csv.gz with compress) at key; returns (key, bytes)."""
    local = tmp / "out.csv"
    pacsv.write_csv(table, local, pacsv.WriteOptions(quoting_style="needed", quoting_header="none"))
    if compress:
        with (
            open(local, "rb") as src,
            gzip.open(tmp / "out.csv.gz", "wb", compresslevel=1) as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 20)
        local, key = tmp / "out.csv.gz", key + ".gz"
    store.upload(local, key)
    return key, local.stat().st_size
