"""SPEC section 5: every landed object is processed exactly once, whatever happens."""

from __future__ import annotations

from collections import Counter
from datetime import date
from decimal import Decimal

import pytest
from conftest import BACKENDS, Env, csv_text, make_env
from helpers import customer_mart, keys, lake_rows, ledger, object_bytes, state, team_mart
from sqlalchemy import select

from retail_etl.errors import LockedError
from retail_etl.tools.generate import generate
from retail_etl.warehouse.schema import run_log

DAY1 = csv_text(
    "1,1,Whole Milk 1L,2024-03-05,2,1.19,2,2.38", "2,2,Bananas 1kg,2024-03-05,4,1.39,1,1.39"
)
DAY2 = csv_text("1,1,Sugar,2024-03-06,3,1.65,1,1.65", "3,3,Tea,2024-04-01,6,3.10,2,6.20")


def land_generated(env: Env, days: int = 2, bad: float = 0.01) -> None:
    generate(
        env.store,
        env.warehouse,
        env.landing,
        date(2024, 3, 30),
        days=days,
        rows=300,
        files=3,
        seed=5,
        bad_fraction=bad,
    )


def test_duplicate_content_is_marked_d_archived_and_not_counted(env: Env) -> None:
    env.land("day1.csv", DAY1)
    env.run()
    before = customer_mart(env)
    env.land("day1-again.csv", DAY1)
    summary = env.run()
    assert summary.files_duplicate == 1
    assert customer_mart(env) == before
    statuses = {r["file_name"]: (r["status"], r["message"]) for r in ledger(env)}
    assert statuses["day1-again.csv"][0] == "D"
    assert "day1.csv" in statuses["day1-again.csv"][1]
    assert any(k.endswith("day1-again.csv") for k in keys(env, env.settings.storage.archive_prefix))


def test_duplicates_within_one_run_count_once(env: Env) -> None:
    env.land("a.csv", DAY1)
    env.land("b.csv", DAY1)
    env.run()
    assert [r["status"] for r in ledger(env)] == ["I", "D"]
    assert customer_mart(env)[(1, "2024-03-01")] == Decimal("2.38")


@pytest.mark.parametrize("copy_name", ["a.csv", "z.csv"], ids=["copy-first", "copy-last"])
def test_a_correction_and_a_copy_of_it_the_same_night_correct_whatever_their_names(
    env: Env, copy_name: str
) -> None:
    """The correction goes on and the copy is its duplicate, whichever sorts first: were the
    copy to go on, the corrected file's old rows would stay counted beside the new ones."""
    env.land("m.csv", DAY1)
    env.run()
    corrected = csv_text("1,1,Whole Milk 1L,2024-03-05,2,1.19,1,1.19")
    env.land("m.csv", corrected)
    env.land(copy_name, corrected)

    summary = env.run()

    assert summary.files_corrected == 1 and summary.files_duplicate == 1
    files = {f.file_name: f for f in summary.files}
    assert files["m.csv"].status == "I" and files[copy_name].status == "D"
    assert "duplicate of m.csv" in (files[copy_name].message or "")
    assert customer_mart(env)[(1, "2024-03-01")] == Decimal("1.19")
    assert (2, "2024-03-01") not in customer_mart(env)


def test_correction_replaces_earlier_rows_in_lake_and_marts(env: Env, tmp_path) -> None:
    env.land("store1.csv", DAY1)
    env.run()
    corrected = csv_text("1,1,Whole Milk 1L,2024-03-05,2,1.19,3,3.57")  # customer 2's row removed
    env.land("store1.csv", corrected)
    summary = env.run()
    assert summary.files_corrected == 1
    assert customer_mart(env) == {(1, "2024-03-01"): Decimal("3.57")}
    assert team_mart(env) == {(1, 2, "2024-03"): (Decimal("3.57"), Decimal("0.04"))}
    lake = lake_rows(env, tmp_path)
    assert sum(lake.values()) == 1 and next(iter(lake))[7] == 3
    # both versions stay retrievable in the archive
    archived = keys(env, env.settings.storage.archive_prefix)
    assert sorted(object_bytes(env, k, tmp_path) for k in archived) == sorted(
        [DAY1.encode(), corrected.encode()]
    )


