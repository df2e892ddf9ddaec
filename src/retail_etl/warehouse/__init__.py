"""The warehouse seam: SQLAlchemy Core over SQLite (default) or MySQL/MariaDB.

Everything dialect-specific (URL handling, upsert syntax, connect retries) lives here.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import (
    Connection,
    Engine,
    Select,
    Table,
    create_engine,
    delete,
    event,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    SQLAlchemyError,
    StatementError,
)

from retail_etl.config import WarehouseSettings
from retail_etl.errors import ConfigError, LockedError, LockLostError, WarehouseError
from retail_etl.redact import redact, register_secret
from retail_etl.warehouse import schema
from retail_etl.warehouse.holder import holder_is_dead, lock_holder

UPSERT_CHUNK = 5_000
LOCK_NAME = "run"
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
LOCK_POLL_SECONDS = 1.0
log = logging.getLogger("retail_etl.warehouse")


def _now() -> datetime:
    return datetime.now().replace(microsecond=0)


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
        if self.dialect == "sqlite":
            if url.database and url.database != ":memory:":
                try:
                    Path(url.database).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise WarehouseError(f"warehouse {self.display_url}: {exc}") from None
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
                },
            )
        else:
            # config.py refuses such URLs already; a configuration error either way
            raise ConfigError(f"unsupported warehouse dialect {self.dialect!r}")

    # --- connections --------------------------------------------------------------------
    def _connect(self) -> Connection:
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
    def begin(self) -> Iterator[Connection]:
        """One transaction: all statements inside commit together or not at all."""
        conn = self._connect()
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
        with self.begin() as conn:
            schema.metadata.create_all(conn)

    def dispose(self) -> None:
        self.engine.dispose()

    # --- bulk helpers -------------------------------------------------------------------
    def upsert(
        self, conn: Connection, table: Table, names: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Insert rows (values in the order of names), replacing the non-key columns of rows
        whose primary key exists. Bound as plain tuples by the driver: a month's coupons for a
        million customers are a million rows."""
        if not rows:
            return
        keys = [c.name for c in table.primary_key.columns]
        quote = conn.dialect.identifier_preparer.quote
        statement = _insert_sql(conn, table, names)
        updates = [quote(n) for n in names if n not in keys] or [quote(keys[0])]
        if self.dialect == "sqlite":
            statement += f" ON CONFLICT ({', '.join(quote(k) for k in keys)}) DO UPDATE SET "
            statement += ", ".join(f"{n} = excluded.{n}" for n in updates)
        else:
            statement += " ON DUPLICATE KEY UPDATE "
            statement += ", ".join(f"{n} = VALUES({n})" for n in updates)
        for start in range(0, len(rows), UPSERT_CHUNK):
            chunk = rows[start : start + UPSERT_CHUNK]
            conn.exec_driver_sql(statement, [tuple(map(_driver_value, row)) for row in chunk])

    def upsert_from_select(
        self,
        conn: Connection,
        table: Table,
        columns: Sequence[str],
        source: Select[Any],
        assignments: Callable[[Callable[[str], Any]], list[tuple[str, Any]]],
    ) -> None:
        """INSERT INTO table (columns) SELECT ... ; rows whose key exists are updated with
        assignments(incoming): (column, expression) pairs where `incoming(name)` is the new
        row's value and table columns are the existing row's. MySQL applies the pairs in
        order (later ones see earlier results), SQLite all at once: list a column before the
        ones it is computed from."""
        keys = [c.name for c in table.primary_key.columns]
        source = source.where(true())  # SQLite: keeps ON CONFLICT from parsing as a join
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            lite = sqlite_insert(table).from_select(list(columns), source)
            pairs = assignments(lambda name: lite.excluded[name])
            conn.execute(lite.on_conflict_do_update(index_elements=keys, set_=dict(pairs)))
        else:
            from sqlalchemy.dialects.mysql import insert as mysql_insert

            my = mysql_insert(table).from_select(list(columns), source)
            conn.execute(my.on_duplicate_key_update(assignments(lambda name: my.inserted[name])))

    def insert_many(self, conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        for start in range(0, len(rows), UPSERT_CHUNK):
            conn.execute(insert(table), list(rows[start : start + UPSERT_CHUNK]))

    def insert_arrow(self, conn: Connection, table: Table, data: pa.Table) -> None:
        """Bulk-insert an Arrow table's rows (column names = table columns) as plain tuples:
        no per-row dicts; pymysql turns this into multi-row INSERTs. Decimals and dates are
        turned into text by Arrow, not one Python object at a time (a million customers give
        millions of rows a day)."""
        if data.num_rows == 0:
            return
        statement = _insert_sql(conn, table, data.column_names)
        data = pa.table([_bindable(column) for column in data.columns], names=data.column_names)
        for batch in data.to_batches(max_chunksize=50_000):
            columns = [column.to_pylist() for column in batch.columns]
            conn.exec_driver_sql(statement, list(zip(*columns, strict=True)))

    def read_arrow(self, table: Table, columns: Sequence[str]) -> pa.Table:
        """A table's columns as Arrow (dimensions for the engine's joins)."""
        with self.begin() as conn:
            return select_arrow(conn, select(*(table.c[name] for name in columns)))

    # --- run lock -----------------------------------------------------------------------
    def acquire_lock(self, holder: str, wait_seconds: float = 0.0) -> None:
        """Take the single run lock, waiting up to wait_seconds for it, or raise LockedError
        naming who holds it.

        A lock is taken over when its holder is certainly dead (a process of this host that
        no longer exists, see holder.py) or its heartbeat is older than stale_lock_seconds
        (its run was killed elsewhere).
        """
        deadline = time.monotonic() + wait_seconds
        while True:
            current = self._try_lock(holder)
            if current is None:
                self.holder = holder
                return
            left = deadline - time.monotonic()
            if left <= 0:
                hint = "try again later" if wait_seconds else "try again later or use --wait"
                raise LockedError(f"another run holds the lock: {current}; {hint}")
            time.sleep(min(LOCK_POLL_SECONDS, left))

    def _try_lock(self, holder: str) -> str | None:
        """None when the lock is now ours, else a description of its holder."""
        t = schema.run_lock
        for _attempt in range(3):
            now = _now()
            conn = self._connect()
            try:
                with conn.begin():
                    conn.execute(
                        insert(t).values(
                            name=LOCK_NAME, holder=holder, acquired_at=now, heartbeat_at=now
                        )
                    )
                return None
            except IntegrityError:
                pass  # held by someone: see whether it is stale or dead
            except DBAPIError as exc:
                if _is_lock_wait(exc):  # the holder is inside a long fenced transaction
                    return "another run (busy in a long transaction)"
                raise self.error(exc) from None
            except SQLAlchemyError as exc:
                raise self.error(exc) from None
            finally:
                conn.close()
            stale_before = now - timedelta(seconds=self.settings.stale_lock_seconds)
            with self.begin() as conn:
                current = conn.execute(
                    select(t.c.holder, t.c.heartbeat_at).where(t.c.name == LOCK_NAME)
                ).first()
                if current is None:
                    continue  # released in between: try again
                dead = holder_is_dead(current.holder)
                if dead or current.heartbeat_at < stale_before:
                    taken = conn.execute(
                        update(t)
                        .where(
                            t.c.name == LOCK_NAME,
                            t.c.holder == current.holder,
                            t.c.heartbeat_at == current.heartbeat_at,
                        )
                        .values(holder=holder, acquired_at=now, heartbeat_at=now)
                    ).rowcount
                    if taken:
                        why = "its process is gone" if dead else "its heartbeat is stale"
                        log.warning(
                            "took over the run lock from %s (%s)",
                            current.holder,
                            why,
                            extra={"previous_holder": current.holder},
                        )
                        return None
            return f"{current.holder} (heartbeat {current.heartbeat_at})"
        return "another run"

    def heartbeat(self, holder: str) -> bool:
        """Refresh the lock; False when it is no longer ours."""
        t = schema.run_lock
        with self.begin() as conn:
            return bool(
                conn.execute(
                    update(t)
                    .where(t.c.name == LOCK_NAME, t.c.holder == holder)
                    .values(heartbeat_at=_now())
                ).rowcount
            )

    def fence(self, conn: Connection) -> None:
        """Inside a transaction that changes the ledger, the lake index or the marts: prove
        the lock is still ours. The lock row stays locked by this transaction until it
        commits, so a takeover cannot slip in between; a run whose lock was taken over (it
        was frozen past stale_lock_seconds) stops here instead of committing twice."""
        if self.holder is None:
            return
        t = schema.run_lock
        held = conn.execute(
            update(t)
            .where(t.c.name == LOCK_NAME, t.c.holder == self.holder)
            .values(heartbeat_at=_now())
        ).rowcount
        if not held:
            current = conn.execute(select(t.c.holder).where(t.c.name == LOCK_NAME)).scalar()
            raise LockLostError(
                f"this run lost the run lock (now held by {current or 'nobody'}); it stopped "
                "before committing more, the run holding the lock carries on"
            )

    def release_lock(self, holder: str) -> None:
        t = schema.run_lock
        self.holder = None
        with self.begin() as conn:
            conn.execute(delete(t).where(t.c.name == LOCK_NAME, t.c.holder == holder))


def _is_lock_wait(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return "database is locked" in text or "lock wait timeout" in text


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


def _arrow_type(column: Any) -> pa.DataType:
    from sqlalchemy import Date, DateTime, Integer, Numeric

    if isinstance(column.type, Integer):
        return pa.int64()
    if isinstance(column.type, Numeric):
        return pa.decimal128(column.type.precision or 18, column.type.scale or 2)
    if isinstance(column.type, DateTime):
        return pa.timestamp("s")
    if isinstance(column.type, Date):
        return pa.date32()
    return pa.string()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


__all__ = ["Warehouse", "IntegrityError", "lock_holder", "schema"]


def select_arrow(conn: Connection, statement: Select[Any]) -> pa.Table:
    """A query's rows as Arrow, built column by column, typed from the selected columns."""
    return _arrow_of(list(statement.selected_columns), conn.execute(statement).fetchall())


def select_arrow_batches(conn: Connection, statement: Select[Any], size: int) -> Iterator[pa.Table]:
    """select_arrow's rows, at most `size` at a time: a query of a million rows never has
    them all as Python objects at once (MySQL streams them through a server-side cursor)."""
    selected = list(statement.selected_columns)
    result = conn.execution_options(yield_per=size).execute(statement)
    for rows in result.partitions():
        yield _arrow_of(selected, rows)


def _arrow_of(selected: list[Any], rows: Sequence[Any]) -> pa.Table:
    data = list(zip(*rows, strict=True)) if rows else [() for _ in selected]
    return pa.table(
        {
            column.name: pa.array(list(values), type=_arrow_type(column))
            for column, values in zip(selected, data, strict=True)
        }
    )


def _insert_sql(conn: Connection, table: Table, names: Sequence[str]) -> str:
    """INSERT INTO table (names) VALUES (markers), for the driver's executemany: tuples bind
    far faster than SQLAlchemy's per-row dicts."""
    quote = conn.dialect.identifier_preparer.quote
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) "
        f"VALUES ({', '.join([marker] * len(names))})"
    )


def _bindable(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Values every driver binds the same way: decimals and dates as their text (sqlite3 has
    no Decimal/date adapters of its own in newer Pythons; ISO text is also how SQLAlchemy
    stores dates in SQLite)."""
    kind = column.type
    if pa.types.is_decimal(kind) or pa.types.is_date(kind) or pa.types.is_timestamp(kind):
        return pc.cast(column, pa.string())
    return column


def _driver_value(value: Any) -> Any:
    """One value as _bindable gives a column's: decimals and dates as text."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):  # datetime included: ISO text with a space, as SQLAlchemy's
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    return value
