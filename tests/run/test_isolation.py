"""Isolation (issue 13, SPEC section 5): one bad input costs its own file, never the batch and
never a later night. Each example lands a good file beside the bad input; the run succeeds,
the good file is loaded, the bad input is rejected or quarantined with a reason that names
the problem, and a third run after more files land succeeds too."""

from __future__ import annotations

import os
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import Env, csv_text
from helpers import customer_mart, keys, ledger
from sqlalchemy import Table, select

from retail_etl.warehouse.schema import customers_data_mart, sales_team_data_mart

MAX = "9999999999999999.99"  # the largest DECIMAL(18, 2)


def good(customer: int, amount: str = "10.00", seller: int = 2) -> str:
    return csv_text(f"{customer},1,Whole Milk 1L,2024-03-05,{seller},{amount},1,{amount}")


def by_name(env: Env) -> dict[str, dict]:
    return {row["file_name"]: row for row in ledger(env)}


def assert_good_loaded_and_next_night_runs(env: Env, expected: dict) -> None:
    """The good files are in the marts with exactly their sums; a later night still runs."""
    assert customer_mart(env) == expected
    env.land("next-night.csv", good(7, "7.00"))
    summary = env.run()
    assert summary.outcome == "succeeded"
    assert by_name(env)["next-night.csv"]["status"] == "I"
    assert customer_mart(env) == expected | {(7, "2024-03-01"): Decimal("7.00")}
    assert not [row for row in ledger(env) if row["status"] == "A"]


def test_dates_the_warehouse_cannot_handle_are_rejected(env: Env) -> None:
    rows = [f"2,1,Tea,{day},2,1.00,1,1.00" for day in ("0001-01-01", "0999-06-15", "9999-12-31")]
    env.land("odd-dates.csv", csv_text(*rows))
    env.land("good.csv", good(1))

    summary = env.run()

    assert summary.outcome == "succeeded"
    files = by_name(env)
    assert files["odd-dates.csv"]["status"] == "I"
    assert files["odd-dates.csv"]["rows_rejected"] == 3
    assert_good_loaded_and_next_night_runs(env, {(1, "2024-03-01"): Decimal("10.00")})


def test_the_plausible_date_range_is_configured(env: Env) -> None:
    today = date.today()
    rows = [
        "2,1,Tea,2024-03-04,2,1.00,1,1.00",  # before min_sales_date
        "2,1,Tea,2024-03-05,2,2.00,1,2.00",  # on it
        f"2,1,Tea,{today.isoformat()},2,4.00,1,4.00",  # today: max_days_ahead 0 admits it
        f"2,1,Tea,{(today + timedelta(days=1)).isoformat()},2,8.00,1,8.00",  # tomorrow
    ]
    env.land("range.csv", csv_text(*rows))
    configured = env.with_settings(rules={"min_sales_date": "2024-03-05", "max_days_ahead": 0})

    summary = configured.run()

    assert (summary.rows_valid, summary.rows_rejected) == (2, 2)
    month = today.replace(day=1).isoformat()
    assert customer_mart(env) == {
        (2, "2024-03-01"): Decimal("2.00"),
        (2, month): Decimal("4.00"),
    }


def test_amounts_beyond_the_row_limit_are_rejected(env: Env) -> None:
    env.land("huge.csv", csv_text(*[f"2,1,Gold,2024-03-05,2,{MAX},1,{MAX}"] * 2))
    env.land("good.csv", good(1))

    summary = env.run()

    assert summary.outcome == "succeeded"
    assert by_name(env)["huge.csv"]["rows_rejected"] == 2
    assert_good_loaded_and_next_night_runs(env, {(1, "2024-03-01"): Decimal("10.00")})


def test_a_file_whose_rows_overflow_a_mart_row_is_quarantined_whole(env: Env) -> None:
    """With the row limit raised to the largest storable amount, two such rows for one
    customer and month cannot be summed into DECIMAL(18, 2): the file is set aside, never
    half-applied."""
    raised = env.with_settings(rules={"max_amount": MAX})
    overflow = csv_text(*[f"2,1,Gold,2024-03-05,2,{MAX},1,{MAX}"] * 2, "3,1,Tea,2024-03-05,2,1,1,1")
    env.land("overflow.csv", overflow)
    env.land("good.csv", good(1))

    summary = raised.run()

    assert summary.outcome == "succeeded"
    files = by_name(env)
    assert files["overflow.csv"]["status"] == "E"
    assert "sum to more than 9999999999999999.99" in files["overflow.csv"]["message"]
    assert "customer_id 2" in files["overflow.csv"]["message"]
    error = env.settings.storage.error_prefix
    assert keys(env, error) == [f"{error}run-{files['overflow.csv']['run_id']}/overflow.csv"]
    assert not any(key[-1] == "overflow.csv" for key in _lake_sources(env))
    assert_good_loaded_and_next_night_runs(env, {(1, "2024-03-01"): Decimal("10.00")})


