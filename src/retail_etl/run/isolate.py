"""Isolation: whatever goes wrong with one file costs that file alone (SPEC section 5).

A stage that works on a batch of files (the engine, the warehouse commit) is tried on the
whole batch; when it fails because of the input, the batch is split in halves and each half
tried again, down to single files, so that the files at fault are found and set aside with
the error that names their problem while every other file goes on. Batching does not change
the marts (SPEC section 5), which is what makes committing a batch in parts correct.

What is never bisected: failures of the infrastructure (the store, the warehouse's
connection, the work folder, the lock, an engine out of memory). They would fail every part
alike; the run stops with their exit code and the next run redoes the work.

An error of a kind no rule foresaw (a defect) is pinned on a file only when other files of
the same batch pass the same stage: if every file fails alone, the fault is not the files',
and the run stops with UnexpectedError instead of quarantining the whole night's sales.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from retail_etl.engines import FileCounts
from retail_etl.errors import (
    EngineError,
    RetailEtlError,
    UnexpectedError,
    UnstorableError,
    WarehouseError,
)
from retail_etl.run import ledger
from retail_etl.run.keys import archive_key
from retail_etl.run.ledger import LedgerRow
from retail_etl.run.summary import FileOutcome
from retail_etl.run.triage import Triage
from retail_etl.warehouse import Warehouse

log = logging.getLogger("retail_etl.run")
T = TypeVar("T")


def is_input_fault(exc: BaseException) -> bool:
    """The file's content is at fault: set the file aside, even when it is alone."""
    if isinstance(exc, UnstorableError):
        return True
    if isinstance(exc, EngineError):
        return exc.input_error
    if isinstance(exc, WarehouseError):
        return exc.data_error
    return False


def is_unforeseen(exc: BaseException) -> bool:
    """A defect rather than an infrastructure failure: any error that is not one of ours."""
    return isinstance(exc, Exception) and not isinstance(exc, RetailEtlError | OSError)


def describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    if is_unforeseen(exc):
        return f"unexpected error ({type(exc).__name__}: {text}); please report it"
    return text or type(exc).__name__


@dataclass(frozen=True)
class Isolated(Generic[T]):
    """The files that passed (in their original order) and those set aside, with why."""

    passed: tuple[T, ...]
    set_aside: tuple[tuple[T, str], ...]


def bisect(
    files: Sequence[T],
    attempt: Callable[[list[T]], object],
    stage: str,
    name: Callable[[T], str],
    failed_with: Exception | None = None,
) -> Isolated[T]:
    """Run attempt over the files, splitting on input faults until the culprits are alone.

    attempt must either take effect for exactly the files it was given or not at all (one
    transaction; a scratch folder). Infrastructure errors propagate at once. failed_with: the
    whole batch was tried already and failed with this error."""
    passed: list[T] = []
    culprits: list[tuple[T, str]] = []
    unforeseen: list[BaseException] = []

    def run(part: list[T]) -> None:
        try:
            if failed_with is not None and len(part) == len(files):
                raise failed_with
            attempt(part)
        except Exception as exc:
            if not (is_input_fault(exc) or is_unforeseen(exc)):
                raise
            if len(part) == 1:
                if is_unforeseen(exc):
                    unforeseen.append(exc)
                    log.warning(
                        "unexpected error in %s", stage, exc_info=exc, extra={"file": name(part[0])}
                    )
                culprits.append((part[0], describe(exc)))
                return
            if len(part) == len(files):
                log.warning(
                    "%s fails on the batch; finding the files at fault",
                    stage,
                    extra={"error": describe(exc)},
                )
            half = len(part) // 2
            run(part[:half])
            run(part[half:])
            return
        passed.extend(part)

    run(list(files))
    if unforeseen and not passed:
        names = ", ".join(name(f) for f, _why in culprits[:5])
        more = f" and {len(culprits) - 5} more" if len(culprits) > 5 else ""
        raise UnexpectedError(
            f"{stage} fails on every file alone ({names}{more}): {describe(unforeseen[0])}"
        ) from unforeseen[0]
    order = {id(f): i for i, f in enumerate(files)}
    passed.sort(key=lambda f: order[id(f)])
    return Isolated(tuple(passed), tuple(culprits))


def aside_outcome(
    ledger_id: int,
    file_name: str,
    message: str,
    counts: Mapping[int, FileCounts] | None = None,
    rules: Mapping[int, Mapping[str, int]] | None = None,
) -> FileOutcome:
    """A set-aside file's outcome, with what the engine counted of it, if anything."""
    counted = (counts or {}).get(ledger_id, FileCounts())
    return FileOutcome(
        ledger_id,
        file_name,
        ledger.QUARANTINED,
        counted.rows_read,
        counted.rows_valid,
        counted.rows_rejected,
        message,
        dict((rules or {}).get(ledger_id, {})),
    )


@dataclass(frozen=True)
class SetAside:
    """Files of the batch quarantined after triage: their moves are left, and what to say."""

    settled: tuple[LedgerRow, ...]
    outcomes: tuple[FileOutcome, ...]


def set_aside(
    warehouse: Warehouse,
    error_prefix: str,
    triaged: Triage,
    problems: Mapping[int, str],
    counts: Mapping[int, FileCounts] | None = None,
    rules: Mapping[int, Mapping[str, int]] | None = None,
) -> SetAside:
    """Quarantine files of the batch that cannot go on (each message names the problem), in
    one transaction; the batch goes on without them. counts and rules: what the engine
    counted of some of them, for their outcomes."""
    settled: list[LedgerRow] = []
    outcomes: list[FileOutcome] = []
    if not problems:
        return SetAside((), ())
    with warehouse.begin() as conn:
        warehouse.fence(conn)
        for ledger_id, message in problems.items():
            row = triaged.rows[ledger_id]
            dest = archive_key(error_prefix, row)
            checksum = triaged.checksums.get(ledger_id)
            settled.append(ledger.settle(conn, row, ledger.QUARANTINED, dest, message, checksum))
            outcomes.append(aside_outcome(ledger_id, row.file_name, message, counts, rules))
            log.warning("file set aside", extra={"file": row.file_name, "problem": message})
    return SetAside(tuple(settled), tuple(outcomes))
