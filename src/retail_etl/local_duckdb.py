"""DuckDB in this process, for the engine and for the Python steps that sum or hash with it
(mart deltas, coupon codes, the day report)."""

from __future__ import annotations

from typing import Any

import duckdb


def connect(**config: Any) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection without progress bars: a statement over ~2 s would print one on
    stdout, which `run --json` and the reports also write to."""
    con = duckdb.connect(config=config)
    con.execute("SET enable_progress_bar = false")  # a per-connection setting, not a config
    return con