def test_a_later_small_file_that_would_overflow_a_stored_total_is_quarantined(env: Env) -> None:
    """A total loaded weeks ago must not poison tonight: the file that would push a stored
    mart row past DECIMAL(18, 2) is set aside, the rest of tonight's batch loads."""
    raised = env.with_settings(rules={"max_amount": MAX})
    big = "9999999999999999.00"
    env.land("weeks-ago.csv", good(2, big))
    assert raised.run().outcome == "succeeded"
    env.land("tonight-small.csv", good(2, "1.00"))
    env.land("tonight-good.csv", good(1, seller=3))  # another customer and seller

    summary = raised.run()

    assert summary.outcome == "succeeded"
    files = by_name(env)
    assert files["tonight-small.csv"]["status"] == "E"
    message = files["tonight-small.csv"]["message"]
    assert (
        "cannot be stored in the warehouse" in message
        and "total_sales" in message
        or ("would be more than 9999999999999999.99" in message)
    )
    assert files["tonight-good.csv"]["status"] == "I"
    archive = env.settings.storage.archive_prefix
    assert keys(env, archive) == [  # tonight-small.csv is in the error prefix only
        f"{archive}run-1/weeks-ago.csv",
        f"{archive}run-2/tonight-good.csv",
    ]
    # exact cents: SQLite keeps total_sales as the nearest REAL, exact only below 2^53 cents
    assert cents(env, customers_data_mart) == {
        (2, date(2024, 3, 1)): 999999999999999900,
        (1, date(2024, 3, 1)): 1000,
    }
    assert cents(env, sales_team_data_mart)[(1, 2, "2024-03")] == 999999999999999900


def test_text_longer_than_its_column_is_rejected(env: Env) -> None:
    env.land("long-name.csv", csv_text("2,1," + "x" * 70_000 + ",2024-03-05,2,1.00,1,1.00"))
    env.land("good.csv", good(1))

    summary = env.run()

    assert summary.outcome == "succeeded"
    assert by_name(env)["long-name.csv"]["rows_rejected"] == 1
    assert_good_loaded_and_next_night_runs(env, {(1, "2024-03-01"): Decimal("10.00")})


def test_a_landing_key_longer_than_the_ledger_holds_is_quarantined_by_name(env: Env) -> None:
    name = "/".join(["d" * 200] * 6) + "/sales.csv"
    env.land(name, good(2))
    env.land("good.csv", good(1))

    summary = env.run()

    assert summary.outcome == "succeeded"
    (odd,) = [row for row in ledger(env) if row["file_name"] != "good.csv"]
    assert odd["status"] == "E"
    assert f"quarantined by name: its name is {len(name)} characters long" in odd["message"]
    assert odd["file_name"].startswith("ddd") and len(odd["file_name"]) <= 1024
    assert keys(env, env.landing) == []
    (moved,) = keys(env, env.settings.storage.error_prefix)
    assert env.store.size(moved) == len(good(2))
    assert_good_loaded_and_next_night_runs(env, {(1, "2024-03-01"): Decimal("10.00")})


def test_an_archive_key_beyond_the_stores_limit_is_shortened(env: Env) -> None:
    """A name the ledger holds whose archive key would pass 1,024 bytes (S3's limit) is
    archived under a shortened key that keeps its end and a digest."""
    name = "/".join(["n" * 200] * 5) + "/sales.csv"  # 1,014 characters
    env.land(name, good(2))

    summary = env.run()

    assert summary.outcome == "succeeded"
    assert by_name(env)[name]["status"] == "I"
    (archived,) = keys(env, env.settings.storage.archive_prefix)
    assert len(archived.encode()) <= 1024 and archived.endswith("-sales.csv")
    assert customer_mart(env) == {(2, "2024-03-01"): Decimal("10.00")}


def test_odd_objects_in_a_folder_bucket_are_set_aside(embedded: Env, tmp_path: Path) -> None:
    env = embedded
    landing = Path(env.settings.storage.url.removeprefix("file://")) / env.landing
    landing.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside.csv"
    outside.write_text(good(3))
    (landing / "link-out.csv").symlink_to(outside)
    (landing / "dangling.csv").symlink_to(tmp_path / "nowhere.csv")
    (landing / "dir-link").symlink_to(tmp_path)
    os.mkfifo(landing / "pipe.csv")
    (landing / os.fsdecode(b"caf\xe9-latin1.csv")).write_text(good(4))
    env.land("good.csv", good(1))

    summary = env.run()

    assert summary.outcome == "succeeded"
    files = by_name(env)
    assert files["good.csv"]["status"] == "I"
    odd = {name: row for name, row in files.items() if name != "good.csv"}
    assert len(odd) == 5 and {row["status"] for row in odd.values()} == {"E"}
    assert "symbolic link" in files["link-out.csv"]["message"]
    assert "named pipe" in files["pipe.csv"]["message"]
    (latin,) = [row for name, row in odd.items() if name.startswith("caf")]
    assert latin["file_name"].startswith("caf\\xe9-latin1.csv")
    assert "not valid UTF-8" in latin["message"]
    assert sorted(os.listdir(landing)) == []  # everything moved to the error prefix, as it is
    assert outside.read_text() == good(3)  # a link is moved, never followed
    assert_good_loaded_and_next_night_runs(env, {(1, "2024-03-01"): Decimal("10.00")})


