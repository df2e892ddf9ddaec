"""What a run reports: one outcome per file and the run's totals, built once from the results
the stages returned (run --json, the run log, the terminal table)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class FileOutcome:
    id: int
    file_name: str
    status: str
    rows_read: int = 0
    rows_valid: int = 0
    rows_rejected: int = 0
    message: str | None = None


@dataclass(frozen=True)
class RunSummary:
    run_id: int
    engine: str
    outcome: str = "running"
    files_seen: int = 0
    files_resumed: int = 0
    files_processed: int = 0
    files_quarantined: int = 0
    files_duplicate: int = 0
    files_corrected: int = 0
    rows_read: int = 0
    rows_valid: int = 0
    rows_rejected: int = 0
    lake_objects: int = 0
    rejected_files: int = 0
    warehouse_rows_written: int = 0  # rows inserted, updated or deleted, scratch tables included
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    files: list[FileOutcome] = field(default_factory=list)
    message: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)


def summarize(
    run_id: int,
    engine: str,
    outcomes: Iterable[FileOutcome],
    notes: Mapping[int, str],
    *,
    seen: int,
    resumed: int,
    corrected: int,
    lake_objects: int,
    rejected_files: int,
    warehouse_rows_written: int,
) -> RunSummary:
    """The succeeded run's summary; notes: a line more for some files (a move left pending)."""
    files = [
        replace(o, message="; ".join(filter(None, [o.message, notes[o.id]])))
        if o.id in notes
        else o
        for o in outcomes
    ]
    done = [f for f in files if f.status == "I"]
    return RunSummary(
        run_id,
        engine,
        "succeeded",
        files_seen=seen,
        files_resumed=resumed,
        files_processed=len(done),
        files_quarantined=sum(1 for f in files if f.status == "E"),
        files_duplicate=sum(1 for f in files if f.status == "D"),
        files_corrected=corrected,
        rows_read=sum(f.rows_read for f in done),
        rows_valid=sum(f.rows_valid for f in done),
        rows_rejected=sum(f.rows_rejected for f in done),
        lake_objects=lake_objects,
        rejected_files=rejected_files,
        warehouse_rows_written=warehouse_rows_written,
        files=files,
    )
