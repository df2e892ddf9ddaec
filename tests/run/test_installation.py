"""Silent no-ops a nightly job must never have (issue 17): a warehouse `init` never set up, and
dimension tables with no rows, stop the run with a message that says what to do; they do not
create tables, quarantine the night's files or reject every row."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import BACKENDS, Env, csv_text
from helpers import cli, customer_mart, ledger
from sqlalchemy import delete

from retail_etl.config import Settings
from retail_etl.errors import WarehouseError
from retail_etl.run import run
from retail_etl.storage import open_store
from retail_etl.tools import sample_data
from retail_etl.warehouse.schema import customer, sales_team, store


def test_run_before_init_says_so_and_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "data" / "bucket").mkdir(parents=True)  # the bucket exists, no warehouse yet
    done = cli(tmp_path, "run")
    assert done.returncode == 4, done.stderr
    assert "has no retail-etl tables: run `retail-etl init`" in done.stderr
    assert "sqlite:///./data/warehouse.db" in done.stderr
    assert not (tmp_path / "data" / "warehouse.db").exists()
    assert cli(tmp_path, "init").returncode == 0
    assert cli(tmp_path, "run").returncode == 0


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_warehouse_without_the_tools_tables_is_refused(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    sections = BACKENDS[backend](tmp_path, request)  # a database nobody initialised
    sections.setdefault("engine", {}).update({"work_dir": str(tmp_path / "work")})
    settings = Settings.model_validate(sections)
    open_store(settings.storage, create=True)
    with pytest.raises(WarehouseError, match="has no retail-etl tables"):
        run(settings)


def test_empty_dimensions_stop_the_run_and_leave_the_files_for_the_next(env: Env) -> None:
    env.land("day.csv", csv_text("1,1,Whole Milk 1L,2024-03-05,2,1.19,2,2.38"))
    with env.warehouse.begin() as conn:
        for table in (customer, sales_team, store):
            conn.execute(delete(table))

    with pytest.raises(WarehouseError, match="the customer, store, sales_team tables are empty"):
        env.run()
    assert [(r["file_name"], r["status"], r["pending_status"]) for r in ledger(env)] == [
        ("day.csv", "A", None)
    ]

    sample_data.load(env.warehouse)  # the systems that own them load the dimensions
    assert env.run().outcome == "succeeded"
    assert [r["status"] for r in ledger(env)] == ["I"]
    assert customer_mart(env) != {}


def test_status_and_reports_also_refuse_an_uninitialised_warehouse(tmp_path: Path) -> None:
    (tmp_path / "data" / "bucket").mkdir(parents=True)
    for args in (("status",), ("report", "--month", "2024-03", "--out", "r.html")):
        done = cli(tmp_path, *args)
        assert done.returncode == 4 and "retail-etl init" in done.stderr, (args, done.stderr)
    assert not (tmp_path / "data" / "warehouse.db").exists()
