"""Stage 4, transform: the engine over the batch (row rules, enrichment, the lake's Parquet, the
mart contributions and daily sums), returning its Manifest and the files it had to leave out.

A correction takes the file it replaces back out of the marts: what that file put in is
recomputed, by the same mart SQL, from its lake objects (the lake index names them), fetched
here; the warehouse keeps no per-file copy of what each file contributed.

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
from sqlalchemy import select

from retail_etl.config import MAX_STORABLE_AMOUNT, Settings
from retail_etl.engines import BatchFile, Manifest, RowLimits, open_engine
from retail_etl.engines.dimensions import load_dimensions
from retail_etl.errors import EngineError, WarehouseError
from retail_etl.run import isolate
from retail_etl.run.triage import Triage
from retail_etl.storage import ObjectStore
from retail_etl.warehouse import Warehouse
from retail_etl.warehouse.schema import lake_object


@dataclass(frozen=True)
class Transformed:
    manifest: Manifest | None  # None when no file of the batch is left
    set_aside: Mapping[int, str]  # ledger id -> why the engine left it out


def transform(
    settings: Settings,
    engine_name: str,
    store: ObjectStore,
    warehouse: Warehouse,
    triaged: Triage,
    run_id: int,
    work_dir: Path,
) -> Transformed:
    limits = RowLimits.of(settings.rules, date.today())
    dims = load_dimensions(warehouse)
    empty = [name for name, table in dims.required().items() if not table.num_rows]
    if empty:  # every row would be rejected as unknown: not the files' fault
        raise WarehouseError(
            f"warehouse {warehouse.display_url}: the {', '.join(empty)} table"
            f"{'s are' if len(empty) > 1 else ' is'} empty, so every sales row would be "
            "rejected as unknown; they are loaded by the systems that own them (`retail-etl "
            "init --demo` loads sample rows). No file was processed: the next run does them"
        )
    out, probe_dir = work_dir / "out", work_dir / "probe"
    retired, left_out = fetch_retired(store, warehouse, triaged.corrections, work_dir / "retired")

    def attempt(files: list[BatchFile], folder: Path, replaced: Sequence[Path] = ()) -> Manifest:
        engine = open_engine(settings.engine, engine_name)
        try:
            return engine.process(files, dims, limits, run_id, folder, replaced)
        finally:
            engine.close()

    def probe(files: list[BatchFile]) -> None:
        try:
            attempt(files, probe_dir)
        finally:
            shutil.rmtree(probe_dir, ignore_errors=True)

    files = [item for item in triaged.batch if item.ledger_id not in left_out]
    while files:
        try:
            manifest = attempt(files, out, retired)
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


def fetch_retired(
    store: ObjectStore, warehouse: Warehouse, corrections: Mapping[int, int], folder: Path
) -> tuple[list[Path], dict[int, str]]:
    """The lake objects of the files these corrections replace, downloaded under their
    sales_month=M/store_id=S/ folders; and the corrections that cannot be applied because an
    object of the file they replace is missing (nobody could say what to take out)."""
    by_old = {old: new for new, old in corrections.items()}
    paths: list[Path] = []
    problems: dict[int, str] = {}
    if not by_old:
        return paths, problems
    with warehouse.begin() as conn:
        keys = conn.execute(
            select(lake_object.c.ledger_id, lake_object.c.object_key)
            .where(lake_object.c.ledger_id.in_(sorted(by_old)))
            .order_by(lake_object.c.object_key)
        ).fetchall()
    by_file: dict[int, list[str]] = {}
    for old_id, key in keys:
        by_file.setdefault(old_id, []).append(key)
    for old_id, file_keys in by_file.items():
        missing = [key for key in file_keys if not store.exists(key)]
        if missing:
            problems[by_old[old_id]] = (
                f"cannot correct file id {old_id}: its lake object {missing[0]} is missing, so "
                "what it put in the marts cannot be taken out"
            )
            continue
        for key in file_keys:
            # the key ends .../sales_month=M/store_id=S/ledger-L-i.parquet
            dest = folder.joinpath(*key.rsplit("/", 3)[-3:])
            dest.parent.mkdir(parents=True, exist_ok=True)
            store.download(key, dest)
            paths.append(dest)
    return paths, problems
