"""The lookup tables every engine joins the sales rows against, read once per run.

The enrichment values are derived here from the dimension rows (a full name is first and last
name joined by a space, a product name listed twice resolves to its highest id); every engine
joins these lookup tables as they are."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc

from retail_etl.engines.base import Dimensions
from retail_etl.warehouse import Warehouse
from retail_etl.warehouse.schema import customer, product, sales_team, store


def _full_name(table: pa.Table) -> pa.ChunkedArray:
    # NULL when either part is NULL, as SQL's || would give
    return pc.binary_join_element_wise(table["first_name"], table["last_name"], " ")


def prefetch_dimensions(warehouse: Warehouse) -> Future[Dimensions]:
    """load_dimensions in a thread of its own, started now: a run reads a million customers
    while it downloads the day's files, which wait on the store, not on the warehouse."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="dimensions")
    try:
        return pool.submit(load_dimensions, warehouse)
    finally:
        pool.shutdown(wait=False)  # the thread ends when the read does


def load_dimensions(warehouse: Warehouse) -> Dimensions:
    return dimensions_of(
        customers=warehouse.read_arrow(
            customer, ["customer_id", "first_name", "last_name", "address", "phone_number"]
        ),
        stores=warehouse.read_arrow(store, ["id", "address", "store_manager_name"]),
        team=warehouse.read_arrow(sales_team, ["id", "first_name", "last_name"]),
        products=warehouse.read_arrow(product, ["id", "name"]),
    )


def dimensions_of(
    customers: pa.Table, stores: pa.Table, team: pa.Table, products: pa.Table
) -> Dimensions:
    """The lookup tables from the dimension tables' rows (columns named as in the warehouse)."""
    return Dimensions(
        customer=pa.table(
            {
                "customer_id": customers["customer_id"],
                "customer_full_name": _full_name(customers),
                "customer_address": customers["address"],
                "customer_phone_number": customers["phone_number"],
            }
        ),
        store=pa.table(
            {
                "store_id": stores["id"],
                "store_address": stores["address"],
                "store_manager_name": stores["store_manager_name"],
            }
        ),
        sales_team=pa.table(
            {"sales_person_id": team["id"], "sales_person_full_name": _full_name(team)}
        ),
        # a product name listed twice must not duplicate sales rows
        product=products.filter(pc.is_valid(products["name"]))
        .group_by("name")
        .aggregate([("id", "max")])
        .select(["name", "id_max"])
        .rename_columns(["product_name", "product_id"]),
    )