def _lake_sources(env: Env) -> list[tuple[str, ...]]:
    prefix = env.settings.storage.lake_prefix + "sales/"
    return [tuple(key.split("/")) for key in keys(env, prefix)]


def cents(env: Env, mart: Table) -> dict[tuple, int]:
    keys_ = [c for c in mart.primary_key.columns]
    with env.warehouse.begin() as conn:
        rows = conn.execute(select(*keys_, mart.c.total_cents)).fetchall()
    return {tuple(row[:-1]): row[-1] for row in rows}


def test_an_archive_move_refused_for_one_file_holds_up_only_that_file(env: Env) -> None:
    """Someone put another object where a file is to be archived: that file stays pending
    (its rows are committed) and is moved by a later run; the other files finish."""
    archive = env.settings.storage.archive_prefix
    env.store.put_bytes(f"{archive}run-1/a.csv", b"someone else's object")
    env.land("a.csv", good(1))
    env.land("b.csv", good(2))

    summary = env.run()

    assert summary.outcome == "succeeded" and summary.run_id == 1
    (stuck,) = [f for f in summary.files if f.file_name == "a.csv"]
    assert "failed, retried next run" in (stuck.message or "")
    files = by_name(env)
    assert (files["a.csv"]["status"], files["a.csv"]["pending_status"]) == ("A", "I")
    assert files["b.csv"]["status"] == "I"
    both = {(1, "2024-03-01"): Decimal("10.00"), (2, "2024-03-01"): Decimal("10.00")}
    assert customer_mart(env) == both

    env.store.delete(f"{archive}run-1/a.csv")
    assert env.run().outcome == "succeeded"
    assert by_name(env)["a.csv"]["status"] == "I"
    assert env.store.exists(f"{archive}run-1/a.csv") and keys(env, env.landing) == []
    assert customer_mart(env) == both  # moved, not counted again


def test_a_file_removed_from_landing_after_its_commit_finishes_and_later_nights_run(
    env: Env,
) -> None:
    """Its rows are committed, so it finishes (there is nothing left to archive) instead of
    staying pending and failing every later night that moves nothing else."""
    key = env.land("a.csv", good(1))

    summary = env.run(
        checkpoint=lambda stage: env.store.delete(key) if stage == "marts_committed" else None
    )

    assert summary.outcome == "succeeded"
    [done] = summary.files
    assert done.status == "I" and "removed from landing after it was read" in (done.message or "")
    assert by_name(env)["a.csv"]["status"] == "I"
    assert keys(env, env.settings.storage.archive_prefix) == []
    assert env.run().outcome == "succeeded"  # a night with nothing new
    assert_good_loaded_and_next_night_runs(env, {(1, "2024-03-01"): Decimal("10.00")})


@pytest.mark.parametrize("same_size", [True, False], ids=["same-size", "another-size"])
def test_a_file_replaced_in_landing_after_its_commit_is_loaded_next_night_as_a_correction(
    env: Env, same_size: bool
) -> None:
    """The run committed what it read; the replacement is not archived as if it had been
    loaded: it stays in landing, and the next night takes it as the file's new version."""
    key = env.land("a.csv", good(1))
    resent = good(1, "20.00") if same_size else good(1, "25.00") + good(3).split("\n", 1)[1]
    assert (len(resent) == len(good(1))) == same_size

    def resend(stage: str) -> None:
        if stage == "marts_committed":
            env.store.put_bytes(key, resent.encode())

    summary = env.run(checkpoint=resend)

    assert summary.outcome == "succeeded"
    [done] = summary.files
    assert done.status == "I" and "replaced after it was read" in (done.message or "")
    assert customer_mart(env) == {(1, "2024-03-01"): Decimal("10.00")}
    assert keys(env, env.landing) == [key]
    assert_the_replacement_loads_next_night_as_a_correction(env, same_size)


class Died(Exception):
    pass


