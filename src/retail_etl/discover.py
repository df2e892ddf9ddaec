"""Stage 1-2: find what landed and register it in the ledger before any work starts.

An object whose name the ledger cannot hold (not UTF-8, longer than its column) is registered
under a name it can hold (ledger.shown_name) with its outcome decided at once: quarantined,
moved to the error prefix like any other set-aside file. The next run recognises it by that
name, so a run that dies before the move finishes it rather than registering it again."""

from __future__ import annotations

from dataclasses import dataclass, replace

from retail_etl import archive, ledger
from retail_etl.ledger import LedgerRow
from retail_etl.storage import ObjectStore
from retail_etl.warehouse import Warehouse


@dataclass(frozen=True)
class Discovery:
    resumed: tuple[LedgerRow, ...]  # left in A by an earlier run
    new: tuple[LedgerRow, ...]  # registered by this run

    @property
    def work(self) -> tuple[LedgerRow, ...]:
        return self.resumed + self.new


def discover(
    store: ObjectStore,
    warehouse: Warehouse,
    landing_prefix: str,
    error_prefix: str,
    run_id: int,
) -> Discovery:
    active = ledger.active_rows(warehouse)
    landed = [
        (info.key[len(landing_prefix) :], info.size)
        for info in store.list(landing_prefix)
        if not info.key.endswith("/")
    ]
    # the landing key of every object the ledger knows under another name
    keys = {ledger.shown_name(name): name for name, _ in landed if ledger.name_problem(name)}
    resumed = [replace(row, key=keys.get(row.file_name)) for row in active]
    claimed = {row.file_name for row in resumed}
    usable = [(n, s) for n, s in landed if n not in claimed and not ledger.name_problem(n)]
    odd = [
        (n, s) for n, s in landed if ledger.name_problem(n) and ledger.shown_name(n) not in claimed
    ]
    location = f"{store.url.rstrip('/')}/{landing_prefix}"
    with warehouse.begin() as conn:
        warehouse.fence(conn)
        ledger.touch(conn, [row.id for row in resumed], run_id)
        new = ledger.register(conn, run_id, location, usable)
        for name, size in odd:
            shown = ledger.shown_name(name)
            dest = archive.archive_key(error_prefix, _registration(shown, run_id))
            (row,) = ledger.register(
                conn,
                run_id,
                location,
                [(shown, size)],
                pending_status=ledger.QUARANTINED,
                dest_key=dest,
                message=f"quarantined by name: {ledger.name_problem(name)}",
            )
            new.append(replace(row, key=name))
    return Discovery(tuple(resumed), tuple(new))


def _registration(file_name: str, run_id: int) -> LedgerRow:
    """Enough of a ledger row to derive its archive key before it is inserted."""
    return LedgerRow(0, file_name, ledger.ACTIVE, run_id, None, None, None, None)
