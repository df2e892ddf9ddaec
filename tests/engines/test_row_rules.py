"""SPEC section 4: every invalid row is kept with a reason naming the column and the problem."""

from __future__ import annotations

import csv
import gzip
import io
from decimal import Decimal

import pytest
from conftest import HEADER, Env, csv_text
from helpers import customer_mart, keys, ledger, object_bytes
from hypothesis import given
from hypothesis import strategies as st

from retail_etl.run.keys import rejected_key, rejected_keys

GOOD = "1,1,Whole Milk 1L,2024-03-05,2,1.19,2,2.38"


def with_value(column: str, value: str) -> str:
    values = GOOD.split(",")
    values[HEADER.split(",").index(column)] = value
    return ",".join(values)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("customer_id", "", "customer_id is empty"),
        ("store_id", " ", "store_id is empty"),
        ("product_name", "", "product_name is empty"),
        ("sales_date", "", "sales_date is empty"),
        ("sales_person_id", "", "sales_person_id is empty"),
        ("price", "", "price is empty"),
        ("quantity", "", "quantity is empty"),
        ("total_cost", "", "total_cost is empty"),
        ("customer_id", "1.5", "customer_id is not an integer"),
        ("store_id", "one", "store_id is not an integer"),
        ("sales_person_id", "2x", "sales_person_id is not an integer"),
        ("quantity", "2.0", "quantity is not an integer"),
        ("price", "abc", "price is not a number"),
        ("total_cost", "1,5", "total_cost is not a number"),  # quoted below
        ("total_cost", "2.385", "total_cost has more than 2 decimal places"),
        ("sales_date", "2024-02-30", "sales_date is not a valid YYYY-MM-DD date"),
        ("sales_date", "05/03/2024", "sales_date is not a valid YYYY-MM-DD date"),
        ("quantity", "0", "quantity is not greater than 0"),
        ("quantity", "-3", "quantity is not greater than 0"),
        ("price", "-1.00", "price is negative"),
        ("total_cost", "-0.01", "total_cost is negative"),
        ("customer_id", "424242", "customer_id not in customer"),
        ("store_id", "99", "store_id not in store"),
        ("sales_person_id", "77", "sales_person_id not in sales_team"),
        # what the warehouse cannot store, sum or report (defaults of [rules])
        ("sales_date", "0001-01-01", "sales_date is before 2000-01-01 (rules.min_sales_date)"),
        ("sales_date", "0999-06-15", "sales_date is before 2000-01-01"),
        ("sales_date", "1999-12-31", "sales_date is before 2000-01-01"),
        ("sales_date", "9999-12-31", "(rules.max_days_ahead)"),
        ("price", "100000000.01", "price is more than 100000000.00 (rules.max_amount)"),
        ("total_cost", "9999999999999999.99", "total_cost is more than 100000000.00"),
        ("quantity", "1000001", "quantity is more than 1000000 (rules.max_quantity)"),
        ("product_name", "x" * 256, "product_name is longer than 255 characters"),
        ("product_name", "é" * 70_000, "product_name is longer than 255 characters"),
    ],
)
def test_invalid_row_is_rejected_with_reason(
    env: Env, tmp_path, column: str, value: str, reason: str
) -> None:
    quoted = f'"{value}"' if "," in value else value
    env.land("day.csv", csv_text(GOOD.replace("1,1,", "3,1,", 1), with_value(column, quoted)))
    summary = env.run()
    assert (summary.rows_valid, summary.rows_rejected) == (1, 1)
    (row,) = ledger(env)
    assert (row["status"], row["rows_read"], row["rows_valid"], row["rows_rejected"]) == (
        "I",
        2,
        1,
        1,
    )
    rejected_key = f"{env.settings.storage.error_prefix}rejected/{summary.run_id}/day.csv"
    assert keys(env, env.settings.storage.error_prefix + "rejected/") == [rejected_key]
    records = list(csv.DictReader(io.StringIO(object_bytes(env, rejected_key, tmp_path).decode())))
    assert len(records) == 1
    assert reason in records[0]["reject_reason"]
    assert records[0][column] == value  # the original value, as written
    assert list(records[0]) == [*HEADER.split(","), "reject_reason"]
    # only the valid row reached the marts
    assert customer_mart(env) == {(3, "2024-03-01"): Decimal("2.38")}


