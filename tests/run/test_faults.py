"""Faults of the parts (issue 7): the warehouse lost in the middle of a run, the object store
refusing writes for a while, the work folder's disk full. Each time the run stops with one
clear line and a non-zero status (or rides the fault out by retrying), nothing of the batch is
half-written in the marts, and the next run ends exactly where an undisturbed run ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chaos import (
    Dataset,
    full_state,
    land_dataset,
    one_line_error,
    reference,
    retail_etl,
    summary_of,
)
from conftest import Env, csv_text
from faults import full_disk, store_outage
from helpers import customer_mart_rows, ledger, team_mart

EARLIER = csv_text(
    "1,1,Whole Milk 1L,2024-03-30,2,1.19,2,2.38", "2,2,Bananas 1kg,2024-04-01,4,1.39,1,1.39"
)


def earlier_night_then_new_files(env: Env) -> Dataset:
    """An earlier night already in the marts, then a night's files (32,000 rows)."""
    env.land("earlier/night.csv", EARLIER)
    env.run()
    return land_dataset(env, rows=2_000)


def marts(env: Env) -> tuple[Any, ...]:
    return customer_mart_rows(env), team_mart(env)


def assert_nothing_of_the_batch_committed(env: Env, before: tuple[Any, ...]) -> None:
    assert marts(env) == before
    assert {r["status"] for r in ledger(env) if r["file_name"] != "earlier/night.csv"} == {"A"}
    assert not [r for r in ledger(env) if r["pending_status"] == "I"]


@pytest.mark.parametrize(
    ("where", "statement"),
    [
        ("validated", r"^(INSERT|UPDATE|DELETE)"),  # at the lake index, before the marts
        ("enriched", r"^INSERT INTO customers_data_mart"),  # inside the marts commit
        ("marts_committed", r"^UPDATE product_staging_table"),  # archiving: status flips
    ],
    ids=["before-marts", "inside-marts-transaction", "while-archiving"],
)
def test_warehouse_lost_mid_run(
    env: Env, request: pytest.FixtureRequest, tmp_path: Path, where: str, statement: str
) -> None:
    ref = reference(env, request, tmp_path, earlier_night_then_new_files)
    earlier_night_then_new_files(env)
    before = marts(env)

    failed = retail_etl(env, "run", kill=[f"dropdb:{where}:{statement}"])
    assert failed.returncode == 4, failed.stderr
    assert one_line_error(failed).startswith("error: warehouse ")
    if where != "marts_committed":
        assert_nothing_of_the_batch_committed(env, before)

    summary_of(retail_etl(env, "run", "--json"))
    assert full_state(env, tmp_path) == ref.state


@pytest.mark.parametrize("refused", ["lake", "snapshots", "archive"])
def test_object_store_refusing_writes_for_a_while(
    env: Env, request: pytest.FixtureRequest, tmp_path: Path, refused: str
) -> None:
    ref = reference(env, request, tmp_path, earlier_night_then_new_files)
    earlier_night_then_new_files(env)
    before = marts(env)
    storage = env.settings.storage
    prefix = {
        "lake": storage.lake_prefix,
        "snapshots": f"{storage.lake_prefix}customers_data_mart/",
        "archive": storage.archive_prefix,
    }[refused]

    with store_outage(env, [prefix]) as outage:
        outage.fail()
        failed = retail_etl(outage.env, "run")
        assert failed.returncode == 3, failed.stderr
        line = one_line_error(failed)  # naming the object (S3 names a move by its source)
        assert prefix in line or (refused == "archive" and env.landing in line), line
        if refused == "lake":  # the lake is written before the marts commit
            assert_nothing_of_the_batch_committed(env, before)
        if refused == "snapshots":  # the objects move meanwhile, but no file is finished
            assert {r["status"] for r in ledger(env) if r["file_name"] != "earlier/night.csv"} == {
                "A"
            }
        outage.heal()
        summary_of(retail_etl(outage.env, "run", "--json"))
    assert full_state(env, tmp_path) == ref.state


def test_s3_errors_for_a_few_requests_are_retried(
    env: Env, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if not env.settings.storage.url.startswith("s3://"):
        pytest.skip("transient errors of an S3 endpoint")
    ref = reference(env, request, tmp_path, earlier_night_then_new_files)
    earlier_night_then_new_files(env)
    storage = env.settings.storage
    with store_outage(env, [storage.lake_prefix, storage.archive_prefix]) as outage:
        outage.fail(requests=2)
        summary_of(retail_etl(outage.env, "run", "--json"))
        assert outage.failures_left == 0
    assert full_state(env, tmp_path) == ref.state


@pytest.mark.parametrize("room", [0.1, 1.1], ids=["fails-downloading", "fails-after-downloads"])
def test_work_folder_disk_full(
    env: Env, request: pytest.FixtureRequest, tmp_path: Path, room: float
) -> None:
    """The work folder gets `room` times the size of the landed files."""
    ref = reference(env, request, tmp_path, earlier_night_then_new_files)
    earlier_night_then_new_files(env)
    before = marts(env)
    landed = sum(info.size for info in env.store.list(env.landing))

    with full_disk(env.settings.engine.work_dir, f"{int(landed * room) // 4096 * 4}k"):
        failed = retail_etl(env, "run")
        assert failed.returncode != 0
        line = one_line_error(failed)
        assert "No space left on device" in line or "disk is full" in line.lower(), line
        assert_nothing_of_the_batch_committed(env, before)

    summary_of(retail_etl(env, "run", "--json"))
    assert full_state(env, tmp_path) == ref.state
