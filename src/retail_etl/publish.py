"""Stage 7: publish a batch. Lake objects and rejected rows go to the bucket first (under
deterministic keys, so a resumed run rewrites rather than adds); then one warehouse
transaction applies the marts and records every file's outcome; then the mart snapshots."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import delete, select

from retail_etl import coupons, daily, ledger, marts
from retail_etl.config import MAX_STORABLE_AMOUNT, RulesSettings
from retail_etl.engines import MANDATORY_COLUMNS, BatchFile, EngineResult
from retail_etl.storage import ObjectStore, fit_key
from retail_etl.warehouse import Warehouse, select_arrow_batches
from retail_etl.warehouse.schema import customers_data_mart, lake_object, sales_team_data_mart

SNAPSHOT_BATCH_ROWS = 100_000  # mart rows read, and written as a row group, at a time
_PARTITION = re.compile(r"kind=valid/sales_month=([^/]+)/store_id=([^/]+)/_ledger=(\d+)/")


def plan_lake_objects(rows_dir: Path, lake_prefix: str) -> dict[int, list[tuple[Path, str]]]:
    """Local Parquet files of valid rows -> lake keys, per ledger id."""
    planned: dict[int, list[tuple[Path, str]]] = {}
    seen: dict[tuple[int, str, str], int] = {}
    for path in sorted(rows_dir.glob("kind=valid/*/*/*/*.parquet")):
        match = _PARTITION.search(path.relative_to(rows_dir).as_posix())
        if not match:
            continue
        month, store_id, ledger_id = match.group(1), match.group(2), int(match.group(3))
        index = seen.get((ledger_id, month, store_id), 0)
        seen[(ledger_id, month, store_id)] = index + 1
        key = (
            f"{lake_prefix}sales/sales_month={month}/store_id={store_id}/"
            f"ledger-{ledger_id}-{index}.parquet"
        )
        planned.setdefault(ledger_id, []).append((path, key))
    return planned


def upload_lake(
    store: ObjectStore,
    warehouse: Warehouse,
    planned: dict[int, list[tuple[Path, str]]],
    ledger_ids: list[int],
    concurrency: int,
) -> int:
    """Record the keys each file will own, drop keys an earlier attempt wrote but this one
    does not, then upload (each object appears atomically)."""
    wanted = {lid: {key for _p, key in planned.get(lid, [])} for lid in ledger_ids}
    with warehouse.begin() as conn:
        earlier = conn.execute(
            select(lake_object.c.ledger_id, lake_object.c.object_key).where(
                lake_object.c.ledger_id.in_(ledger_ids)
            )
        ).fetchall()
    stale = [key for lid, key in earlier if key not in wanted.get(lid, set())]
    for key in stale:
        store.delete(key)
    with warehouse.begin() as conn:
        warehouse.fence(conn)
        conn.execute(delete(lake_object).where(lake_object.c.ledger_id.in_(ledger_ids)))
        warehouse.insert_many(
            conn,
            lake_object,
            [
                {"ledger_id": lid, "object_key": key}
                for lid, keys in wanted.items()
                for key in sorted(keys)
            ],
        )
    uploads = [(path, key) for files in planned.values() for path, key in files]
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="upload") as pool:
        list(pool.map(lambda item: store.upload(*item), uploads))
    return len(uploads)


def rejected_key(error_prefix: str, run_id: int, file_name: str) -> str:
    """Where a file's rejected rows go (SPEC section 4): its name below landing, a `.csv`
    name kept as it is, `.csv.gz` becoming `.csv`, `.csv` appended to anything else; the
    key shortened when it would pass the store's limit."""
    lower = file_name.lower()
    if lower.endswith(".csv.gz"):
        file_name = file_name[: -len(".gz")]
    elif not lower.endswith(".csv"):
        file_name += ".csv"
    return fit_key(f"{error_prefix}rejected/{run_id}/", file_name)


