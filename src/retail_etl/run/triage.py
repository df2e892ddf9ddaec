"""Stage 3, triage: decide each fetched file's fate at file level, in one transaction. Unusable
files are quarantined, content already processed is a duplicate, a new version of a processed
file name is a correction; the rest is the batch the engine gets. A copy of a file in the
same batch waits for that file's outcome (settle_copies): it is a duplicate of a file that
loads, and shares the fate of one that is set aside."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from sqlalchemy import Connection

from retail_etl.config import StorageSettings
from retail_etl.engines import BatchFile
from retail_etl.run import ledger
from retail_etl.run.fetch import Fetched
from retail_etl.run.keys import archive_key
from retail_etl.run.ledger import LedgerRow
from retail_etl.run.summary import FileOutcome
from retail_etl.warehouse import Warehouse

VANISHED = "object vanished from landing before it was processed"


@dataclass(frozen=True)
class Copy:
    """A file with the same content as a file of the batch (its original)."""

    row: LedgerRow
    original: LedgerRow
    checksum: str
    size: int


@dataclass(frozen=True)
class Triage:
    batch: tuple[BatchFile, ...]
    rows: Mapping[int, LedgerRow]  # the batch's ledger rows
    checksums: Mapping[int, str]  # of the batch's files
    corrections: Mapping[int, int]  # a batch file's ledger id -> the id of the file it replaces
    settled: tuple[LedgerRow, ...]  # quarantined or duplicate: only their moves are left
    outcomes: tuple[FileOutcome, ...]  # of the files settled or dropped here
    copies: tuple[Copy, ...] = ()  # still registered: settle_copies decides them


@dataclass(frozen=True)
class Verdict:
    """A fetched file that does not go on: quarantined (E), duplicate (D) or vanished (None,
    dropped from the ledger as E at once)."""

    row: LedgerRow
    status: str | None
    dest: str
    message: str
    checksum: str | None = None
    size: int | None = None


def triage(warehouse: Warehouse, fetched: Fetched, storage: StorageSettings) -> Triage:
    """Each file's fate, recorded in the ledger in one transaction."""
    with warehouse.begin() as conn:
        warehouse.fence(conn)
        judged = judge(conn, fetched, storage)
        settled = _record(conn, judged.verdicts)
    return replace(judged.triage, settled=settled)


@dataclass(frozen=True)
class SettledCopies:
    settled: tuple[LedgerRow, ...]
    outcomes: tuple[FileOutcome, ...]


def settle_copies(
    warehouse: Warehouse,
    triaged: Triage,
    storage: StorageSettings,
    set_aside: Mapping[int, str],
) -> SettledCopies:
    """Record the fate of the batch's copies once the batch is committed; set_aside: ledger
    id -> why, for the batch files that were set aside. A run that dies before this leaves
    the copies registered, and the next run judges them against the ledger as usual."""
    verdicts = copy_verdicts(triaged, storage, set_aside)
    if not verdicts:
        return SettledCopies((), ())
    with warehouse.begin() as conn:
        warehouse.fence(conn)
        settled = _record(conn, verdicts)
    return SettledCopies(settled, outcomes_of(verdicts))


def copy_verdicts(
    triaged: Triage, storage: StorageSettings, set_aside: Mapping[int, str]
) -> tuple[Verdict, ...]:
    """A copy of a file that loaded is its duplicate; a copy of one that was set aside is
    quarantined for the same reason (it has the same content)."""
    verdicts = []
    for copy in triaged.copies:
        original = f"{copy.original.file_name} (file id {copy.original.id})"
        problem = set_aside.get(copy.original.id)
        if problem is None:
            dest = archive_key(storage.archive_prefix, copy.row)
            verdict = Verdict(copy.row, ledger.DUPLICATE, dest, f"duplicate of {original}")
        else:
            dest = archive_key(storage.error_prefix, copy.row)
            message = f"same content as {original}, which was set aside: {problem}"
            verdict = Verdict(copy.row, ledger.QUARANTINED, dest, message)
        verdicts.append(replace(verdict, checksum=copy.checksum, size=copy.size))
    return tuple(verdicts)


