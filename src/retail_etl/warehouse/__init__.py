"""The warehouse seam: SQLAlchemy Core over SQLite (default) or MySQL/MariaDB.

This module holds the connection (URL handling, strict sessions, connect retries, one-line
errors); bulk.py the bulk reads and writes, lock.py the run lock, schema.py the tables.
"""

from __future__ import annotations

import importlib.util
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import Connection, Engine, Select, Table, create_engine, event, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    SQLAlchemyError,
    StatementError,
)

from retail_etl.config import WarehouseSettings
from retail_etl.errors import ConfigError, WarehouseError
from retail_etl.redact import redact, register_secret
from retail_etl.warehouse import bulk, lock, schema
from retail_etl.warehouse.bulk import select_arrow, select_arrow_batches
from retail_etl.warehouse.holder import lock_holder

_MYSQL_SQL_MODE = (
    "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION"
)
_MYSQL_HINTS = {
    1044: ": the user may not use this database",
    1045: ": check the user and password in warehouse.url / warehouse.password",
    1049: ": create it first, e.g. CREATE DATABASE name CHARACTER SET utf8mb4",
    2003: ": is the server running and reachable?",
    2005: ": check the host name in warehouse.url",
}
log = logging.getLogger("retail_etl.warehouse")
SQLITE_CACHE_KIB = 256 * 1024  # page cache per connection, at most (grows as it is used)


