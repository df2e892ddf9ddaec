"""Stage 6, commit: one warehouse transaction puts a batch's rows in the marts (with the daily
sums and the coupons derived from them), supersedes the files its corrections replace and
marks every file committed. Before it commits nothing of the batch is in the marts; after it,
all of it is.

When the transaction fails because of the values (a total that would overflow, a value too
long), the batch is committed in parts found by bisection (isolate.py) and the files at fault
are set aside: batching does not change the marts, so committing a batch in parts is correct.

Each transaction does its work while the batch's uploads run (publish.py) and waits for them
just before it commits: an upload that fails rolls the marts back and stops the run, and is
never taken for a fault of the files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from retail_etl.config import RulesSettings, Settings
from retail_etl.engines import BatchFile, FileCounts, Manifest
from retail_etl.marts import coupons, daily, merge
from retail_etl.run import isolate, ledger
from retail_etl.run.keys import archive_key
from retail_etl.run.ledger import LedgerRow
from retail_etl.run.summary import FileOutcome
from retail_etl.run.triage import Triage
from retail_etl.warehouse import Warehouse


@dataclass(frozen=True)
class Committed:
    committed: tuple[LedgerRow, ...]  # pending I: only their moves are left
    outcomes: tuple[FileOutcome, ...]  # of the committed files
    set_aside: Mapping[int, str]  # ledger id -> why it cannot be stored
    months: frozenset[str]  # 'YYYY-MM' whose marts changed
    mart_rows: Mapping[str, Mapping[str, int]]  # rows changed per 'YYYY-MM' and mart


def commit(
    warehouse: Warehouse,
    manifest: Manifest,
    batch: tuple[BatchFile, ...],
    triaged: Triage,
    settings: Settings,
    before_commit: Callable[[], object] = lambda: None,
) -> Committed:
    """before_commit: called in each transaction just before it commits; what it raises is
    the run's error, whatever the batch's."""
    committed: list[LedgerRow] = []
    months: set[str] = set()
    mart_rows: dict[str, dict[str, int]] = {}
    corrections = triaged.corrections

    def attempt(files: list[BatchFile]) -> None:
        part = _commit_files(
            warehouse,
            manifest,
            files,
            triaged,
            settings.storage.archive_prefix,
            settings.rules,
            before_commit,
        )
        committed.extend(part.committed)
        months.update(part.months)
        for month, marts in part.mart_rows.items():
            for mart, n in marts.items():
                mart_rows.setdefault(month, {}).setdefault(mart, 0)
                mart_rows[month][mart] += n

    try:
        attempt(list(batch))
    except Exception as exc:
        before_commit()  # what the uploads raised stops the run before any bisection
        found = isolate.bisect(
            batch, attempt, "the warehouse commit", lambda item: item.file_name, failed_with=exc
        )
    else:
        found = isolate.Isolated(batch, ())
    outcomes = [
        done_outcome(row.id, row.file_name, manifest, corrections)
        for row in sorted(committed, key=lambda r: r.id)
    ]
    return Committed(
        tuple(sorted(committed, key=lambda r: r.id)),
        tuple(outcomes),
        {
            item.ledger_id: f"cannot be stored in the warehouse: {why}"
            for item, why in found.set_aside
        },
        frozenset(months),
        dict(sorted(mart_rows.items())),
    )


def done_outcome(
    ledger_id: int, file_name: str, manifest: Manifest, corrections: Mapping[int, int]
) -> FileOutcome:
    """A committed file's outcome: its counts, rules broken, and the file it corrects."""
    counts = manifest.counts.get(ledger_id, FileCounts())
    replaced = corrections.get(ledger_id)
    return FileOutcome(
        ledger_id,
        file_name,
        ledger.DONE,
        counts.rows_read,
        counts.rows_valid,
        counts.rows_rejected,
        f"correction of file id {replaced}" if replaced else None,
        dict(manifest.rules.get(ledger_id, {})),
    )


@dataclass(frozen=True)
class _Part:
    committed: tuple[LedgerRow, ...]
    months: frozenset[str]
    mart_rows: Mapping[str, Mapping[str, int]]


def _commit_files(
    warehouse: Warehouse,
    manifest: Manifest,
    files: list[BatchFile],
    triaged: Triage,
    archive_prefix: str,
    rules: RulesSettings,
    before_commit: Callable[[], object],
) -> _Part:
    """One transaction for these files of the manifest. Raises WarehouseError, or
    UnstorableError when a mart total would overflow."""
    ids = [item.ledger_id for item in files]
    replaced = {new: old for new, old in triaged.corrections.items() if new in ids}
    part = manifest.of_files(ids, retired=replaced.values())
    # summed per mart row before the warehouse sees them: one row per row that changes
    customer_deltas, sales_team_deltas = merge.manifest_deltas(part)
    months_by_file: dict[int, set[str]] = {i: set() for i in ids}
    # distinct pairs first: one row per customer would be millions with a large customer base
    pairs = part.customer_contributions.group_by(["ledger_id", "sales_date_month"]).aggregate([])
    for ledger_id, month in zip(
        pairs["ledger_id"].to_pylist(), pairs["sales_date_month"].to_pylist(), strict=True
    ):
        months_by_file[int(ledger_id)].add(month.strftime("%Y-%m"))
    rows, checksums = triaged.rows, triaged.checksums
    done = []
    with (
        coupons.spends_before_batch(warehouse, customer_deltas, rules) as spends_before,
        warehouse.begin() as conn,
    ):
        warehouse.fence(conn)
        superseded = list(replaced.values())
        old_months = ledger.affected_months(conn, superseded)
        changes = merge.apply(
            warehouse,
            conn,
            customer_deltas,
            sales_team_deltas,
            bool(superseded),
            rules.incentive_rate,
        )
        daily.apply(warehouse, conn, part.daily_sales_person, part.daily_product, superseded, ids)
        coupons.refresh(
            warehouse, conn, changes, rules, rows_removed=bool(superseded), before=spends_before
        )
        for new_id, old_id in replaced.items():
            ledger.supersede(conn, old_id, new_id)
        for ledger_id in ids:
            counts = part.counts.get(ledger_id, FileCounts())
            months = months_by_file[ledger_id] | (old_months if ledger_id in replaced else set())
            row = rows[ledger_id]
            done.append(
                ledger.commit(
                    conn,
                    row,
                    archive_key(archive_prefix, row),
                    checksums[ledger_id],
                    (counts.rows_read, counts.rows_valid, counts.rows_rejected),
                    months,
                    f"correction of file id {replaced[ledger_id]}"
                    if ledger_id in replaced
                    else None,
                )
            )
        before_commit()
        warehouse.fence(conn)  # again: the wait may have been long, the lock is still ours
    return _Part(
        tuple(done),
        changes.months | frozenset(old_months),
        merge.rows_per_month(customer_deltas, sales_team_deltas),
    )
