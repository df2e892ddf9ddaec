"""Test-only wrapper: `python tests/killpoint.py SPEC... -- <retail-etl arguments>` runs the real
command line in this process after installing hooks that SIGKILL it (or break a part) at a
precise moment. Nothing here is in the product: the hooks wrap the pipeline's seams (its
checkpoint callback, the object store it opens, the SQL it sends, file validation) from outside.

SPEC is KIND:ARG:N
  checkpoint:PREFIX:N   at the Nth pipeline checkpoint whose name starts with PREFIX
  before:METHOD:N       before the Nth call of the object store's METHOD (upload, move, ...)
  after:METHOD:N        after the Nth call of the object store's METHOD
  validate:-:N          after the Nth file validation
  sql:REGEX:N           before the Nth SQL statement matching REGEX (case-insensitive)
  commit:TABLE:N        at the Nth COMMIT of a transaction that wrote to TABLE
  torn:PREFIX:N         folder store: at the Nth atomic write under PREFIX, after its temporary
                        file is complete and before it is renamed into place
  timer:CHECKPOINT:S[:DEADLINE]
                        S seconds after the first checkpoint named CHECKPOINT, or at the first
                        checkpoint named DEADLINE if the run gets there sooner (a timed kill
                        that a fast run cannot outrun)
  sleep:CHECKPOINT:S    no kill: pause S seconds at the first checkpoint named CHECKPOINT
  dropdb:CHECKPOINT:RE  from the first checkpoint named CHECKPOINT on, the warehouse is lost:
                        SQLite: another connection takes the write lock for good (the next
                        write fails after a 0.5 s busy timeout); MySQL/MariaDB: the session
                        is KILLed by the server as it sends its first statement matching RE
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from typing import Any

_counts: Counter[str] = Counter()
_lock = threading.Lock()
_keep: list[Any] = []  # connections a fault must keep open until the process ends


def die(why: str) -> None:
    sys.stderr.write(f"killpoint: SIGKILL {why}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def hit(name: str, wanted: int) -> bool:
    """Count an occurrence of `name`; True exactly at the wanted-th one."""
    with _lock:
        _counts[name] += 1
        return _counts[name] == wanted


def install(specs: list[str]) -> None:
    import retail_etl.run
    from retail_etl.run import pipeline

    checkpoints = [
        s.split(":", 2)
        for s in specs
        if s.startswith(("checkpoint:", "timer:", "dropdb:", "sleep:"))
    ]
    store_specs = [s.split(":", 2) for s in specs if s.startswith(("before:", "after:"))]

    def checkpoint(stage: str) -> None:
        for kind, arg, n in checkpoints:
            if kind == "timer" and ":" in n and stage == n.split(":", 1)[1]:
                die(f"at {stage}, before the timer started at {arg} fired")
            if kind == "checkpoint" and stage.startswith(arg) and hit(f"cp:{arg}", int(n)):
                die(f"at checkpoint {stage}")
            if kind == "sleep" and stage == arg and hit(f"sleep:{arg}", 1):
                sys.stderr.write(f"killpoint: sleeping {n}s at {stage}\n")
                sys.stderr.flush()
                time.sleep(float(n))
            if kind == "dropdb" and stage == arg and hit(f"dropdb:{arg}", 1):
                _lose_warehouse(n)
            if kind == "timer" and stage == arg and hit(f"timer:{arg}", 1):
                seconds = n.split(":", 1)[0]
                timer = threading.Timer(float(seconds), die, args=(f"{seconds}s after {stage}",))
                timer.daemon = True
                timer.start()

    original_run = pipeline.run

    def run(*args: Any, **kwargs: Any) -> Any:
        kwargs["checkpoint"] = checkpoint
        return original_run(*args, **kwargs)

    pipeline.run = run
    retail_etl.run.run = run  # the CLI imports it from there at call time

    if store_specs:
        original_open = pipeline.open_store

        def open_store(settings: Any) -> Any:
            return _Store(original_open(settings), store_specs)

        pipeline.open_store = open_store

    for spec in specs:
        kind, arg, n = spec.split(":", 2)
        if kind == "validate":
            _hook_validate(int(n))
        elif kind in ("sql", "commit"):
            _hook_sql(kind, arg, int(n))
        elif kind == "torn":
            _hook_torn(arg, int(n))


class _Store:
    def __init__(self, inner: Any, specs: list[list[str]]) -> None:
        self._inner = inner
        self._specs = specs
        self.url = inner.url

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if not callable(target) or not any(m == name for _k, m, _n in self._specs):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            for kind, method, n in self._specs:
                if kind == "before" and method == name and hit(f"before:{name}", int(n)):
                    die(f"before {name}{args}")
            result = target(*args, **kwargs)
            for kind, method, n in self._specs:
                if kind == "after" and method == name and hit(f"after:{name}", int(n)):
                    die(f"after {name}{args}")
            return result

        return call


def _hook_validate(wanted: int) -> None:
    from retail_etl.run import fetch

    original = fetch.inspect_file

    def inspect_file(path: Any, name: str) -> Any:
        result = original(path, name)
        if hit("validate", wanted):
            die(f"after validating {name}")
        return result

    fetch.inspect_file = inspect_file


_WRITES = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|LOAD)\b", re.IGNORECASE)


def _hook_sql(kind: str, pattern: str, wanted: int) -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    regex = re.compile(pattern, re.IGNORECASE)

    @event.listens_for(Engine, "before_cursor_execute")
    def before(conn, _cursor, statement, _params, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if not regex.search(statement):
            return
        if kind == "commit":
            if _WRITES.match(statement):  # a read of the table (schema checks) is no write
                conn.info["wrote_watched_table"] = True
        elif hit(f"sql:{pattern}", wanted):
            die(f"before SQL {statement[:80]!r}")

    if kind == "commit":

        @event.listens_for(Engine, "commit")
        def commit(conn) -> None:  # type: ignore[no-untyped-def]
            if conn.info.pop("wrote_watched_table", False) and hit(f"commit:{pattern}", wanted):
                die(f"before COMMIT of a transaction writing {pattern}")

        @event.listens_for(Engine, "rollback")
        def rollback(conn) -> None:  # type: ignore[no-untyped-def]
            conn.info.pop("wrote_watched_table", None)


def _lose_warehouse(pattern: str) -> None:
    """From now on the warehouse fails, the way each database does when it goes away."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    sys.stderr.write("killpoint: the warehouse goes away\n")
    regex = re.compile(pattern, re.IGNORECASE)

    @event.listens_for(Engine, "before_cursor_execute")
    def before(conn, _cursor, statement, _params, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if conn.dialect.name == "sqlite":
            conn.connection.dbapi_connection.execute("PRAGMA busy_timeout = 500")
            if not _keep:
                import sqlite3

                other = sqlite3.connect(conn.engine.url.database, isolation_level=None)
                other.execute("BEGIN IMMEDIATE")  # the write lock, held until the process ends
                _keep.append(other)
        elif regex.search(statement) and not _keep:
            _keep.append(True)
            killer = conn.engine.raw_connection()  # a second session on the same server
            try:
                killer.cursor().execute(f"KILL {int(conn.connection.dbapi_connection.thread_id())}")
            finally:
                killer.close()


def _hook_torn(prefix: str, wanted: int) -> None:
    original = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if f"/{prefix}" in str(dst) and hit(f"torn:{prefix}", wanted):
            die(f"with {src} complete and not yet renamed to {dst}")
        original(src, dst, *args, **kwargs)

    os.replace = replace


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--")
    install(argv[:split])
    sys.argv = ["retail-etl", *argv[split + 1 :]]
    from retail_etl.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
