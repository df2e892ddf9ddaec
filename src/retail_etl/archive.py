"""Stage 8: move each finished object out of landing (archive, or error for quarantined
files), flip its ledger status, and remove lake objects of files that were corrected."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import delete, or_, select

from retail_etl import ledger
from retail_etl.ledger import LedgerRow
from retail_etl.storage import ObjectStore
from retail_etl.warehouse import Warehouse
from retail_etl.warehouse.schema import lake_object, product_staging_table


def archive_key(archive_prefix: str, row: LedgerRow) -> str:
    """Unique per registration, so nothing in the archive is ever overwritten."""
    return f"{archive_prefix}run-{row.run_id}/{row.file_name}"


def finalize(
    store: ObjectStore,
    warehouse: Warehouse,
    landing_prefix: str,
    rows: list[LedgerRow],
    checkpoint: Callable[[str], None] = lambda _s: None,
) -> None:
    """Carry out the committed outcome of each row: move, then flip A -> pending status."""
    for row in rows:
        if row.pending_status is None:
            continue
        if row.dest_key:
            store.move(landing_prefix + row.file_name, row.dest_key)
        with warehouse.begin() as conn:
            warehouse.fence(conn)
            ledger.finish(conn, row.id, row.pending_status)
        checkpoint(f"archived:{row.file_name}")


def remove_superseded_lake_objects(store: ObjectStore, warehouse: Warehouse) -> int:
    """Lake objects whose rows are not (or no longer) in the marts: deleted from the bucket,
    then forgotten. Those of corrected files, and those an interrupted attempt uploaded for a
    file that then ended quarantined or duplicate (it vanished from landing before the retry,
    say): left alone, readers of the lake would count rows the marts do not."""
    staging = product_staging_table
    with warehouse.begin() as conn:
        doomed = conn.execute(
            select(lake_object.c.id, lake_object.c.object_key)
            .join(staging, staging.c.id == lake_object.c.ledger_id)
            .where(
                or_(
                    staging.c.superseded_by.is_not(None),
                    staging.c.status.in_([ledger.QUARANTINED, ledger.DUPLICATE]),
                )
            )
        ).fetchall()
    for _id, key in doomed:
        store.delete(key)
    if doomed:
        with warehouse.begin() as conn:
            conn.execute(delete(lake_object).where(lake_object.c.id.in_([i for i, _k in doomed])))
    return len(doomed)