def test_all_problems_of_a_row_are_named(env: Env, tmp_path) -> None:
    env.land("bad.csv", csv_text("x,1,Milk,2024-13-01,2,-1,0,1.00"))
    summary = env.run()
    key = f"{env.settings.storage.error_prefix}rejected/{summary.run_id}/bad.csv"
    (record,) = csv.DictReader(io.StringIO(object_bytes(env, key, tmp_path).decode()))
    assert record["reject_reason"] == (
        "customer_id is not an integer; sales_date is not a valid YYYY-MM-DD date; "
        "price is negative; quantity is not greater than 0"
    )


@pytest.mark.parametrize(
    ("file_name", "rejected_name"),
    [
        ("day.csv", "day.csv"),
        ("2024-03-01/Day.CSV", "2024-03-01/Day.CSV"),
        ("day.csv.gz", "day.csv"),
        ("2024-03-01/DAY.Csv.Gz", "2024-03-01/DAY.Csv"),
        ("day.txt", "day.txt.csv"),
        ("day", "day.csv"),
    ],
)
def test_rejected_rows_file_is_named_after_its_source(file_name: str, rejected_name: str) -> None:
    assert rejected_key("err/", 7, file_name) == f"err/rejected/7/{rejected_name}"


def test_a_rejected_rows_name_past_a_file_names_255_bytes_is_shortened() -> None:
    """A landed `<252 bytes>.csv.gz` beside its `.csv`: its rejected rows would go to a
    259-byte `.csv.gz.csv`, which no folder bucket can hold."""
    name = "d/" + "a" * 252 + ".csv.gz.csv"
    key = rejected_key("err/", 7, name)
    last = key.rsplit("/", 1)[-1]
    assert key.startswith("err/rejected/7/") and last.endswith("a.csv.gz.csv")
    assert len(last.encode()) <= 255
    assert rejected_key("err/", 7, name) == key != rejected_key("err/", 7, "d/b" + name[3:])


def test_rejected_rows_keys_of_names_that_clash() -> None:
    names = {1: "x.csv", 2: "x.csv.gz", 3: "y.csv.gz", 4: "y.csv/a.csv", 5: "z.csv.gz"}
    names |= {6: "w.csv", 7: "w.csv.gz", 8: "w.csv.gz.csv", 9: "v.CSV.GZ"}
    keys = rejected_keys("err/", 7, names)
    assert keys == {
        1: "err/rejected/7/x.csv",
        2: "err/rejected/7/x.csv.gz.csv",  # beside x.csv
        3: "err/rejected/7/y.csv.gz.csv",  # beside the folder y.csv/
        4: "err/rejected/7/y.csv/a.csv",
        5: "err/rejected/7/z.csv",
        6: "err/rejected/7/w.csv",
        7: "err/rejected/7-7/w.csv",  # w.csv and w.csv.gz.csv both taken: a folder of its own
        8: "err/rejected/7/w.csv.gz.csv",
        9: "err/rejected/7/v.CSV",
    }


_NAME_PARTS = st.sampled_from(["x", "x.csv", "x.csv.gz", "x.csv.gz.csv", "y.CSV.gz", "x.txt"])


@given(st.lists(st.lists(_NAME_PARTS, min_size=1, max_size=3).map("/".join), unique=True))
def test_rejected_rows_keys_are_distinct_and_a_folder_of_another_only_where_landing_was(
    names: list[str],
) -> None:
    """Distinct keys, and a key that is a folder of another's only between two names landing
    held that way (both kept as they landed), so that any store holding landing holds them."""
    keys = rejected_keys("err/", 3, dict(enumerate(names)))
    assert keys == rejected_keys("err/", 3, dict(enumerate(names)))  # a resumed run's too
    assert len(set(keys.values())) == len(names)
    as_landed = {i for i, name in enumerate(names) if keys[i] == f"err/rejected/3/{name}"}
    for i, key in keys.items():
        for j, other in keys.items():
            if other.startswith(key + "/"):
                assert {i, j} <= as_landed, (names[i], names[j])
    for i, name in enumerate(names):  # a .csv keeps the name it landed with
        if name.lower().endswith(".csv"):
            assert i in as_landed


def test_rejected_rows_of_a_gzip_file_go_to_a_csv_of_its_name(embedded: Env, tmp_path) -> None:
    embedded.land("2024-03-05/Store 1.CSV.GZ", gzip.compress(csv_text(GOOD, "x,1").encode()))
    summary = embedded.run()
    prefix = embedded.settings.storage.error_prefix + "rejected/"
    assert keys(embedded, prefix) == [f"{prefix}{summary.run_id}/2024-03-05/Store 1.CSV"]


