"""Stage 1, discover: find what landed and register it in the ledger before any work starts.

An object whose name the ledger cannot hold (not UTF-8, longer than its column) is registered
under a name it can hold (ledger.shown_name) with its outcome decided at once: quarantined,
moved to the error prefix like any other set-aside file. The next run recognises it by that
name, so a run that dies before the move finishes it rather than registering it again."""

from __future__ import annotations

from dataclasses import dataclass, replace

from retail_etl.run import ledger
from retail_etl.run.keys import archive_key
from retail_etl.run.ledger import LedgerRow
from retail_etl.run.summary import FileOutcome
from retail_etl.storage import ObjectStore
from retail_etl.warehouse import Warehouse


@dataclass(frozen=True)
class Discovery:
    resumed: tuple[LedgerRow, ...]  # left in A by an earlier run
    new: tuple[LedgerRow, ...]  # registered by this run
    quarantined: tuple[FileOutcome, ...]  # new, set aside by name at registration

    @property
    def work(self) -> tuple[LedgerRow, ...]:
        return self.resumed + self.new

    @property
    def pending(self) -> tuple[LedgerRow, ...]:
        """Files whose outcome is committed: only their move and flip are left."""
        return tuple(row for row in self.work if row.pending_status is not None)

    @property
    def todo(self) -> tuple[LedgerRow, ...]:
        """Files to process from the start."""
        return tuple(row for row in self.work if row.pending_status is None)


@dataclass(frozen=True)
class Survey:
    """What is in landing, against the ledger; nothing recorded yet."""

    resumed: tuple[LedgerRow, ...]  # left in A by an earlier run
    usable: tuple[tuple[str, int], ...]  # new objects: name below landing, size
    odd: tuple[tuple[str, int], ...]  # new objects whose name the ledger cannot hold
    location: str  # the landing prefix's URL


def survey(store: ObjectStore, warehouse: Warehouse, landing_prefix: str) -> Survey:
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
    return Survey(tuple(resumed), tuple(usable), tuple(odd), location)


def name_problem_message(name: str) -> str:
    return f"quarantined by name: {ledger.name_problem(name)}"


def discover(
    store: ObjectStore,
    warehouse: Warehouse,
    landing_prefix: str,
    error_prefix: str,
    run_id: int,
) -> Discovery:
    found = survey(store, warehouse, landing_prefix)
    quarantined = []
    with warehouse.begin() as conn:
        warehouse.fence(conn)
        ledger.touch(conn, [row.id for row in found.resumed], run_id)
        new = ledger.register(conn, run_id, found.location, list(found.usable))
        for name, size in found.odd:
            (row,) = ledger.register(
                conn, run_id, found.location, [(ledger.shown_name(name), size)]
            )
            message = name_problem_message(name)
            dest = archive_key(error_prefix, row)
            new.append(
                replace(ledger.settle(conn, row, ledger.QUARANTINED, dest, message), key=name)
            )
            quarantined.append(
                FileOutcome(row.id, row.file_name, ledger.QUARANTINED, message=message)
            )
    return Discovery(found.resumed, tuple(new), tuple(quarantined))
