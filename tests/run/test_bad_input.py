"""Bad input (issue 7): thousands of malformed files thrown at validation and at the engine.
Each one is quarantined with a reason or has its bad rows rejected, every CSV record of an
accepted file is accounted for (valid + rejected), the run succeeds, the good files of the
same run are processed normally, and memory stays bounded on pathological files."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import random
import subprocess
import sys
import zlib
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
from bad_files import malformed
from chaos import cli_environment
from conftest import HEADER, Env, csv_text
from helpers import customer_mart, keys, ledger, object_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retail_etl.engines import MANDATORY_COLUMNS
from retail_etl.run.keys import rejected_key
from retail_etl.run.validate import MAX_COLUMNS, MAX_RECORD_BYTES, inspect_file

EXAMPLES = settings(
    max_examples=1500,
    deadline=None,
    derandomize=True,  # the same examples in every run: CI stays reproducible
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def plain(data: bytes, name: str) -> bytes:
    return gzip.decompress(data) if name.endswith(".gz") else data


def records(data: bytes) -> list[list[str]]:
    """The non-blank CSV records after the header, as Python's csv module reads them."""
    text = data.decode("utf-8-sig")
    return [r for r in csv.reader(io.StringIO(text, newline=""))][1:]


def check_inspection(path: Path, name: str, data: bytes) -> None:
    path.write_bytes(data)
    check = inspect_file(path, name)
    assert check.checksum == hashlib.sha256(data).hexdigest()
    assert check.size == len(data)
    if not check.ok:
        assert check.problem and "\n" not in check.problem
        return
    names = [h.lower() for h in check.header]
    assert set(MANDATORY_COLUMNS) <= set(names) and len(set(names)) == len(names)
    body = plain(data, name)
    body.decode("utf-8")  # an accepted file is text
    lines = body.split(b"\n")
    assert max(len(line) for line in lines) <= MAX_RECORD_BYTES
    if b'"' not in body:
        header_commas = lines[0].count(b",")
        assert all(abs(line.count(b",") - header_commas) <= MAX_COLUMNS for line in lines)


@EXAMPLES
@given(st.randoms(use_true_random=False))
def test_validation_of_mangled_files(tmp_path: Path, rnd: random.Random) -> None:
    name, data, _applied = malformed(rnd)
    check_inspection(tmp_path / "file", name, data)


@EXAMPLES
@given(st.binary(max_size=4096), st.sampled_from(["x.csv", "x.csv.gz", "x.CSV"]))
def test_validation_of_random_bytes(tmp_path: Path, data: bytes, name: str) -> None:
    check_inspection(tmp_path / "file", name, data)


def test_hundreds_of_malformed_files_in_one_run(env: Env, tmp_path: Path) -> None:
    """Good files beside 300 mangled ones: the run succeeds and nothing goes unaccounted."""
    good = {
        # a month no mangled file has rows in
        "good/a.csv": csv_text("1,1,Whole Milk 1L,2023-01-05,2,1.19,2,2.38"),
        "good/b.csv": csv_text("2,2,Bananas 1kg,2023-01-06,4,1.39,3,4.17"),
    }
    for key, text in good.items():
        env.land(key, text)
    landed: dict[str, bytes] = {}
    rnd = random.Random(7)
    for index in range(300):
        name, data, _applied = malformed(rnd)
        key = f"bad/{index:03d}-{name}"
        env.land(key, data)
        landed[key] = data

    summary = env.run()
    assert summary.outcome == "succeeded"
    outcome = {f.file_name: f for f in summary.files}
    assert {outcome[k].status for k in good} == {"I"} and outcome["good/a.csv"].rows_valid == 1
    assert customer_mart(env)[(1, "2023-01-01")] == Decimal("2.38")
    assert customer_mart(env)[(2, "2023-01-01")] == Decimal("4.17")

    rows = {r["file_name"]: r for r in ledger(env)}
    assert {r["status"] for r in rows.values()} <= {"I", "E", "D"}
    storage = env.settings.storage
    rejected = set(keys(env, storage.error_prefix + "rejected/"))
    for key, data in landed.items():
        row = rows[key]
        if row["status"] == "E":
            assert row["message"], key
        if row["status"] != "I":
            continue
        expected = len([r for r in records(plain(data, key)) if r])
        assert row["rows_read"] == row["rows_valid"] + row["rows_rejected"] == expected, key
        if row["rows_rejected"]:
            rows_of = rejected_key(storage.error_prefix, row["run_id"], key)
            assert rows_of in rejected, key
            text = object_bytes(env, rows_of, tmp_path).decode("utf-8")
            written = list(csv.reader(io.StringIO(text, newline="")))[1:]
            assert len(written) == row["rows_rejected"], key
            assert all(record[-1] for record in written), key  # every one says why

    lake_total = Decimal(0)
    lake_rows = 0
    for key in keys(env, storage.lake_prefix + "sales/"):
        table = pq.read_table(io.BytesIO(object_bytes(env, key, tmp_path)))
        lake_rows += table.num_rows
        lake_total += sum(table.column("total_cost").to_pylist(), Decimal(0))
    assert lake_rows == sum(r["rows_valid"] or 0 for r in rows.values() if r["status"] == "I")
    assert lake_total == sum(customer_mart(env).values())


