"""Progress of long stages: Rich bars on a terminal, nothing elsewhere."""

from __future__ import annotations

import threading
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text


class _BytesOnly(ProgressColumn):
    """Show a byte column only for stages that count bytes."""

    def __init__(self, inner: ProgressColumn) -> None:
        super().__init__()
        self.inner = inner

    def render(self, task: Task) -> Text:
        if task.fields.get("bytes"):
            return self.inner.render(task)  # type: ignore[return-value]
        return Text("")


class Progress(Protocol):
    def start(self, stage: str, total: float | None = None) -> None: ...
    def advance(self, stage: str, amount: float) -> None: ...
    def finish(self, stage: str) -> None: ...


class NullProgress:
    def start(self, stage: str, total: float | None = None) -> None:
        pass

    def advance(self, stage: str, amount: float) -> None:
        pass

    def finish(self, stage: str) -> None:
        pass


class TerminalProgress:
    """One line per stage; byte-counting stages show size and speed."""

    def __init__(self, console: Console) -> None:
        self._bar = RichProgress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            _BytesOnly(DownloadColumn()),
            _BytesOnly(TransferSpeedColumn()),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> TerminalProgress:
        self._bar.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._bar.stop()

    def start(self, stage: str, total: float | None = None) -> None:
        with self._lock:
            self._tasks[stage] = self._bar.add_task(
                stage, total=total or None, bytes=total is not None
            )

    def advance(self, stage: str, amount: float) -> None:
        with self._lock:
            if stage in self._tasks:
                self._bar.advance(self._tasks[stage], amount)

    def finish(self, stage: str) -> None:
        with self._lock:
            task = self._tasks.get(stage)
            if task is not None:
                total = self._bar.tasks[task].total
                self._bar.update(task, total=total or 1, completed=total or 1)
