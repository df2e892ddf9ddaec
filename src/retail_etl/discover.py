"""Stage 1-2: find what landed and register it in the ledger before any work starts."""

from __future__ import annotations

from dataclasses import dataclass

from retail_etl import ledger
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
    store: ObjectStore, warehouse: Warehouse, landing_prefix: str, run_id: int
) -> Discovery:
    resumed = ledger.active_rows(warehouse)
    claimed = {row.file_name for row in resumed}
    landed = [
        (info.key[len(landing_prefix) :], info.size)
        for info in store.list(landing_prefix)
        if not info.key.endswith("/")
    ]
    with warehouse.begin() as conn:
        warehouse.fence(conn)
        ledger.touch(conn, [row.id for row in resumed], run_id)
        new = ledger.register(
            conn,
            run_id,
            f"{store.url.rstrip('/')}/{landing_prefix}",
            [(name, size) for name, size in landed if name and name not in claimed],
        )
    return Discovery(tuple(resumed), tuple(new))