def test_a_file_replaced_after_a_run_died_before_archiving_it_is_loaded_as_a_correction(
    env: Env,
) -> None:
    """The run that read it committed and died before its move; the file is replaced by one
    of the same size before the next run, which has only the ledger's checksum to tell."""
    key = env.land("a.csv", good(1))

    def die(stage: str) -> None:
        if stage == "marts_committed":
            env.store.put_bytes(key, good(1, "20.00").encode())
            raise Died(stage)

    with pytest.raises(Died):
        env.run(checkpoint=die)
    resumed = env.run()

    assert resumed.outcome == "succeeded" and resumed.files_resumed == 1
    [done] = [row for row in ledger(env) if row["file_name"] == "a.csv"]
    assert done["status"] == "I" and "replaced after it was read" in (done["message"] or "")
    assert customer_mart(env) == {(1, "2024-03-01"): Decimal("10.00")}
    assert keys(env, env.landing) == [key]
    assert_the_replacement_loads_next_night_as_a_correction(env, same_size=True)


def test_a_file_an_interrupted_run_read_is_archived_when_it_was_left_as_it_was(env: Env) -> None:
    key = env.land("a.csv", good(1))

    def die(stage: str) -> None:
        if stage == "marts_committed":
            raise Died(stage)

    with pytest.raises(Died):
        env.run(checkpoint=die)
    resumed = env.run()

    assert resumed.outcome == "succeeded" and resumed.files_resumed == 1
    assert by_name(env)["a.csv"]["status"] == "I" and keys(env, env.landing) == []
    assert keys(env, env.settings.storage.archive_prefix) != []
    assert_good_loaded_and_next_night_runs(env, {(1, "2024-03-01"): Decimal("10.00")})
    assert key not in keys(env, env.landing)


def assert_the_replacement_loads_next_night_as_a_correction(env: Env, same_size: bool) -> None:
    night = env.run()

    assert night.outcome == "succeeded" and night.files_corrected == 1
    expected = {(1, "2024-03-01"): Decimal("20.00" if same_size else "25.00")}
    if not same_size:
        expected[(3, "2024-03-01")] = Decimal("10.00")
    assert customer_mart(env) == expected
    assert keys(env, env.landing) == []
    archived = keys(env, env.settings.storage.archive_prefix)
    assert archived == [f"{env.settings.storage.archive_prefix}run-{night.run_id}/a.csv"]


def test_a_same_night_copy_of_a_file_that_is_set_aside_is_quarantined_with_it(env: Env) -> None:
    """The copy is not a duplicate of a loaded file (nothing of it loaded): it goes to the
    error folder with the reason its original was set aside, and a later night runs."""
    raised = env.with_settings(rules={"max_amount": MAX})
    overflowing = csv_text(*[f"2,1,Tea,2024-03-05,2,{MAX},1,{MAX}"] * 2)
    env.land("big.csv", overflowing)
    env.land("copy-of-big.csv", overflowing)
    env.land("good.csv", good(1))

    summary = raised.run()

    assert summary.outcome == "succeeded"
    files = by_name(env)
    assert files["big.csv"]["status"] == "E"
    assert files["copy-of-big.csv"]["status"] == "E"
    assert f"same content as big.csv (file id {files['big.csv']['id']})" in (
        files["copy-of-big.csv"]["message"] or ""
    )
    assert files["big.csv"]["message"] in files["copy-of-big.csv"]["message"]
    error = env.settings.storage.error_prefix
    assert {key.rsplit("/", 1)[-1] for key in keys(env, error)} == {"big.csv", "copy-of-big.csv"}
    [copy] = [f for f in summary.files if f.file_name == "copy-of-big.csv"]
    assert copy.status == "E" and summary.files_duplicate == 0
    assert_good_loaded_and_next_night_runs(env, {(1, "2024-03-01"): Decimal("10.00")})


def test_files_that_only_together_overflow_a_mart_row_cost_only_the_ones_beyond(env: Env) -> None:
    """Ten files, each alone storable, for one customer and month: their sum is beyond what
    any integer of cents holds, let alone DECIMAL(18, 2). One loads; the nine that would push
    the total past the limit are set aside; the other customer's file loads."""
    raised = env.with_settings(rules={"max_amount": MAX})
    amounts = {f"big-{index}.csv": f"999999999999999{index}.00" for index in range(10)}
    for name, amount in amounts.items():
        env.land(name, good(2, amount))
    env.land("good.csv", good(1, seller=3))

    summary = raised.run()

    assert summary.outcome == "succeeded"
    files = by_name(env)
    loaded = [name for name in amounts if files[name]["status"] == "I"]
    assert len(loaded) == 1
    assert all(files[name]["status"] == "E" for name in amounts if name not in loaded)
    assert files["good.csv"]["status"] == "I"
    assert cents(env, customers_data_mart) == {
        (2, date(2024, 3, 1)): int(Decimal(amounts[loaded[0]]) * 100),
        (1, date(2024, 3, 1)): 1000,
    }