def _gzip_bomb(zeros: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress((HEADER + "\n").encode())]
    block = b"\0" * (1 << 20)
    parts += [compressor.compress(block) for _ in range(zeros >> 20)]
    return b"".join([*parts, compressor.flush()])


ROW = "1,1,Tea,2024-03-05,2,1.19,2,2.38\n"
# name -> (bytes, a part of the quarantine message)
PATHOLOGICAL: dict[str, tuple[Callable[[], bytes], str]] = {
    "wide-row.csv": (
        lambda: (HEADER + "\n" + ROW + ",".join(["1"] * 1_000_000) + "\n" + ROW).encode(),
        "line 3 has 1000000 fields",
    ),
    "wide-header.csv": (
        lambda: (",".join(f"c{i}" for i in range(1_000_000)) + "\n" + ROW).encode(),
        "too many columns",
    ),
    "short-lines.csv": (lambda: (HEADER + "\n" + "1,2\n" * 1_000_000).encode(), "1000000 lines"),
    "endless-line.csv": (
        lambda: (HEADER + "\n" + ROW + "x" * 50_000_000 + "\n" + ROW).encode(),
        "longer than 4 MiB",
    ),
    "open-quote.csv": (
        lambda: (HEADER + "\n" + '1,1,"Tea,2024-03-05,2,1.19,2,2.38\n' + ROW * 200_000).encode(),
        "(is a quote never closed?)",
    ),
    "bomb.csv.gz": (lambda: _gzip_bomb(1 << 30), "longer than 4 MiB"),
    "random.csv": (lambda: random.Random(3).randbytes(1 << 20), "not UTF-8"),
}
RSS_LIMIT_MB = 600


def test_pathological_files_in_a_real_run_with_bounded_memory(env: Env, tmp_path: Path) -> None:
    limited = env.with_settings(engine={"memory_limit": "256MB"})
    for name, (data, _reason) in PATHOLOGICAL.items():
        limited.land(f"bad/{name}", data())
    limited.land("good/a.csv", csv_text("1,1,Whole Milk 1L,2024-03-05,2,1.19,2,2.38"))
    limited.land("good/b.csv.gz", gzip.compress(csv_text(ROW.strip() * 1).encode()))

    # The run as a child of a small parent that reports the child's peak memory.
    measure = (
        "import resource, subprocess, sys; "
        "code = subprocess.call([sys.executable, '-m', 'retail_etl', 'run', '--json']); "
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
        "print(f'peak-rss-kb {peak}', file=sys.stderr); sys.exit(code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", measure],
        cwd=env.root,
        env=cli_environment(limited.settings),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    peak_mb = int(result.stderr.split("peak-rss-kb ")[1].split()[0]) // 1024
    assert peak_mb < RSS_LIMIT_MB, f"peak RSS {peak_mb} MB"
    print(f"peak RSS of the run: {peak_mb} MB")

    rows = {r["file_name"]: r for r in ledger(env)}
    for name, (_data, reason) in PATHOLOGICAL.items():
        row = rows[f"bad/{name}"]
        assert row["status"] == "E" and reason in row["message"], (name, row["message"])
    assert rows["good/a.csv"]["status"] == rows["good/b.csv.gz"]["status"] == "I"
    assert customer_mart(env)[(1, "2024-03-01")] == Decimal("2.38") + Decimal("2.38")


def test_a_file_the_engine_cannot_read_is_quarantined_and_the_batch_goes_on(
    env: Env, tmp_path: Path
) -> None:
    """DuckDB fails a whole query on some inputs (one CRLF line in an LF file). Such a file
    must not stop the others, in this run and every later one."""
    env.land("s1.csv", csv_text("1,1,Tea,2024-03-05,2,1.19,2,2.38"))
    env.run()
    mixed = (HEADER + "\n" + "1,1,Tea,2024-03-05,2,1.19,3,3.57\r\n" + ROW).encode()
    env.land("s1.csv", mixed)  # a correction of s1 the engine cannot read
    env.land("s2.csv", csv_text("2,2,Bananas 1kg,2024-03-06,4,1.39,1,1.39"))
    env.land("s3.csv", csv_text("3,3,Sugar,2024-03-07,6,1.65,1,1.65"))

    summary = env.run()
    assert summary.outcome == "succeeded"
    assert (summary.files_processed, summary.files_quarantined, summary.files_corrected) == (
        2,
        1,
        0,
    )
    rows = ledger(env)
    assert [(r["file_name"], r["status"]) for r in rows] == [
        ("s1.csv", "I"),
        ("s1.csv", "E"),
        ("s2.csv", "I"),
        ("s3.csv", "I"),
    ]
    assert rows[1]["message"].startswith("the engine cannot read it: duckdb: ")
    assert rows[0]["superseded_by"] is None  # the unreadable correction replaced nothing
    assert customer_mart(env) == {
        (1, "2024-03-01"): Decimal("2.38"),
        (2, "2024-03-01"): Decimal("1.39"),
        (3, "2024-03-01"): Decimal("1.65"),
    }
    quarantined = keys(env, env.settings.storage.error_prefix)
    assert [object_bytes(env, k, tmp_path) for k in quarantined] == [mixed]
    assert env.run().files_seen == 0