def _record(conn: Connection, verdicts: Sequence[Verdict]) -> tuple[LedgerRow, ...]:
    settled = []
    for verdict in verdicts:
        if verdict.status is None:
            ledger.drop(conn, verdict.row, verdict.message)
            continue
        settled.append(
            ledger.settle(
                conn,
                verdict.row,
                verdict.status,
                verdict.dest,
                verdict.message,
                checksum=verdict.checksum,
                size=verdict.size,
            )
        )
    return tuple(settled)


def outcomes_of(verdicts: Sequence[Verdict]) -> tuple[FileOutcome, ...]:
    return tuple(
        FileOutcome(v.row.id, v.row.file_name, v.status or ledger.QUARANTINED, message=v.message)
        for v in verdicts
    )


@dataclass(frozen=True)
class Judged:
    triage: Triage  # without settled rows: nothing is recorded yet
    verdicts: tuple[Verdict, ...]


def judge(conn: Connection, fetched: Fetched, storage: StorageSettings) -> Judged:
    """Each fetched file's fate, decided from the ledger as it stands; nothing is written."""
    batch: list[BatchFile] = []
    rows: dict[int, LedgerRow] = {}
    checksums: dict[int, str] = {}
    corrections: dict[int, int] = {}
    verdicts: list[Verdict] = []
    copies: list[Copy] = []
    usable = [f.check.checksum for f in fetched.files if f.check is not None and f.check.ok]
    known = ledger.processed_by_checksum(conn, sorted(set(usable)))
    current = ledger.processed_by_name(conn, [f.row.file_name for f in fetched.files])

    def corrects(row: LedgerRow) -> bool:
        previous = current.get(row.file_name)
        return previous is not None and previous[0] != row.id

    # Of the night's files with the same new content, the one that goes on: a correction
    # before a new name (else the file it corrects would stay counted beside it), then the
    # first. The others are its copies.
    goes_on: dict[str, LedgerRow] = {}
    for item in fetched.files:
        if item.problem is None and item.local_path is not None and item.check is not None:
            content = item.check.checksum
            if item.check.ok and content not in known:
                first = goes_on.get(content)
                if first is None or (corrects(item.row) and not corrects(first)):
                    goes_on[content] = item.row
    for item in fetched.files:
        row, check = item.row, item.check
        if item.problem is None and (check is None or item.local_path is None):
            verdicts.append(Verdict(row, None, "", VANISHED))
            continue
        if item.problem is not None or check is None or not check.ok:
            outcome = ledger.QUARANTINED
            dest = archive_key(storage.error_prefix, row)
            message = item.problem or (check.problem if check else None) or ""
        elif check.checksum in known:
            original_id, original_name = known[check.checksum]
            outcome, dest = ledger.DUPLICATE, archive_key(storage.archive_prefix, row)
            message = f"duplicate of {original_name} (file id {original_id})"
        elif goes_on[check.checksum].id != row.id:
            copies.append(Copy(row, goes_on[check.checksum], check.checksum, check.size))
            continue
        else:
            if corrects(row):
                corrections[row.id] = current[row.file_name][0]
            checksums[row.id] = check.checksum
            rows[row.id] = row
            batch_file = item.batch_file
            assert batch_file is not None  # downloaded, checked and ok
            batch.append(batch_file)
            continue
        checksum, size = (check.checksum, check.size) if check else (None, None)
        verdicts.append(Verdict(row, outcome, dest, message, checksum, size))
    triaged = Triage(
        tuple(batch), rows, checksums, corrections, (), outcomes_of(verdicts), tuple(copies)
    )
    return Judged(triaged, tuple(verdicts))
