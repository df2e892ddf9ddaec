"""Structured logs: one JSON object per line, each carrying the run id."""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from retail_etl.config import LogSettings
from retail_etl.redact import redact

_run_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("run_id", default=None)
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


@contextmanager
def run_context(run_id: int) -> Iterator[None]:
    token = _run_id.set(run_id)
    try:
        yield
    finally:
        _run_id.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "run_id": _run_id.get(),
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


def setup_logging(settings: LogSettings) -> Path:
    """Log to <log.dir>/retail-etl.jsonl; returns the file's path."""
    settings.dir.mkdir(parents=True, exist_ok=True)
    path = settings.dir / "retail-etl.jsonl"
    root = logging.getLogger("retail_etl")
    for handler in list(root.handlers):
        if getattr(handler, "_retail_etl", False):
            root.removeHandler(handler)
            handler.close()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    handler._retail_etl = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(settings.level)
    return path