class Warehouse:
    def __init__(self, settings: WarehouseSettings) -> None:
        self.settings = settings
        self.holder: str | None = None  # set while this object holds the run lock
        url = make_url(settings.url.get_secret_value())
        if settings.password is not None:
            url = url.set(password=settings.password.get_secret_value())
        register_secret(url.password if isinstance(url.password, str) else None)
        self.display_url = url.render_as_string(hide_password=True)
        self.dialect = url.get_backend_name()
        self._sqlite_file: Path | None = None
        if self.dialect == "sqlite":
            if url.database and url.database != ":memory:":
                self._sqlite_file = Path(url.database)
            self.engine: Engine = create_engine(url, connect_args={"timeout": 60})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        elif self.dialect in ("mysql", "mariadb"):
            if importlib.util.find_spec("pymysql") is None:  # what mysql+pymysql:// loads
                raise ConfigError(
                    "warehouse.url needs the PyMySQL driver: pip install 'retail-etl[mysql]'"
                )
            self.engine = create_engine(
                url,
                pool_pre_ping=True,
                pool_recycle=3600,
                connect_args={
                    "charset": "utf8mb4",
                    "connect_timeout": 10,
                    # Strict: a value that does not fit (money, dates) is an error, never
                    # silently clipped, whatever the server's default mode.
                    "init_command": f"SET SESSION sql_mode = '{_MYSQL_SQL_MODE}'",
                    # this tool's own connections may send its bulk files (bulk.load);
                    # the server's local_infile decides whether it accepts them
                    "local_infile": True,
                },
            )
        else:
            # config.py refuses such URLs already; a configuration error either way
            raise ConfigError(f"unsupported warehouse dialect {self.dialect!r}")
        self._written = 0
        self._written_lock = threading.Lock()
        event.listen(self.engine, "after_cursor_execute", self._count_written)

    @property
    def rows_written(self) -> int:
        """Rows this object's statements inserted, updated or deleted so far (a statement
        that knows better says how many: bulk.ROWS_WRITTEN)."""
        return self._written

    def _count_written(
        self, _conn: Any, cursor: Any, statement: str, _params: Any, context: Any, _many: bool
    ) -> None:
        if statement.lstrip()[:4].upper() not in ("INSE", "UPDA", "DELE", "REPL", "LOAD"):
            return
        known = context.execution_options.get(bulk.ROWS_WRITTEN)
        with self._written_lock:
            self._written += known if known is not None else max(cursor.rowcount, 0)

    # --- connections --------------------------------------------------------------------
    def connect(self) -> Connection:
        """Open a connection, retrying a bounded number of times while the server is down."""
        attempts = self.settings.connect_retries + 1
        for attempt in range(attempts):
            try:
                return self.engine.connect()
            except DBAPIError as exc:
                if not _is_connect_error(exc):
                    raise self.error(exc) from None
                if attempt + 1 == attempts:
                    raise self.error(exc, f"gave up after {attempts} attempt(s)") from None
                time.sleep(min(2**attempt, 8))
        raise AssertionError("unreachable")

    @contextmanager
    def begin(self, snapshot: bool = False) -> Iterator[Connection]:
        """One transaction: all statements inside commit together or not at all. snapshot:
        its reads see one snapshot of what is committed, whatever the server's default
        isolation (MySQL's REPEATABLE READ, whose plain reads take no locks; SQLite's
        transactions always read one snapshot)."""
        conn = self.connect()
        if snapshot and self.dialect != "sqlite":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        try:
            with conn.begin():
                yield conn
        except SQLAlchemyError as exc:
            raise self.error(exc) from None
        finally:
            conn.close()

    def error(self, exc: BaseException, note: str = "") -> WarehouseError:
        """One line naming the warehouse (password hidden), the problem and a hint."""
        orig = getattr(exc, "orig", None) or exc
        args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
        if len(args) >= 2 and isinstance(args[0], int) and isinstance(args[1], str):
            code = args[0]  # a MySQL / MariaDB error: (code, message)
            detail = f"{args[1]} (error {code}{_MYSQL_HINTS.get(code, '')})"
        else:
            detail = str(orig).splitlines()[0] if str(orig) else type(orig).__name__
        if note:
            detail += f"; {note}"
        return WarehouseError(
            redact(f"warehouse {self.display_url}: {detail}"), data_error=_is_data_error(exc)
        )

    def create_all(self) -> None:
        """Create every table that is missing (`init`): a SQLite file and its folder too."""
        if self._sqlite_file is not None:
            try:
                self._sqlite_file.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise WarehouseError(f"warehouse {self.display_url}: {exc}") from None
        with self.begin() as conn:
            schema.metadata.create_all(conn)

    def ensure_installed(self, upgrade: bool = True) -> None:
        """Refuse a warehouse `init` never set up (a mistyped URL, the wrong folder) rather
        than creating tables in it; add the tables a newer version has to one it did (unless
        not upgrade: a dry run writes nothing)."""
        missing = self._sqlite_file is not None and not self._sqlite_file.exists()
        if not missing:
            with self.begin() as conn:
                missing = not inspect(conn).has_table(schema.product_staging_table.name)
        if missing:
            raise WarehouseError(
                f"warehouse {self.display_url} has no retail-etl tables: run `retail-etl init` "
                "to create them (check warehouse.url if it should have them)"
            )
        if upgrade:
            self.create_all()

    def dispose(self) -> None:
        self.engine.dispose()

    def read_arrow(self, table: Table, columns: Sequence[str]) -> pa.Table:
        """A table's columns as Arrow (dimensions for the engine's joins)."""
        with self.begin() as conn:
            statement = select(*(table.c[name] for name in columns))
            keys = list(table.primary_key.columns)
            statement = statement.order_by(*keys)
            return select_arrow(conn, statement, keys[0] if len(keys) == 1 else None)

    def read_batches(
        self, statement: Select[Any], size: int, key: Any, readers: int = 1
    ) -> Iterator[pa.Table]:
        """The statement's rows, at most `size` at a time and in no particular order (key: a
        selected integer column unique among its rows, as for select_arrow_batches; without
        one, the statement is ordered and read on one connection).

        On MySQL/MariaDB `readers` connections read at once, each the rows whose key modulo
        `readers` is its own: the server builds each page's text on one core per query (a
        month of a million customers: 5.1 s read by one connection, 3.0 s by two). SQLite
        reads on one: its rows become Python objects under the GIL, and two readers took
        more than twice as long as one. Each reader reads in a transaction of its own, so
        the parts are consistent with each other only while nothing else writes the rows
        (the run lock's holder reading what it committed)."""
        if self.dialect == "sqlite" or readers <= 1 or key is None:
            with self.begin() as conn:
                yield from select_arrow_batches(conn, statement, size, key)
            return
        arrived: queue.Queue[pa.Table | BaseException | None] = queue.Queue(2 * readers)
        stop = threading.Event()  # the consumer is gone: readers leave at their next page

        def put(item: pa.Table | BaseException | None) -> bool:
            while not stop.is_set():
                try:
                    arrived.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def read(part: int) -> None:
            try:
                with self.begin() as conn:
                    mine = statement.where(key % readers == part)
                    for rows in select_arrow_batches(conn, mine, size, key):
                        if not put(rows):
                            return
            except BaseException as exc:  # raised in the consumer's thread
                put(exc)
                return
            put(None)

        with ThreadPoolExecutor(readers, thread_name_prefix="read") as pool:
            for part in range(readers):
                pool.submit(read, part)
            try:
                finished = 0
                while finished < readers:
                    item = arrived.get()
                    if item is None:
                        finished += 1
                    elif isinstance(item, BaseException):
                        raise item
                    else:
                        yield item
            finally:
                stop.set()

    def fence(self, conn: Connection) -> None:
        """Inside a transaction that changes the ledger, the lake index or the marts: prove
        the run lock is still this run's (lock.fence)."""
        lock.fence(conn, self.holder)

    def acquire_lock(self, holder: str, wait_seconds: float = 0.0) -> None:
        lock.acquire(self, holder, wait_seconds)

    def heartbeat(self, holder: str) -> bool:
        return lock.heartbeat(self, holder)

    def release_lock(self, holder: str) -> None:
        lock.release(self, holder)


# MySQL / MariaDB errors about a value: out of range (also in an expression), too long,
# truncated, incorrect for its column.
_MYSQL_DATA_ERRORS = {1264, 1265, 1292, 1366, 1406, 1690}


def _is_data_error(exc: BaseException) -> bool:
    """Whether a statement failed on the values it was given (rather than on the warehouse):
    a DBAPI data or integrity error, a MySQL value error, or a Python error binding a value
    (sqlite3 raises OverflowError for an integer beyond 64 bits)."""
    if isinstance(exc, DataError | IntegrityError):
        return True
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_DATA_ERRORS:
        return True
    return isinstance(exc, StatementError) and isinstance(orig, ArithmeticError | ValueError)


def _is_connect_error(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return any(
        marker in text
        for marker in (
            "can't connect",
            "connection refused",
            "lost connection",
            "gone away",
            "timed out",
            "locked",
        )
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # A batch over a million customers touches a million mart rows: with SQLite's default
    # 2 MB page cache their B-tree pages are read and evicted again and again.
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.execute("PRAGMA temp_store=MEMORY")  # the scratch delta tables
    cursor.close()


__all__ = [
    "Warehouse",
    "IntegrityError",
    "lock_holder",
    "schema",
    "select_arrow",
    "select_arrow_batches",
]