def test_correction_back_to_an_earlier_version_is_not_a_duplicate(env: Env) -> None:
    env.land("s.csv", DAY1)
    env.run()
    env.land("s.csv", DAY2)
    env.run()
    env.land("s.csv", DAY1)
    env.run()
    assert [r["status"] for r in ledger(env)] == ["I", "I", "I"]
    assert customer_mart(env) == {
        (1, "2024-03-01"): Decimal("2.38"),
        (2, "2024-03-01"): Decimal("1.39"),
    }


def test_rerun_with_nothing_new_changes_nothing(env: Env, tmp_path) -> None:
    land_generated(env)
    env.run()
    before = state(env, tmp_path)
    summary = env.run()
    assert (summary.files_seen, summary.rows_read) == (0, 0)
    assert state(env, tmp_path) == before


def test_landed_bytes_all_end_up_in_archive_or_error(env: Env, tmp_path) -> None:
    land_generated(env)
    env.land("broken.csv", "not,a,sales,file\n")
    env.land("dup.csv", object_bytes(env, keys(env, env.landing)[0], tmp_path))
    landed = Counter(object_bytes(env, k, tmp_path) for k in keys(env, env.landing))
    env.run()
    storage = env.settings.storage
    kept = [
        k
        for k in keys(env, storage.archive_prefix) + keys(env, storage.error_prefix)
        if not k.startswith(storage.error_prefix + "rejected/")
    ]
    assert Counter(object_bytes(env, k, tmp_path) for k in kept) == landed


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_batching_does_not_matter(request, tmp_path, backend: str) -> None:
    files = {"a.csv": DAY1, "b.csv": DAY2, "c.csv": csv_text("2,2,Tea,2024-03-07,5,3.10,1,3.10")}
    one = make_env(backend, tmp_path / "one", request)
    for name, text in files.items():
        one.land(name, text)
    one.run()
    three = make_env(backend, tmp_path / "three", request)
    for name, text in files.items():
        three.land(name, text)
        three.run()
    assert customer_mart(one) == customer_mart(three)
    assert team_mart(one) == team_mart(three)
    assert lake_rows(one, tmp_path) == lake_rows(three, tmp_path)


CHECKPOINTS = [
    "discovered",
    "downloaded",
    "validated",
    "enriched",
    "lake_indexed",
    "lake_written",
    "rejected_written",
    "marts_committed",
    "snapshots_written",
    "archived:first",
    "finished",
]


class Crash(Exception):
    pass


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("where", CHECKPOINTS)
def test_resume_after_a_failure_anywhere_gives_the_uninterrupted_result(
    request, tmp_path, where: str, backend: str
) -> None:
    reference = make_env(backend, tmp_path / "reference", request)
    crashed = make_env(backend, tmp_path / "crashed", request)
    for environment in (reference, crashed):
        land_generated(environment)
        environment.land("broken.csv", "no,header\n")
        environment.land("zz-copy.csv", DAY1)
        environment.land("aa-copy.csv", DAY1)
    reference.run()

    def crash(stage: str) -> None:
        if stage == where or (where == "archived:first" and stage.startswith("archived:")):
            raise Crash(stage)

    with pytest.raises(Crash):
        crashed.run(checkpoint=crash)
    crashed.run()
    assert state(crashed, tmp_path) == state(reference, tmp_path)
    assert {r["status"] for r in ledger(crashed)} <= {"I", "E", "D"}
    with crashed.warehouse.begin() as conn:
        outcomes = [
            r.outcome for r in conn.execute(select(run_log.c.outcome).order_by(run_log.c.run_id))
        ]
    assert outcomes == ["failed", "succeeded"]


def test_a_held_lock_stops_a_second_run_and_a_stale_one_is_taken_over(env: Env) -> None:
    env.warehouse.acquire_lock("other-host:123")
    env.land("day1.csv", DAY1)
    with pytest.raises(LockedError, match="other-host:123"):
        env.run()
    assert ledger(env) == []
    stale = env.with_settings(warehouse={"stale_lock_seconds": 10})
    from datetime import datetime, timedelta

    from sqlalchemy import update

    from retail_etl.warehouse.schema import run_lock

    with env.warehouse.begin() as conn:
        conn.execute(update(run_lock).values(heartbeat_at=datetime.now() - timedelta(minutes=5)))
    assert stale.run().files_processed == 1
