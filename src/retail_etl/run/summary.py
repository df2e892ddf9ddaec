"""What a run reports: one outcome per file and the run's totals, built once from the results
the stages returned (run --json, the run log, the terminal table)."""

from __future__ import annotations

import json
import re
from collections import Counter
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
    # rows per rule broken (the problems rejected rows name) and, for a quarantined file, the
    # file-level rule it broke (file_rule), counted 1
    rules: dict[str, int] = field(default_factory=dict)


RULE_LENGTH = 255  # etl_rule_count.rule


def file_rule(message: str) -> str:
    """The rule a set-aside file broke, from its message: the words before the first colon,
    without parentheses, numbers as N ('not UTF-8 text: invalid byte at offset 7' ->
    'file: not UTF-8 text'), so that files with the same problem count under one rule."""
    head = re.sub(r"\s*\([^)]*\)", "", message.split(":", 1)[0])
    return ("file: " + re.sub(r"(?<![\w-])\d+(?![\w-])", "N", head).strip())[:RULE_LENGTH]


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
    lake_bytes: int = 0
    rejected_files: int = 0
    rules: dict[str, int] = field(default_factory=dict)  # summed over the files
    # rows each mart gains, changes or loses, per 'YYYY-MM'
    mart_rows_changed: dict[str, dict[str, int]] = field(default_factory=dict)
    warehouse_rows_written: int = 0  # rows inserted, updated or deleted, scratch tables included
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # bytes each transfer moved (fetch: downloaded, publish: uploaded, archive: moved out of
    # landing) and its MB/s over its own seconds (its stage's when it has none of its own)
    stage_bytes: dict[str, int] = field(default_factory=dict)
    transfer_seconds: dict[str, float] = field(default_factory=dict)
    stage_mb_per_s: dict[str, float] = field(default_factory=dict)
    files: list[FileOutcome] = field(default_factory=list)
    message: str | None = None

    def timed(self, seconds: float, stage_seconds: Mapping[str, float]) -> RunSummary:
        """The summary with the run's times, and the transfer rates they give."""
        took = {**stage_seconds, **self.transfer_seconds}
        rates = {
            stage: round(moved / 1e6 / took[stage], 1)
            for stage, moved in self.stage_bytes.items()
            if took.get(stage)
        }
        return replace(
            self, seconds=seconds, stage_seconds=dict(stage_seconds), stage_mb_per_s=rates
        )

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
    lake_bytes: int,
    rejected_files: int,
    mart_rows_changed: Mapping[str, Mapping[str, int]],
    warehouse_rows_written: int,
    stage_bytes: Mapping[str, int],
    transfer_seconds: Mapping[str, float] | None = None,
    outcome: str = "succeeded",
) -> RunSummary:
    """The run's summary; notes: a line more for some files (a move left pending)."""
    files = [_with_file_rule(o) for o in outcomes]
    files = [
        replace(o, message="; ".join(filter(None, [o.message, notes[o.id]])))
        if o.id in notes
        else o
        for o in files
    ]
    done = [f for f in files if f.status == "I"]
    rules: Counter[str] = Counter()
    for item in files:
        rules.update(item.rules)
    return RunSummary(
        run_id,
        engine,
        outcome,
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
        lake_bytes=lake_bytes,
        rejected_files=rejected_files,
        rules=dict(sorted(rules.items())),
        mart_rows_changed={month: dict(marts) for month, marts in mart_rows_changed.items()},
        warehouse_rows_written=warehouse_rows_written,
        stage_bytes=dict(stage_bytes),
        transfer_seconds=dict(transfer_seconds or {}),
        files=files,
    )


def _with_file_rule(outcome: FileOutcome) -> FileOutcome:
    if outcome.status != "E" or not outcome.message:
        return outcome
    return replace(outcome, rules={**outcome.rules, file_rule(outcome.message): 1})
