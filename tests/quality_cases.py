"""Files with known bad rows and what a run must count of them (issue 16), shared by the
backend tests (tests/run/test_quality.py) and the Spark engine's (tests/engines)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from conftest import Env, csv_text
from helpers import object_bytes
from sqlalchemy import MetaData, select

from retail_etl.run import RunSummary
from retail_etl.run.dry_run import dry_run

GOOD = "1,1,Whole Milk 1L,2024-03-01,2,1.19,3,3.57"

# 6 rows: 2 valid, 4 rejected (one breaks two rules), one of them a malformed line
KNOWN_BAD = csv_text(
    GOOD,
    "2,1,Rolled Oats 1kg,2024-03-02,3,3.49,2,6.98",
    "1,1,Whole Milk 1L,2024-03-01,2,1.19,x,3.57",
    "1,1,Whole Milk 1L,2024-03-01,2,abc,,3.57",
    "999999,1,Whole Milk 1L,2024-03-01,2,1.19,1,1.19",
    "1,1,Whole Milk 1L,2024-03-01,2,1.19,1,1.19,surplus",
)
KNOWN_BAD_RULES = {
    "customer_id not in customer": 1,
    "malformed CSV line": 1,
    "price is not a number": 1,
    "quantity is empty": 1,
    "quantity is not an integer": 1,
}
NOT_UTF8 = (csv_text(GOOD) + "1,1,Caf\xe9,2024-03-01,2,1.00,1,1.00\n").encode("latin-1")


def rejecting(bad: int, good: int, day: int = 3) -> str:
    """A file of good + bad rows; the bad ones have a quantity that is not an integer."""
    return csv_text(
        *[f"2,1,Whole Milk 1L,2024-03-{day:02d},2,1.19,1,1.19"] * good,
        *[f"2,1,Whole Milk 1L,2024-03-{day:02d},2,1.19,many,1.19"] * bad,
    )


def files_by_name(summary: RunSummary) -> dict[str, dict[str, Any]]:
    return {item.file_name: asdict(item) for item in summary.files}


def everything(env: Env, tmp_path: Path) -> dict[str, Any]:
    """Every row of every table and every object of the bucket, with its bytes."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    metadata = MetaData()
    with env.warehouse.begin() as conn:
        metadata.reflect(conn)
        tables = {
            name: sorted(map(repr, conn.execute(select(table)).fetchall()))
            for name, table in metadata.tables.items()
        }
    objects = {info.key: object_bytes(env, info.key, tmp_path) for info in env.store.list("")}
    return {"tables": tables, "objects": objects}


PREDICTED = (
    "files_seen",
    "files_resumed",
    "files_processed",
    "files_quarantined",
    "files_duplicate",
    "files_corrected",
    "rows_read",
    "rows_valid",
    "rows_rejected",
    "lake_objects",
    "rejected_files",
    "rules",
    "mart_rows_changed",
)


def prediction(summary: RunSummary) -> dict[str, Any]:
    """What a dry run predicts of a run: everything but ids, times and what is only known
    once written (bytes, warehouse rows)."""
    data = asdict(summary)
    return {name: data[name] for name in PREDICTED} | {
        "files": sorted(
            (
                f["file_name"],
                f["status"],
                f["rows_read"],
                f["rows_valid"],
                f["rows_rejected"],
                f["message"],
                f["rules"],
            )
            for f in data["files"]
        )
    }


def land_a_night(env: Env) -> None:
    """After a first run of a.csv: a correction of it, a new file and its duplicate (67% of
    their rows rejected), a file that is not UTF-8 and one with 75% of its rows rejected."""
    env.land("2024-03-02/b.csv", KNOWN_BAD)
    env.land("2024-03-01/a.csv", csv_text(GOOD, "3,1,Whole Milk 1L,2024-04-01,2,1.19,2,2.38"))
    env.land("2024-03-02/b-again.csv", KNOWN_BAD)
    env.land("2024-03-02/latin1.csv", NOT_UTF8)
    env.land("2024-03-03/gated.csv", rejecting(bad=3, good=1))


def dry_run_then_run(env: Env, tmp_path: Path) -> tuple[RunSummary, RunSummary]:
    """A dry run, proven to change nothing, then the real run, both with the gate at 70%."""
    gated = env.with_settings(rules={"max_rejected_share": 0.7})
    before = everything(env, tmp_path / "before")
    predicted = dry_run(gated.settings)
    assert everything(env, tmp_path / "after") == before
    actual = gated.run()
    assert prediction(predicted) == prediction(actual)
    return predicted, actual
