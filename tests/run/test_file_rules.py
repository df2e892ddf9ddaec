"""SPEC section 3: which files are accepted, and what happens to the others."""

from __future__ import annotations

import gzip
import zlib

import pytest
from conftest import HEADER, Env, csv_text
from helpers import keys, lake_rows, ledger

ROW = "1,1,Whole Milk 1L,2024-03-05,2,1.19,2,2.38"


def gzip_with_flag(flag: int, fields: bytes, text: str | None = None) -> bytes:
    """A gzip member of `text` (a CSV of ROW by default) whose header sets `flag`, followed
    by that flag's header fields (FHCRC's CRC16 is computed)."""
    plain = gzip.compress((text if text is not None else csv_text(ROW)).encode(), mtime=0)
    header = plain[:3] + bytes([flag]) + plain[4:10]
    if flag == 0x02:
        fields = (zlib.crc32(header) & 0xFFFF).to_bytes(2, "little")
    return header + fields + plain[10:]


def only_file(env: Env) -> dict:
    (row,) = ledger(env)
    return row


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("empty.csv", b"", "empty file"),
        ("notes.txt", b"hello", "not a CSV file"),
        (
            "latin1.csv",
            (HEADER + "\n1,1,Caf\xe9,2024-03-05,2,1.00,1,1.00\n").encode("latin-1"),
            "not UTF-8",
        ),
        ("dup.csv", csv_text(ROW, header=HEADER + ",Price"), "duplicate header names: price"),
        ("nohdr.csv", "a,b,c\n1,2,3\n", "missing mandatory columns: customer_id, store_id"),
        ("truncated.csv.gz", gzip.compress(csv_text(ROW).encode())[:-12], "gzip"),
        ("notgzip.csv.gz", csv_text(ROW).encode(), "gzip"),
        ("zlib.csv.gz", zlib.compress(csv_text(ROW).encode()), "not a readable gzip file"),
        (
            "then-zlib.csv.gz",
            gzip.compress(csv_text(ROW).encode()) + zlib.compress(b"2,1,Tea,2024-03-05,2,1,1,1\n"),
            "not a readable gzip file",
        ),
        ("comment.csv.gz", gzip_with_flag(0x10, b"a note\0"), "it sets FCOMMENT"),
        ("hcrc.csv.gz", gzip_with_flag(0x02, b""), "it sets FHCRC"),
        ("text.csv.gz", gzip_with_flag(0x01, b""), "it sets FTEXT"),
        (
            "second-member-comment.csv.gz",
            gzip.compress(csv_text(ROW).encode()) + gzip_with_flag(0x10, b"x\0", ROW + "\n"),
            "it sets FCOMMENT",
        ),
    ],
)
def test_unusable_file_is_quarantined_byte_identical_with_reason(
    env: Env, tmp_path, name: str, data: bytes | str, message: str
) -> None:
    env.land(name, data)
    summary = env.run()
    row = only_file(env)
    assert row["status"] == "E"
    assert message in row["message"]
    assert summary.files_quarantined == 1
    error_keys = keys(env, env.settings.storage.error_prefix)
    assert len(error_keys) == 1 and error_keys[0].endswith(name)
    stored = tmp_path / "stored"
    env.store.download(error_keys[0], stored)
    assert stored.read_bytes() == (data.encode() if isinstance(data, str) else data)
    assert keys(env, env.landing) == []


def test_a_gzip_the_engine_cannot_read_costs_only_its_own_file(env: Env) -> None:
    """zlib accepts a comment in a gzip header, DuckDB refuses it and fails the whole batch:
    the file is quarantined when it is checked, the rest of the night loads."""
    env.land("comment.csv.gz", gzip_with_flag(0x10, b"exported by the till\0"))
    env.land("good.csv", csv_text("2,1,Whole Milk 1L,2024-03-05,2,1.19,1,1.19"))

    summary = env.run()

    assert summary.outcome == "succeeded"
    assert {r["file_name"]: r["status"] for r in ledger(env)} == {
        "comment.csv.gz": "E",
        "good.csv": "I",
    }


def test_missing_column_names_every_missing_column(env: Env) -> None:
    header = "customer_id,store_id,product_name,sales_date,price,quantity"
    env.land("short.csv", csv_text("1,1,Milk,2024-03-05,1.00,1", header=header))
    env.run()
    row = only_file(env)
    assert row["status"] == "E"
    assert row["message"] == "missing mandatory columns: sales_person_id, total_cost"


def test_header_matching_ignores_case_spaces_bom_and_order(env: Env, tmp_path) -> None:
    header = (
        "\ufeff Total_Cost ,QUANTITY,price,Sales_Person_ID,sales_date, Product_Name,"
        "Store_Id,customer_id"
    )
    env.land(
        "odd-header.csv", csv_text("2.38,2,1.19,2,2024-03-05,Whole Milk 1L,1,1", header=header)
    )
    env.run()
    assert only_file(env)["status"] == "I"
    ((month, store, customer, product, day, seller, price, qty, total, *_rest),) = lake_rows(
        env, tmp_path
    )
    assert (month, store, customer, product, str(day), seller) == (
        "2024-03",
        1,
        1,
        "Whole Milk 1L",
        "2024-03-05",
        2,
    )
    assert (str(price), qty, str(total)) == ("1.19", 2, "2.38")


