"""Issue 14, item 5: the engine starts on the files that have downloaded while the next ones
still download, on every backend; what it read of a file triage then leaves out counts
nowhere."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import Env, csv_text
from helpers import customer_mart, keys, lake_rows, ledger_outcomes

from retail_etl.engines.duckdb_engine import DuckDBEngine
from retail_etl.errors import EngineError

FIRST = csv_text("1,1,Whole Milk 1L,2024-03-01,2,1.19,3,3.57")
LAST = csv_text("2,1,Rolled Oats 1kg,2024-03-02,3,3.49,2,6.98")


def test_the_next_files_download_while_the_engine_reads_the_first(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a.csv may download before the engine has read something; b.csv (a duplicate of
    a.csv) and c.csv wait for that. The engine reads b.csv ahead too: triage then calls it a
    duplicate, and nothing of it reaches the marts or the lake."""
    env.land("a.csv", FIRST)
    env.land("b.csv", FIRST)
    env.land("c.csv", LAST)
    engine_read = threading.Event()
    waited: dict[str, bool] = {}
    read: list[list[str]] = []
    store_class = type(env.store)
    download, engine_read_files = store_class.download, DuckDBEngine.read

    def gated_download(store: Any, key: str, dest: Path) -> None:
        if not key.endswith("a.csv"):
            waited[key] = engine_read.wait(timeout=20)
        download(store, key, dest)

    def reading(engine: DuckDBEngine, files: list[Any], *args: Any) -> None:
        read.append([item.file_name for item in files])
        engine_read_files(engine, files, *args)
        engine_read.set()

    monkeypatch.setattr(store_class, "download", gated_download)
    monkeypatch.setattr(DuckDBEngine, "read", reading)
    summary = env.run()

    assert waited == {env.landing + "b.csv": True, env.landing + "c.csv": True}
    assert read[0] == ["a.csv"] and sorted(name for names in read for name in names) == [
        "a.csv",
        "b.csv",
        "c.csv",
    ]
    assert (summary.files_processed, summary.files_duplicate) == (2, 1)
    assert ledger_outcomes(env) == [
        ("a.csv", "I", 1, 0),
        ("b.csv", "D", None, None),
        ("c.csv", "I", 1, 0),
    ]
    assert customer_mart(env) == {
        (1, "2024-03-01"): Decimal("3.57"),
        (2, "2024-03-01"): Decimal("6.98"),
    }
    sources = Counter(row[-1] for row in lake_rows(env, tmp_path).elements())
    assert sources == {"a.csv": 1, "c.csv": 1}
    lake = keys(env, env.settings.storage.lake_prefix + "sales/")
    assert len(lake) == 2
    # fetch's MB/s is over the downloads' own seconds, not the engine's reading after them
    assert 0 < summary.transfer_seconds["fetch"] < summary.stage_seconds["fetch"]


def test_a_failure_while_reading_ahead_costs_only_time(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever fails while the files download (here the engine's reading, as a full disk
    would), the run goes on: transform reads the batch again from the downloaded files."""
    env.land("a.csv", FIRST)
    env.land("c.csv", LAST)

    def failing(*_args: Any) -> None:
        raise EngineError("duckdb: IO Error: could not write file")

    monkeypatch.setattr(DuckDBEngine, "read", failing)
    with caplog.at_level(logging.WARNING, logger="retail_etl.run"):
        summary = env.run()

    assert (summary.outcome, summary.files_processed) == ("succeeded", 2)
    assert customer_mart(env) == {
        (1, "2024-03-01"): Decimal("3.57"),
        (2, "2024-03-01"): Decimal("6.98"),
    }
    assert "the engine stopped reading ahead" in caplog.text
