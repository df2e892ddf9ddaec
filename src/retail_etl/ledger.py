"""The file ledger (product_staging_table): one row per landed object, a few statuses.

A row is registered in A before any work on its object. Its outcome (I, E or D) is first
committed as pending_status together with where the object goes (dest_key); the object is
then moved and the status flipped. A run that dies anywhere leaves rows in A that the next
run resumes: without a pending status they are processed again from the start (nothing of
theirs was committed), with one only the move and the flip are left.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, or_, select, update

from retail_etl.warehouse import Warehouse
from retail_etl.warehouse.schema import product_staging_table as t

ACTIVE, DONE, QUARANTINED, DUPLICATE = "A", "I", "E", "D"


@dataclass(frozen=True)
class LedgerRow:
    id: int
    file_name: str
    status: str
    run_id: int
    size: int | None
    checksum: str | None
    pending_status: str | None
    dest_key: str | None
    # the object's key below landing, when the ledger holds another name for it (name_problem)
    key: str | None = None

    @property
    def landing_name(self) -> str:
        return self.key if self.key is not None else self.file_name


NAME_LENGTH = 1024  # product_staging_table.file_name


def name_hash(file_name: str) -> str:
    return hashlib.sha256(file_name.encode("utf-8")).hexdigest()


def name_problem(file_name: str) -> str | None:
    """Why the ledger cannot hold an object's name (below landing), or None when it can."""
    try:
        file_name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8"
    if len(file_name) > NAME_LENGTH:
        return f"its name is {len(file_name)} characters long, the ledger holds {NAME_LENGTH}"
    return None


def shown_name(file_name: str) -> str:
    """A name the ledger can hold for one it cannot: bytes that are not UTF-8 written as
    \\xNN, shortened to fit, with a digest of the whole name so that two names never meet."""
    raw = file_name.encode("utf-8", "surrogateescape")
    text = raw.decode("utf-8", "backslashreplace")
    digest = hashlib.sha256(raw).hexdigest()[:16]
    return f"{text[: NAME_LENGTH - 40]}... (sha256 {digest})"


def _now() -> datetime:
    return datetime.now().replace(microsecond=0)


def _row(record: Any) -> LedgerRow:
    return LedgerRow(
        id=record.id,
        file_name=record.file_name,
        status=record.status,
        run_id=record.run_id,
        size=record.size,
        checksum=record.checksum,
        pending_status=record.pending_status,
        dest_key=record.dest_key,
    )


def active_rows(warehouse: Warehouse) -> list[LedgerRow]:
    with warehouse.begin() as conn:
        records = conn.execute(select(t).where(t.c.status == ACTIVE).order_by(t.c.id)).fetchall()
    return [_row(r) for r in records]


def register(
    conn: Connection,
    run_id: int,
    location: str,
    objects: Iterable[tuple[str, int]],
    **values: Any,
) -> list[LedgerRow]:
    """Insert an A row per (file_name, size); returns them in key order. values: further
    columns for every row (a pending outcome decided at registration)."""
    now = _now()
    rows = []
    for file_name, size in objects:
        result = conn.execute(
            t.insert().values(
                file_name=file_name,
                file_location=f"{location}{file_name}",
                created_date=now,
                updated_date=now,
                status=ACTIVE,
                name_hash=name_hash(file_name),
                size=size,
                run_id=run_id,
                last_run_id=run_id,
                **values,
            )
        )
        new_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        rows.append(
            LedgerRow(
                new_id,
                file_name,
                ACTIVE,
                run_id,
                size,
                None,
                values.get("pending_status"),
                values.get("dest_key"),
            )
        )
    return rows


def touch(conn: Connection, ids: list[int], run_id: int) -> None:
    if ids:
        conn.execute(
            update(t).where(t.c.id.in_(ids)).values(last_run_id=run_id, updated_date=_now())
        )


def set_pending(
    conn: Connection, ledger_id: int, pending_status: str, dest_key: str | None, **values: Any
) -> None:
    conn.execute(
        update(t)
        .where(t.c.id == ledger_id)
        .values(pending_status=pending_status, dest_key=dest_key, updated_date=_now(), **values)
    )


def finish(conn: Connection, ledger_id: int, status: str, message: str | None = None) -> None:
    values = {"status": status, "pending_status": None, "updated_date": _now()}
    if message is not None:
        values["message"] = message
    conn.execute(update(t).where(t.c.id == ledger_id).values(**values))


def _counts_as_processed() -> ColumnElement[bool]:
    """Rows whose content is (or is about to be) in the marts and not replaced since."""
    return and_(
        or_(t.c.status == DONE, and_(t.c.status == ACTIVE, t.c.pending_status == DONE)),
        t.c.superseded_by.is_(None),
    )


def processed_by_checksum(conn: Connection, checksums: list[str]) -> dict[str, tuple[int, str]]:
    """checksum -> (ledger id, file name) of processed content."""
    found: dict[str, tuple[int, str]] = {}
    for start in range(0, len(checksums), 500):
        chunk = checksums[start : start + 500]
        for r in conn.execute(
            select(t.c.id, t.c.file_name, t.c.checksum)
            .where(t.c.checksum.in_(chunk), _counts_as_processed())
            .order_by(t.c.id)
        ):
            found.setdefault(r.checksum, (r.id, r.file_name))
    return found


def processed_by_name(conn: Connection, file_names: list[str]) -> dict[str, tuple[int, str]]:
    """file name -> (ledger id, checksum) of its current processed version."""
    found: dict[str, tuple[int, str]] = {}
    hashes = {name_hash(name): name for name in file_names}
    keys = list(hashes)
    for start in range(0, len(keys), 500):
        for r in conn.execute(
            select(t.c.id, t.c.file_name, t.c.checksum, t.c.name_hash)
            .where(t.c.name_hash.in_(keys[start : start + 500]), _counts_as_processed())
            .order_by(t.c.id)
        ):
            if r.file_name == hashes.get(r.name_hash):
                found[r.file_name] = (r.id, r.checksum)
    return found


def supersede(conn: Connection, old_id: int, new_id: int) -> None:
    conn.execute(
        update(t).where(t.c.id == old_id).values(superseded_by=new_id, updated_date=_now())
    )


def affected_months(conn: Connection, ids: list[int]) -> set[str]:
    months: set[str] = set()
    if ids:
        for (value,) in conn.execute(select(t.c.affected_months).where(t.c.id.in_(ids))):
            months.update(m for m in (value or "").split(",") if m)
    return months
