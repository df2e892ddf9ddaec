"""The single run lock (etl_run_lock): who holds it, its heartbeat, taking over the lock of a
run that died, and the fence that stops a run whose lock was taken over from committing."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from retail_etl.errors import LockedError, LockLostError
from retail_etl.warehouse.holder import holder_is_dead
from retail_etl.warehouse.schema import run_lock

if TYPE_CHECKING:
    from retail_etl.warehouse import Warehouse

LOCK_NAME = "run"
LOCK_POLL_SECONDS = 1.0
log = logging.getLogger("retail_etl.warehouse")


def _now() -> datetime:
    return datetime.now().replace(microsecond=0)


def acquire(warehouse: Warehouse, holder: str, wait_seconds: float = 0.0) -> None:
    """Take the single run lock, waiting up to wait_seconds for it, or raise LockedError
    naming who holds it.

    A lock is taken over when its holder is certainly dead (a process of this host that
    no longer exists, see holder.py) or its heartbeat is older than stale_lock_seconds
    (its run was killed elsewhere).
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        current = _try_lock(warehouse, holder)
        if current is None:
            warehouse.holder = holder
            return
        left = deadline - time.monotonic()
        if left <= 0:
            hint = "try again later" if wait_seconds else "try again later or use --wait"
            raise LockedError(f"another run holds the lock: {current}; {hint}")
        time.sleep(min(LOCK_POLL_SECONDS, left))


def _try_lock(warehouse: Warehouse, holder: str) -> str | None:
    """None when the lock is now ours, else a description of its holder."""
    t = run_lock
    for _attempt in range(3):
        now = _now()
        conn = warehouse.connect()
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
            raise warehouse.error(exc) from None
        except SQLAlchemyError as exc:
            raise warehouse.error(exc) from None
        finally:
            conn.close()
        stale_before = now - timedelta(seconds=warehouse.settings.stale_lock_seconds)
        with warehouse.begin() as conn:
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


def heartbeat(warehouse: Warehouse, holder: str) -> bool:
    """Refresh the lock; False when it is no longer ours."""
    t = run_lock
    with warehouse.begin() as conn:
        return bool(
            conn.execute(
                update(t)
                .where(t.c.name == LOCK_NAME, t.c.holder == holder)
                .values(heartbeat_at=_now())
            ).rowcount
        )


def fence(conn: Connection, holder: str | None) -> None:
    """Inside a transaction that changes the ledger, the lake index or the marts: prove
    the lock is still ours. The lock row stays locked by this transaction until it
    commits, so a takeover cannot slip in between; a run whose lock was taken over (it
    was frozen past stale_lock_seconds) stops here instead of committing twice."""
    if holder is None:
        return
    t = run_lock
    held = conn.execute(
        update(t).where(t.c.name == LOCK_NAME, t.c.holder == holder).values(heartbeat_at=_now())
    ).rowcount
    if not held:
        current = conn.execute(select(t.c.holder).where(t.c.name == LOCK_NAME)).scalar()
        raise LockLostError(
            f"this run lost the run lock (now held by {current or 'nobody'}); it stopped "
            "before committing more, the run holding the lock carries on"
        )


def release(warehouse: Warehouse, holder: str) -> None:
    t = run_lock
    warehouse.holder = None
    with warehouse.begin() as conn:
        conn.execute(delete(t).where(t.c.name == LOCK_NAME, t.c.holder == holder))


def _is_lock_wait(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return "database is locked" in text or "lock wait timeout" in text
