"""Choose the engine; Spark is imported only when asked for."""

from __future__ import annotations

from retail_etl.config import EngineSettings
from retail_etl.engines.base import (
    LAKE_COLUMNS,
    MANDATORY_COLUMNS,
    BatchFile,
    Dimensions,
    Engine,
    FileCounts,
    LakePart,
    Manifest,
    RowLimits,
)

__all__ = [
    "LAKE_COLUMNS",
    "MANDATORY_COLUMNS",
    "BatchFile",
    "Dimensions",
    "Engine",
    "FileCounts",
    "LakePart",
    "Manifest",
    "RowLimits",
    "open_engine",
]


def open_engine(settings: EngineSettings, name: str | None = None) -> Engine:
    chosen = name or settings.name
    if chosen == "duckdb":
        from retail_etl.engines.duckdb_engine import DuckDBEngine

        return DuckDBEngine(settings)
    if chosen == "spark":
        from retail_etl.engines.spark_engine import SparkEngine

        return SparkEngine(settings)
    from retail_etl.errors import ConfigError

    raise ConfigError(f"unknown engine {chosen!r}: use duckdb or spark")