def test_a_gzip_files_rejected_rows_never_take_another_files_key(env: Env, tmp_path) -> None:
    """x.csv.gz's rejected rows go to x.csv, unless the same night brings x.csv itself or
    files in a folder x.csv/ (a folder bucket cannot hold a file and a folder of one name:
    every night would fail writing the second): the .gz one then keeps its whole name, or,
    when that is taken too, goes to a folder of its own; no file's rows take another's key."""
    rejected = with_value("quantity", "0")
    named = ("x.csv/y.csv", "z.csv", "x.csv.gz", "z.csv.gz", "w.csv", "w.csv.gz", "w.csv.gz.csv")
    for customer, name in enumerate(named, 1):
        text = csv_text(GOOD.replace("1", str(customer), 1), rejected)  # not duplicates
        env.land(name, gzip.compress(text.encode()) if name.endswith(".gz") else text)

    summary = env.run()

    assert summary.outcome == "succeeded"
    assert {row["status"] for row in ledger(env)} == {"I"}
    prefix = f"{env.settings.storage.error_prefix}rejected/{summary.run_id}/"
    gz = {row["file_name"]: row["id"] for row in ledger(env)}["w.csv.gz"]
    written = keys(env, f"{env.settings.storage.error_prefix}rejected/")
    assert written == [
        f"{prefix[:-1]}-{gz}/w.csv",  # w.csv and w.csv.gz.csv are both taken
        *(prefix + n for n in ("w.csv", "w.csv.gz.csv", "x.csv.gz.csv", "x.csv/y.csv")),
        *(prefix + n for n in ("z.csv", "z.csv.gz.csv")),
    ]
    for key in written:
        lines = object_bytes(env, key, tmp_path).decode().splitlines()
        assert lines[1:] == [f"{rejected},quantity is not greater than 0"]


def test_rejected_rows_keep_extra_columns_in_original_order(env: Env, tmp_path) -> None:
    header = f"note,{HEADER},payment"
    env.land("x.csv", csv_text(f"hello,{with_value('quantity', '0')},card", header=header))
    summary = env.run()
    key = f"{env.settings.storage.error_prefix}rejected/{summary.run_id}/x.csv"
    lines = object_bytes(env, key, tmp_path).decode().splitlines()
    assert lines[0] == f"{header},reject_reason"
    assert lines[1] == f"hello,{with_value('quantity', '0')},card,quantity is not greater than 0"


def test_malformed_line_is_rejected_not_dropped(env: Env, tmp_path) -> None:
    env.land("ragged.csv", csv_text(GOOD, "1,1,Milk,2024-03-05,2,1.19,2,2.38,surplus", "2,1,Milk"))
    summary = env.run()
    (row,) = ledger(env)
    assert (row["rows_read"], row["rows_valid"], row["rows_rejected"]) == (3, 1, 2)
    key = f"{env.settings.storage.error_prefix}rejected/{summary.run_id}/ragged.csv"
    records = list(csv.DictReader(io.StringIO(object_bytes(env, key, tmp_path).decode())))
    assert len(records) == 2
    assert all("malformed CSV line" in r["reject_reason"] for r in records)


def test_money_is_exact_decimal(env: Env) -> None:
    rows = [f"1,1,Candy,2024-03-0{d},2,0.10,1,0.10" for d in range(1, 4)]
    rows += ["1,1,Big,2024-03-04,2,9999999999999.99,1,9999999999999.99"]
    env.land("cents.csv", csv_text(*rows))
    # amounts far above a double's exact range (2^53 cents), as a configured limit allows
    env.with_settings(rules={"max_amount": "9999999999999.99"}).run()
    assert customer_mart(env) == {(1, "2024-03-01"): Decimal("10000000000000.29")}


def test_unclosed_quote_on_the_last_line_is_rejected_even_among_many_files(
    env: Env, tmp_path
) -> None:
    for index in range(4):  # distinct content, or they would be duplicates
        env.land(f"ok{index}.csv", csv_text(GOOD.replace("1,1,", f"{index + 1},1,", 1)))
    env.land("open-quote.csv", csv_text(GOOD) + '1,1,Milk,2024-03-05,2,1.19,2,"2.38\n')
    summary = env.run()
    assert (summary.rows_read, summary.rows_valid, summary.rows_rejected) == (6, 5, 1)
    key = f"{env.settings.storage.error_prefix}rejected/{summary.run_id}/open-quote.csv"
    records = list(csv.DictReader(io.StringIO(object_bytes(env, key, tmp_path).decode())))
    assert len(records) == 1 and "malformed CSV line 3" in records[0]["reject_reason"]
