"""Stages 5-6: normalise, check and enrich the rows of every valid file through the engine."""

from __future__ import annotations

from pathlib import Path

from retail_etl.engines import BatchFile, Dimensions, Engine, EngineResult
from retail_etl.warehouse import Warehouse
from retail_etl.warehouse.schema import customer, product, sales_team, store


def load_dimensions(warehouse: Warehouse) -> Dimensions:
    return Dimensions(
        customer=warehouse.read_arrow(
            customer, ["customer_id", "first_name", "last_name", "address", "phone_number"]
        ),
        store=warehouse.read_arrow(store, ["id", "address", "store_manager_name"]),
        sales_team=warehouse.read_arrow(sales_team, ["id", "first_name", "last_name"]),
        product=warehouse.read_arrow(product, ["id", "name"]),
    )


def enrich(
    engine: Engine, batch: list[BatchFile], dims: Dimensions, run_id: int, out_dir: Path
) -> EngineResult:
    return engine.process(batch, dims, run_id, out_dir)
