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
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pyarrow.compute as pc
from sqlalchemy import select

from retail_etl.config import MAX_STORABLE_AMOUNT, RulesSettings, Settings
from retail_etl.engines import (
    BatchFile,
    Dimensions,
    Engine,
    FileCounts,
    Manifest,
    RowLimits,
    open_engine,
)
from retail_etl.errors import EngineError, WarehouseError
from retail_etl.run import isolate
from retail_etl.run.triage import Triage
from retail_etl.storage import ObjectStore
from retail_etl.warehouse import Warehouse
from retail_etl.warehouse.schema import lake_object


def engine_out(work_dir: Path) -> Path:
    """Where the engine writes the batch's files (reading ahead, then transform)."""
    return work_dir / "out"


@dataclass(frozen=True)
class Transformed:
    manifest: Manifest | None  # None when no file of the batch is left
    set_aside: Mapping[int, str]  # ledger id -> why the engine left it out
    # what the engine counted of files the quality gate left out: rows, and rows per rule
    gated_counts: Mapping[int, FileCounts] = field(default_factory=dict)
    gated_rules: Mapping[int, Mapping[str, int]] = field(default_factory=dict)


def transform(
    settings: Settings,
    engine_name: str,
    store: ObjectStore,
    warehouse: Warehouse,
    triaged: Triage,
    run_id: int,
    work_dir: Path,
    dims: Dimensions,
    limits: RowLimits | None = None,
    read_ahead: Engine | None = None,
) -> Transformed:
    """dims: the warehouse's dimensions (engines.dimensions); read_ahead: an engine that has
    read some of the batch's files into engine_out(work_dir) with these dims, limits and run_id
    (run/read_ahead.py), closed here."""
    limits = limits or RowLimits.of(settings.rules, date.today())
    try:
        empty = dims.empty()
        if empty:  # every row would be rejected as unknown: not the files' fault
            raise WarehouseError(
                f"warehouse {warehouse.display_url}: the {', '.join(empty)} table"
                f"{'s are' if len(empty) > 1 else ' is'} empty, so every sales row would be "
                "rejected as unknown; they are loaded by the systems that own them (`retail-etl "
                "init --demo` loads sample rows). No file was processed: the next run does them"
            )
        corrections = triaged.corrections
        retired, left_out = fetch_retired(store, warehouse, corrections, work_dir / "retired")
    except BaseException:
        if read_ahead is not None:
            read_ahead.close()
        raise
    out, probe_dir = engine_out(work_dir), work_dir / "probe"

    def attempt(files: list[BatchFile], folder: Path, replaced: Sequence[Path] = ()) -> Manifest:
        nonlocal read_ahead  # the first attempt's engine, when one read ahead into out
        engine, read_ahead = read_ahead or open_engine(settings.engine, engine_name), None
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
            return _gated(manifest, left_out, triaged.corrections, settings.rules)
        left_out |= unstorable
        files = [item for item in files if item.ledger_id not in unstorable]
        shutil.rmtree(out, ignore_errors=True)
    return Transformed(None, left_out)


def _gated(
    manifest: Manifest,
    left_out: dict[int, str],
    corrections: Mapping[int, int],
    rules: RulesSettings,
) -> Transformed:
    """The quality gate ([rules] max_rejected_share): files with a larger share of rejected
    rows leave the batch whole; the manifest goes on without them."""
    threshold = rules.max_rejected_share
    gated = {} if threshold is None else rejected_share_problems(manifest, threshold)
    if not gated:
        return Transformed(manifest, left_out)
    kept = [i for i in manifest.counts if i not in gated]
    return Transformed(
        manifest.of_files(kept, [corrections[i] for i in kept if i in corrections])
        if kept
        else None,
        left_out | gated,
        {i: manifest.counts[i] for i in gated},
        {i: manifest.rules.get(i, {}) for i in gated},
    )


def rejected_share_problems(manifest: Manifest, threshold: float) -> dict[int, str]:
    """Files whose share of rejected rows is above threshold, each with a message naming the
    share, the threshold and its three most frequent rules."""
    problems = {}
    for ledger_id, counts in manifest.counts.items():
        if not counts.rows_read or counts.rows_rejected / counts.rows_read <= threshold:
            continue
        share = counts.rows_rejected / counts.rows_read
        frequent = sorted(manifest.rules.get(ledger_id, {}).items(), key=lambda r: (-r[1], r[0]))
        problems[ledger_id] = (
            f"rejected share above rules.max_rejected_share: {share:.2%} of its rows "
            f"({counts.rows_rejected} of {counts.rows_read}) were rejected, more than "
            f"{threshold:.2%}; most frequent: "
            + ", ".join(f"{rule} ({n})" for rule, n in frequent[:3])
        )
    return problems


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
                f"a mart total would overflow: its rows for {key} sum to more than "
                f"{MAX_STORABLE_AMOUNT} "
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
