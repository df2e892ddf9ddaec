"""The file ledger (product_staging_table) as a state machine: the only module that changes a
file's status.

A file is registered before any work on its object. Its outcome is first committed as a
pending status together with where its object goes (dest_key); the object is then moved and
the status flipped. A run that dies anywhere leaves files in A: a registered one is processed
again from the start (nothing of it was committed), a settled or committed one only needs its
move and flip. A run first finishes what is pending, then starts new work.

| state      | status | pending | reached by                         | next                     |
|------------|--------|---------|------------------------------------|--------------------------|
| registered | A      | -       | register                           | settle, commit, drop     |
| settled    | A      | E or D  | settle (quarantined, duplicate)    | finish                   |
| committed  | A      | I       | commit (in the marts' transaction) | finish                   |
| finished   | I/E/D  | -       | finish; drop (vanished: E at once) | supersede (I only)       |

Between registered and settled or committed a file goes through states a run keeps in memory
only: checked (downloaded and validated: fetch, triage), batched (given to the engine) and
published (its lake objects recorded in etl_lake_object and uploaded); a run that dies there
returns the file to registered, and the lake index lets the next run rewrite or remove what
was uploaded. A correction supersedes the file it replaces (committed or finished I, not yet
superseded) in the transaction that commits the correction. Any other transition raises
LedgerError; so does one on a row another run changed meanwhile.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, or_, select, update

from retail_etl.errors import LedgerError
from retail_etl.warehouse import Warehouse
from retail_etl.warehouse.schema import product_staging_table as t

ACTIVE, DONE, QUARANTINED, DUPLICATE = "A", "I", "E", "D"
NAME_LENGTH = 1024  # product_staging_table.file_name


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
    """Every file a run has not finished: registered, settled or committed."""
    with warehouse.begin() as conn:
        records = conn.execute(select(t).where(t.c.status == ACTIVE).order_by(t.c.id)).fetchall()
    return [_row(r) for r in records]


# --- transitions ----------------------------------------------------------------------------
def _transition(
    conn: Connection, ledger_id: int, name: str, allowed: ColumnElement[bool], **values: Any
) -> None:
    """UPDATE the row if it is in a state the transition starts from, else LedgerError."""
    changed = conn.execute(
        update(t).where(t.c.id == ledger_id, allowed).values(updated_date=_now(), **values)
    ).rowcount
    if changed != 1:
        current = conn.execute(
            select(t.c.status, t.c.pending_status, t.c.superseded_by).where(t.c.id == ledger_id)
        ).first()
        raise LedgerError(f"ledger: cannot {name} file id {ledger_id} in state {current}")


REGISTERED = and_(t.c.status == ACTIVE, t.c.pending_status.is_(None))
PENDING = and_(t.c.status == ACTIVE, t.c.pending_status.is_not(None))


def register(
    conn: Connection, run_id: int, location: str, objects: Iterable[tuple[str, int]]
) -> list[LedgerRow]:
    """-> registered: an A row per (file_name, size), in the order given."""
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
            )
        )
        new_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        rows.append(LedgerRow(new_id, file_name, ACTIVE, run_id, size, None, None, None))
    return rows


def touch(conn: Connection, ids: list[int], run_id: int) -> None:
    """Record that this run resumes these files (not a transition)."""
    if ids:
        conn.execute(
            update(t).where(t.c.id.in_(ids)).values(last_run_id=run_id, updated_date=_now())
        )


def settle(
    conn: Connection,
    row: LedgerRow,
    outcome: str,
    dest_key: str,
    message: str,
    checksum: str | None = None,
    size: int | None = None,
) -> LedgerRow:
    """registered -> settled: quarantined (E) or duplicate (D), its object bound for dest_key."""
    if outcome not in (QUARANTINED, DUPLICATE):
        raise LedgerError(f"ledger: settle to {outcome!r}: only E or D")
    facts = {"checksum": checksum, "size": size}
    _transition(
        conn,
        row.id,
        f"settle ({outcome})",
        REGISTERED,
        pending_status=outcome,
        dest_key=dest_key,
        message=message,
        **{name: value for name, value in facts.items() if value is not None},
    )
    return _pending(row, outcome, dest_key)


def commit(
    conn: Connection,
    row: LedgerRow,
    dest_key: str,
    checksum: str,
    counts: tuple[int, int, int],
    affected_months: Iterable[str],
    message: str | None = None,
) -> LedgerRow:
    """registered -> committed (pending I), in the transaction that puts its rows in the marts:
    counts are (read, valid, rejected)."""
    rows_read, rows_valid, rows_rejected = counts
    _transition(
        conn,
        row.id,
        "commit",
        REGISTERED,
        pending_status=DONE,
        dest_key=dest_key,
        checksum=checksum,
        rows_read=rows_read,
        rows_valid=rows_valid,
        rows_rejected=rows_rejected,
        affected_months=",".join(sorted(affected_months)),
        message=message,
    )
    return _pending(row, DONE, dest_key)


def drop(conn: Connection, row: LedgerRow, message: str) -> None:
    """registered -> finished E at once: its object vanished, so nothing is left to move."""
    _transition(conn, row.id, "drop", REGISTERED, status=QUARANTINED, message=message)


def finish(conn: Connection, row: LedgerRow, note: str | None = None) -> None:
    """settled or committed -> finished: its object has been moved to dest_key, or note says
    why it was not (added to the row's message)."""
    message = {}
    if note:
        earlier = conn.execute(select(t.c.message).where(t.c.id == row.id)).scalar()
        message["message"] = "; ".join(filter(None, [earlier, note]))
    _transition(
        conn,
        row.id,
        "finish",
        and_(PENDING, t.c.pending_status == row.pending_status),
        status=row.pending_status,
        pending_status=None,
        **message,
    )


def supersede(conn: Connection, old_id: int, new_id: int) -> None:
    """A correction replaces a processed file: old (committed or finished I) is superseded."""
    _transition(conn, old_id, "supersede", _counts_as_processed(), superseded_by=new_id)


def _pending(row: LedgerRow, status: str, dest_key: str) -> LedgerRow:
    return replace(row, pending_status=status, dest_key=dest_key)


# --- reading --------------------------------------------------------------------------------
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


def affected_months(conn: Connection, ids: list[int]) -> set[str]:
    months: set[str] = set()
    if ids:
        for (value,) in conn.execute(select(t.c.affected_months).where(t.c.id.in_(ids))):
            months.update(m for m in (value or "").split(",") if m)
    return months


def registered_names(conn: Connection, run_id: int) -> dict[int, str]:
    """Every file the run registered: ledger id -> its name below landing."""
    rows = conn.execute(select(t.c.id, t.c.file_name).where(t.c.run_id == run_id))
    return {ledger_id: name for ledger_id, name in rows}