def write_rejected(
    store: ObjectStore,
    result: EngineResult,
    batch: list[BatchFile],
    registered_run: dict[int, int],
    error_prefix: str,
    work_dir: Path,
) -> int:
    """Per file with rejected rows: its original columns plus reject_reason, as CSV."""
    written = 0
    malformed_by_file: dict[int, list[str]] = {}
    for row in result.malformed.to_pylist():
        malformed_by_file.setdefault(int(row["ledger_id"]), []).append(row["reject_reason"])
    for item in batch:
        parts = sorted(result.rows_dir.glob(f"kind=rejected/_ledger={item.ledger_id}/*.parquet"))
        malformed = malformed_by_file.get(item.ledger_id, [])
        if not parts and not malformed:
            continue
        key = rejected_key(error_prefix, registered_run[item.ledger_id], item.file_name)
        if store.exists(key):
            continue  # written by an interrupted attempt of this same file: never overwrite
        local = work_dir / f"rejected-{item.ledger_id}.csv"
        with open(local, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow([*item.header, "reject_reason"])
            for part in parts:
                for rb in pq.ParquetFile(part).iter_batches(batch_size=65_536):
                    for row in rb.to_pylist():
                        writer.writerow(_original_values(item, row) + [row["reject_reason"]])
            for reason in malformed:
                writer.writerow([""] * len(item.header) + [reason])
        store.upload(local, key)
        written += 1
    return written


def _original_values(item: BatchFile, row: dict[str, Any]) -> list[str | None]:
    extras = iter(row.get("extra_values") or [])
    values = []
    for name in item.columns:
        values.append(row[f"raw_{name}"] if name in MANDATORY_COLUMNS else next(extras, None))
    return values


def unstorable_files(result: EngineResult) -> dict[int, str]:
    """Files whose rows sum, for one mart row, to more than DECIMAL(18, 2) holds (the mart
    SQL gives NULL there), each with the first such row named."""
    found: dict[int, str] = {}
    for contributions, what in (
        (result.customer_contributions, ("customer_id", "sales_date_month")),
        (result.sales_team_contributions, ("store_id", "sales_person_id", "sales_month")),
    ):
        overflowing = contributions.filter(pc.is_null(contributions["total_sales"]))
        for row in overflowing.select(["ledger_id", *what]).to_pylist():
            key = ", ".join(f"{name} {row[name]}" for name in what)
            found.setdefault(
                int(row["ledger_id"]),
                f"its rows for {key} sum to more than {MAX_STORABLE_AMOUNT} "
                "(the largest total the marts hold)",
            )
    return found


def _of_files(table: pa.Table, ledger_ids: set[int]) -> pa.Table:
    return table.filter(pc.is_in(table["ledger_id"], pa.array(sorted(ledger_ids), pa.int64())))


def commit_batch(
    warehouse: Warehouse,
    result: EngineResult,
    per_day: daily.DailyAggregates,
    files: list[BatchFile],
    checksums: dict[int, str],
    corrections: dict[int, int],
    archive_keys: dict[int, str],
    rules: RulesSettings,
) -> marts.MartChanges:
    """One transaction for these files of the engine's result: marts (with the per-day sums
    and the coupons derived from them) updated and every file marked done (pending its move
    to the archive). Before it commits nothing of them is in the marts; after it, all of it
    is. Raises WarehouseError or UnstorableError (a mart total would overflow)."""
    ids = {item.ledger_id for item in files}
    customer_contributions = _of_files(result.customer_contributions, ids)
    sales_team_contributions = _of_files(result.sales_team_contributions, ids)
    months_by_file: dict[int, set[str]] = {item.ledger_id: set() for item in files}
    # distinct pairs first: one row per customer would be millions with a large customer base
    pairs = customer_contributions.group_by(["ledger_id", "sales_date_month"]).aggregate([])
    for ledger_id, month in zip(
        pairs["ledger_id"].to_pylist(), pairs["sales_date_month"].to_pylist(), strict=True
    ):
        months_by_file[int(ledger_id)].add(month.strftime("%Y-%m"))
    replaced = {new: old for new, old in corrections.items() if new in ids}
    with warehouse.begin() as conn:
        warehouse.fence(conn)
        superseded = list(replaced.values())
        old_months = ledger.affected_months(conn, superseded)
        changes = marts.apply(
            warehouse,
            conn,
            customer_contributions,
            sales_team_contributions,
            superseded,
            rules.incentive_rate,
        )
        daily.apply(warehouse, conn, per_day.of_files(ids), superseded, sorted(ids))
        coupons.refresh(warehouse, conn, changes, rules, rows_removed=bool(superseded))
        for new_id, old_id in replaced.items():
            ledger.supersede(conn, old_id, new_id)
        for item in files:
            counts = result.counts.get(item.ledger_id)
            months = months_by_file[item.ledger_id]
            if item.ledger_id in replaced:
                months |= old_months
            ledger.set_pending(
                conn,
                item.ledger_id,
                ledger.DONE,
                archive_keys[item.ledger_id],
                checksum=checksums[item.ledger_id],
                rows_read=counts.rows_read if counts else 0,
                rows_valid=counts.rows_valid if counts else 0,
                rows_rejected=counts.rows_rejected if counts else 0,
                affected_months=",".join(sorted(months)),
                message=(
                    f"correction of file id {replaced[item.ledger_id]}"
                    if item.ledger_id in replaced
                    else None
                ),
            )
    return marts.MartChanges(
        changes.customer_rows,
        changes.sales_team_rows,
        changes.months | frozenset(old_months),
        changes.customers,
    )


def write_snapshots(
    store: ObjectStore,
    warehouse: Warehouse,
    months: set[str],
    lake_prefix: str,
    advance: Callable[[int], None] = lambda _n: None,
) -> None:
    """Rewrite the mart snapshot of every month this batch changed."""
    from datetime import date

    for month in sorted(months):
        first_day = date.fromisoformat(f"{month}-01")
        targets = (
            (
                customers_data_mart,
                customers_data_mart.c.sales_date_month == first_day,
                f"{lake_prefix}customers_data_mart/sales_date_month={first_day.isoformat()}/data.parquet",
            ),
            (
                sales_team_data_mart,
                sales_team_data_mart.c.sales_month == month,
                f"{lake_prefix}sales_team_data_mart/sales_month={month}/data.parquet",
            ),
        )
        for table, where, key in targets:
            buffer = io.BytesIO()
            writer: pq.ParquetWriter | None = None
            with warehouse.begin() as conn:
                # a month over a million customers: its rows a batch at a time, one row group
                # each, rather than all of them as Python objects
                statement = select(table).where(where)
                for rows in select_arrow_batches(conn, statement, SNAPSHOT_BATCH_ROWS):
                    writer = writer or pq.ParquetWriter(buffer, rows.schema)
                    writer.write_table(rows)
            if writer is None:
                store.delete(key)
                continue
            writer.close()
            store.put_bytes(key, buffer.getvalue())
        advance(1)
