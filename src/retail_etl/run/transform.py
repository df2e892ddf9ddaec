"""Stage 4, transform: the engine over the batch (row rules, enrichment, the lake's Parquet, the
mart contributions and daily sums), returning its Manifest and the files it had to leave out.

When the engine fails on the input itself (not on the machine: disk, memory), the files at
fault are found by bisection (isolate.py) and left out, so that one such file does not stop
every file of every run from now on. A file whose rows sum, for one mart row, to more than the
warehouse can hold is left out too: the mart SQL gives NULL there rather than failing."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow.compute as pc

from retail_etl.config import MAX_STORABLE_AMOUNT, Settings
from retail_etl.engines import BatchFile, Dimensions, Manifest, RowLimits, open_engine
from retail_etl.errors import EngineError
from retail_etl.run import isolate


@dataclass(frozen=True)
class Transformed:
    manifest: Manifest | None  # None when no file of the batch is left
    set_aside: Mapping[int, str]  # ledger id -> why the engine left it out


def transform(
    settings: Settings,
    engine_name: str,
    batch: Sequence[BatchFile],
    dims: Dimensions,
    run_id: int,
    work_dir: Path,
) -> Transformed:
    limits = RowLimits.of(settings.rules, date.today())
    out, probe_dir = work_dir / "out", work_dir / "probe"

    def attempt(files: list[BatchFile], folder: Path) -> Manifest:
        engine = open_engine(settings.engine, engine_name)
        try:
            return engine.process(files, dims, limits, run_id, folder)
        finally:
            engine.close()

    def probe(files: list[BatchFile]) -> None:
        try:
            attempt(files, probe_dir)
        finally:
            shutil.rmtree(probe_dir, ignore_errors=True)

    files = list(batch)
    left_out: dict[int, str] = {}
    while files:
        try:
            manifest = attempt(files, out)
        except Exception as exc:
            if not (isolate.is_input_fault(exc) or isolate.is_unforeseen(exc)):
                raise
            shutil.rmtree(out, ignore_errors=True)
            found = isolate.bisect(
                files, probe, "the engine", lambda item: item.file_name, failed_with=exc
            )
            if not found.set_aside:  # only fails together: nothing to set aside
                raise EngineError(
                    "the engine fails on the batch but on none of its files alone: "
                    + isolate.describe(exc)
                ) from exc
            left_out |= {
                item.ledger_id: f"the engine cannot read it: {why}" for item, why in found.set_aside
            }
            files = list(found.passed)
            continue
        unstorable = unstorable_files(manifest)
        if not unstorable:
            return Transformed(manifest, left_out)
        left_out |= unstorable
        files = [item for item in files if item.ledger_id not in unstorable]
        shutil.rmtree(out, ignore_errors=True)
    return Transformed(None, left_out)


def unstorable_files(manifest: Manifest) -> dict[int, str]:
    """Files whose rows sum, for one mart row, to more than DECIMAL(18, 2) holds (the mart
    SQL gives NULL there), each with the first such row named."""
    found: dict[int, str] = {}
    for contributions, key_columns in (
        (manifest.customer_contributions, ("customer_id", "sales_date_month")),
        (manifest.sales_team_contributions, ("store_id", "sales_person_id", "sales_month")),
    ):
        overflowing = contributions.filter(pc.is_null(contributions["total_sales"]))
        for row in overflowing.select(["ledger_id", *key_columns]).to_pylist():
            key = ", ".join(f"{name} {row[name]}" for name in key_columns)
            found.setdefault(
                int(row["ledger_id"]),
                f"its rows for {key} sum to more than {MAX_STORABLE_AMOUNT} "
                "(the largest total the marts hold)",
            )
    return found
