"""Isolation, generated (issue 13): one hostile row in a file with a hostile name, landed beside
a good file, night after night in the same installation. No run fails, nothing is left
half-done, every admitted value is one the warehouse can store, and the marts equal an
independent sum of the admitted rows (the lake's)."""

from __future__ import annotations

import csv
import io
import itertools
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal

import pyarrow.parquet as pq
from conftest import HEADER, Env
from helpers import customer_mart, keys, ledger
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retail_etl.engines.base import PRODUCT_NAME_LENGTH

TODAY = date.today()
DEFAULTS_MAX_AMOUNT = Decimal("100000000.00")
GOOD_ROW = ["1", "1", "Whole Milk 1L", "2024-03-05", "2", "1.19", "2", "2.38"]

numbers = st.sampled_from(
    ["0", "-0", "1", "1.5", "0.01", "99999999.99", "100000000.00", "100000000.01",
     "9999999999999999.99", "99999999999999999999", "1e5", "0x10", ".5", "1_000", "nan",
     "inf", " 7 ", "+3", "-1", "1,5", "９"]
)  # fmt: skip
dates = st.one_of(
    st.sampled_from(
        [
            "0001-01-01",
            "0999-06-15",
            "1999-12-31",
            "2000-01-01",
            "9999-12-31",
            "2024-02-29",
            "2023-02-29",
            "2024-13-01",
            "24-03-05",
            "2024/03/05",
            "",
        ]
    ),  # fmt: skip
    st.integers(-3, 30).map(lambda d: (TODAY + timedelta(days=d)).isoformat()),
)
texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(['=HYPERLINK("x")', "+1", "@x", "\t", "a\r\nb", 'a,"b"', "\u202e", ""]),
    st.integers(200, 70_000).map(lambda n: "é" * n),
)
hostile_rows = st.tuples(
    st.one_of(numbers, st.integers(1, 40).map(str)),  # customer_id
    st.one_of(numbers, st.integers(1, 4).map(str)),  # store_id
    texts,  # product_name
    dates,  # sales_date
    st.one_of(numbers, st.integers(1, 10).map(str)),  # sales_person_id
    numbers,  # price
    st.one_of(numbers, st.integers(1, 2_000_000).map(str)),  # quantity
    numbers,  # total_cost
)
name_parts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
    min_size=1,
    max_size=60,
).filter(lambda part: part not in (".", ".."))
file_names = st.one_of(
    name_parts.map(lambda n: f"{n}.csv"),
    st.lists(name_parts, min_size=1, max_size=3).map(lambda p: "/".join(p) + ".CSV"),
    st.integers(1, 5).map(lambda n: "/".join(["long" * 45] * n) + "/x.csv"),
    name_parts,  # not a CSV name: quarantined as a file
)

NIGHTS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def as_csv(*rows: list[str] | tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER.split(","))
    writer.writerows(rows)
    return buffer.getvalue()


NIGHT = itertools.count(1)


@NIGHTS
@given(row=hostile_rows, name=file_names)
def test_a_hostile_row_or_name_costs_only_its_own_file(
    env: Env, tmp_path_factory, row: tuple[str, ...], name: str
) -> None:
    night = next(NIGHT)  # distinct keys and content every night, whatever hypothesis repeats
    good = list(GOOD_ROW)
    good[7] = f"{night}.00"
    env.land(f"good/{night}.csv", as_csv(good))
    env.land(f"hostile/{night}/{name}", as_csv(row, GOOD_ROW))

    summary = env.run()

    assert summary.outcome == "succeeded"
    rows = ledger(env)
    assert {r["status"] for r in rows} <= {"I", "E", "D"}, "nothing is left half-done"
    assert [r for r in rows if r["file_name"] == f"good/{night}.csv"][0]["status"] == "I"
    assert keys(env, env.landing) == []

    lake = admitted_rows(env, tmp_path_factory.mktemp("lake"))
    for sale in lake:
        assert Decimal(0) <= sale["total_cost"] <= DEFAULTS_MAX_AMOUNT
        assert Decimal(0) <= sale["price"] <= DEFAULTS_MAX_AMOUNT
        assert date(2000, 1, 1) <= sale["sales_date"] <= TODAY + timedelta(days=7)
        assert 0 < len(sale["product_name"]) <= PRODUCT_NAME_LENGTH
        assert 1 <= sale["quantity"] <= 1_000_000
    expected: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
    for sale in lake:
        month = sale["sales_date"].replace(day=1).isoformat()
        expected[(sale["customer_id"], month)] += sale["total_cost"]
    assert customer_mart(env) == dict(expected)
    assert sum(r["rows_valid"] or 0 for r in rows if r["status"] == "I") == len(lake)


def admitted_rows(env: Env, folder) -> list[dict]:
    found = []
    for index, key in enumerate(keys(env, env.settings.storage.lake_prefix + "sales/")):
        dest = folder / f"{index}.parquet"
        env.store.download(key, dest)
        found += pq.read_table(dest).to_pylist()
    return found
