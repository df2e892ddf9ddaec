"""The engine starts on the files while the rest still download (Engine.read): on S3 a day's
files take seconds to arrive, and the lake pass over those already here need not wait for them.

Which files make the batch is only known after triage, so this reads ahead of it: a file
triage then takes out (a duplicate, a correction that cannot be applied) costs some engine time
and nothing else, as the engine's process leaves it out. Reading ahead only ever saves time:
when anything fails here (a file the engine cannot read, the dimensions, the engine itself) it
stops and its work is thrown away, and transform starts over from the downloaded files, where
the same error surfaces as it would have without reading ahead (a file at fault is found by
bisection)."""

from __future__ import annotations

import logging
import shutil
from concurrent.futures import Future
from datetime import date
from pathlib import Path
from types import TracebackType

from retail_etl.config import Settings
from retail_etl.engines import Dimensions, Engine, RowLimits, open_engine
from retail_etl.run import isolate
from retail_etl.run.fetch import FetchedFile

log = logging.getLogger("retail_etl.run")


class ReadAhead:
    """Give it the files as they arrive (fetch's arrived); take() hands transform the engine
    that has read them. Used as a context manager: an engine not taken is closed at the end."""

    def __init__(
        self,
        settings: Settings,
        engine_name: str,
        dims: Future[Dimensions] | None,
        run_id: int,
        out_dir: Path,
    ) -> None:
        self.settings = settings
        self.engine_name = engine_name
        self.dims = dims
        self.run_id = run_id
        self.out_dir = out_dir
        self.limits = RowLimits.of(settings.rules, date.today())
        self._engine: Engine | None = None
        self._stopped = False

    def __call__(self, arrived: list[FetchedFile]) -> None:
        files = [batch_file for item in arrived if (batch_file := item.batch_file) is not None]
        if not files or self._stopped or self.dims is None:
            return
        try:
            dims = self.dims.result()
            if dims.empty():  # transform says why no file can be processed
                self._stop()
                return
            if self._engine is None:
                self._engine = open_engine(self.settings.engine, self.engine_name)
            self._engine.read(files, dims, self.limits, self.run_id, self.out_dir)
        except Exception as exc:
            expected = isolate.is_input_fault(exc)  # transform finds the file and says why
            log.log(
                logging.INFO if expected else logging.WARNING,
                "the engine stopped reading ahead; transform reads the batch again",
                extra={"error": isolate.describe(exc)},
                exc_info=None if expected else exc,
            )
            self._stop()

    def _stop(self) -> None:
        self._close()
        shutil.rmtree(self.out_dir, ignore_errors=True)
        self._stopped = True

    def take(self) -> Engine | None:
        """The engine that has read some of the batch into out_dir, now the caller's to close;
        None when none has."""
        engine, self._engine = self._engine, None
        return engine

    def _close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self._close()
        self.dims = None  # a million customers' names: not kept through the commit