def test_extra_columns_fold_into_additional_column_in_header_order(env: Env, tmp_path) -> None:
    env.land("extra.csv", csv_text(f"note,{ROW},card", header=f"channel_note,{HEADER},payment"))
    env.land("plain.csv", csv_text("2,1,Whole Milk 1L,2024-03-05,2,1.19,1,1.19"))
    env.run()
    additional = {row[2]: row[9] for row in lake_rows(env, tmp_path)}
    assert additional == {1: "note, card", 2: None}


def test_csv_gz_uppercase_extension_quotes_and_crlf_are_read(env: Env, tmp_path) -> None:
    text = (
        HEADER
        + "\r\n"
        + '1,1,"Oats, rolled ""fine""",2024-03-05,2,3.49,1,3.49\r\n'
        + '2,1,"Two\nlines",2024-03-05,2,1.00,1,1.00\r\n'
    )
    env.land("quoted.CSV", text)
    env.land(
        "zipped.CSV.GZ",
        gzip.compress(csv_text("3,1,Whole Milk 1L,2024-03-05,2,1.19,1,1.19").encode()),
    )
    env.run()
    assert {r["status"] for r in ledger(env)} == {"I"}
    names = sorted(row[3] for row in lake_rows(env, tmp_path))
    assert names == ['Oats, rolled "fine"', "Two\nlines", "Whole Milk 1L"]


def test_header_only_file_is_valid_with_zero_rows(env: Env) -> None:
    env.land("header-only.csv", HEADER + "\n")
    env.run()
    row = only_file(env)
    assert (row["status"], row["rows_read"], row["rows_valid"]) == ("I", 0, 0)


def test_objects_found_recursively_under_landing(env: Env) -> None:
    env.land("2024/03/05/deep.csv", csv_text(ROW))
    env.run()
    assert only_file(env)["file_name"] == "2024/03/05/deep.csv"
    assert only_file(env)["status"] == "I"


def test_commas_inside_quotes_do_not_make_a_large_file_look_broken() -> None:
    """A product name with a comma ("Bread, Wholemeal") on every line is a normal file: the
    streaming count must not take those lines for extra fields and fall back to parsing the
    whole file in Python (which made a 1 GB day spend 16 s validating). The data arrives in
    chunks that end inside quoted values."""
    from retail_etl.run.validate import _Shape

    line = b'1,"Bread, Wholemeal ""large""",2024-03-01\n'
    data = b"customer_id,product_name,sales_date\n" + line * 200_000 + b"1,2,3,4\n"
    shape = _Shape()
    for start in range(0, len(data), 65_537):
        shape.feed(data[start : start + 65_537])

    def parse_everything() -> str:
        raise AssertionError("the fast count should have been enough")

    assert shape.finish(parse_everything) is None
    assert shape.irregular == (1, 200_002)  # the one real extra field, on its line


def test_a_quote_in_the_middle_of_a_field_does_not_hide_commas_from_the_check() -> None:
    """The engines read a quote that does not open a field as text: the commas after it are
    real separators, so the streaming check must not trust its quote-aware count and has the
    file parsed exactly."""
    from retail_etl.run.validate import _Shape

    data = b"customer_id,product_name,sales_date\n" + b'1,a"b,' + b"x," * 5_000 + b'c"d,3\n'
    shape = _Shape()
    shape.feed(data)
    parsed = []

    def parse_everything() -> tuple[int, int, int]:
        parsed.append(True)
        return (0, 0, 0)

    shape.finish(parse_everything)
    assert parsed


def test_the_streaming_line_count_equals_a_line_by_line_count_whatever_the_chunks() -> None:
    """The per-line counts behind the broken-line budget (fields off per line, the first
    irregular line, the longest line), on random CSV-like bytes fed in random pieces, agree
    with counting each line on its own: commas outside quotes, a quote's parity carried
    across lines."""
    import random

    from retail_etl.run.validate import _ERROR_OVERHEAD, _LINE_KEPT, _Shape

    def by_line(data: bytes) -> tuple[int, tuple[int, int], tuple[int, int]]:
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        header_commas = None
        parity = 0
        cost, irregular, first, longest = 0, 0, 0, (0, 0)
        for number, line in enumerate(lines, start=1):
            length = len(line) + 1
            commas = 0
            for byte in line:
                if byte == ord('"'):
                    parity ^= 1
                elif byte == ord(",") and not parity:
                    commas += 1
            if length > longest[0]:
                longest = (length, number)
            if header_commas is None:
                header_commas = commas
                continue
            off = abs(commas - header_commas)
            if off and not (commas == 0 and length <= 1):
                cost += off * (min(length, _LINE_KEPT) + _ERROR_OVERHEAD)
                irregular += 1
                first = first or number
        return cost, (irregular, first), longest

    rng = random.Random(7)
    for _ in range(500):
        body = bytes(rng.choice(b'ab,,""\n\n1 ') for _ in range(rng.randint(0, 300)))
        data = b"a,b,c\n" + body + b"\n"
        shape = _Shape()
        step = rng.randint(1, 40)
        for start in range(0, len(data), step):
            shape.feed(data[start : start + step])
        shape.finish(lambda: (0, 0, 0))
        assert (shape.cost, shape.irregular, shape.longest) == by_line(data), (data, step)
