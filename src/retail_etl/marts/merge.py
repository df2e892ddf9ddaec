"""Merge per-file contributions into the marts, inside the caller's transaction.

The engines compute each file's contribution with the shared SQL (sql/*_data_mart.sql). Here
those contributions are stored per file (so a correction can take them back out) and added,
set-based in SQL, to the mart rows they touch: the cost follows the batch, never the history.
Money is summed as integer cents (exact on every dialect; SQLite has no decimal type) and
total_sales derived from it. The incentive rule is applied to every store and month whose
totals changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import (
    Connection,
    Table,
    and_,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.schema import CreateTable

from retail_etl.config import MAX_STORABLE_AMOUNT
from retail_etl.errors import UnstorableError
from retail_etl.warehouse import Warehouse, bulk
from retail_etl.warehouse.schema import (
    customer_delta,
    customer_sales_partial,
    customers_data_mart,
    sales_team_data_mart,
    sales_team_delta,
    sales_team_partial,
)

CENT = Decimal("0.01")
MAX_CENTS = int(MAX_STORABLE_AMOUNT * 100)
KEY_CHUNK = 500


@dataclass(frozen=True)
class MartChanges:
    customer_rows: int
    sales_team_rows: int
    months: frozenset[str]  # 'YYYY-MM' whose snapshots must be rewritten
    # (customer_id, 'YYYY-MM') of every customers_data_mart row added, changed or removed
    customers: frozenset[tuple[int, str]] = frozenset()


@dataclass(frozen=True)
class _Mart:
    """How one mart is merged: its table, per-file partials, scratch deltas and columns."""

    table: Table
    partial: Table
    delta: Table
    keys: tuple[str, ...]
    attributes: tuple[str, ...]  # taken from the newest contribution (names, addresses)


CUSTOMERS = _Mart(
    customers_data_mart,
    customer_sales_partial,
    customer_delta,
    ("customer_id", "sales_date_month"),
    ("full_name", "address", "phone_number"),
)
SALES_TEAM = _Mart(
    sales_team_data_mart,
    sales_team_partial,
    sales_team_delta,
    ("store_id", "sales_person_id", "sales_month"),
    ("full_name",),
)


def incentive(total: Decimal, rate: Decimal) -> Decimal:
    """total x rate, rounded half-up to cents."""
    return (total * rate).quantize(CENT, rounding=ROUND_HALF_UP)


def top_seller_incentives(
    totals: dict[tuple[int, int, str], Decimal], rate: Decimal
) -> dict[tuple[int, int, str], Decimal]:
    """Incentive per (store, sales person, month): everyone ranked 1 by total in their store
    and month gets it (ties included), everyone else 0."""
    best: dict[tuple[int, str], Decimal] = {}
    for (store_id, _person, month), total in totals.items():
        key = (store_id, month)
        best[key] = max(best.get(key, total), total)
    return {
        key: incentive(total, rate) if total == best[(key[0], key[2])] else Decimal("0.00")
        for key, total in totals.items()
    }


def _with_cents(contributions: pa.Table, mart: _Mart) -> pa.Table:
    cents = pc.cast(
        pc.multiply(contributions["total_sales"], pa.scalar(Decimal(100), pa.decimal128(3, 0))),
        pa.int64(),
    )
    columns = ["ledger_id", *mart.keys, *mart.attributes, "sales_rows"]
    return contributions.select(columns).append_column("total_cents", cents)


def _stage_deltas(
    warehouse: Warehouse,
    conn: Connection,
    mart: _Mart,
    new_rows: list[dict[str, Any]],
    superseded: Sequence[int],
) -> None:
    """Scratch table := this batch's contributions, plus the superseded files' negated; the
    partials table gains the former and loses the latter."""
    conn.execute(CreateTable(mart.delta, if_not_exists=True))
    conn.execute(delete(mart.delta))
    bulk.insert_arrow(conn, mart.delta, new_rows)
    amounts = ["ledger_id", *mart.keys, "total_cents", "sales_rows"]
    conn.execute(
        insert(mart.partial).from_select(amounts, select(*(mart.delta.c[c] for c in amounts)))
    )
    if superseded:
        old = mart.partial.c
        conn.execute(
            insert(mart.delta).from_select(
                amounts,
                select(
                    old.ledger_id, *(old[k] for k in mart.keys), -old.total_cents, -old.sales_rows
                ).where(old.ledger_id.in_(superseded)),
            )
        )
        conn.execute(delete(mart.partial).where(old.ledger_id.in_(superseded)))


def _merge(
    warehouse: Warehouse, conn: Connection, mart: _Mart, now: datetime, shrinks: bool
) -> None:
    """mart += sum of the scratch deltas per key, in one INSERT ... SELECT upsert."""
    d, t = mart.delta.c, mart.table.c
    cents = func.sum(d.total_cents)
    columns: dict[str, Any] = {k: d[k] for k in mart.keys}
    columns |= {a: func.max(d[a]) for a in mart.attributes}
    columns |= {
        "total_sales": cents / literal_column("100.0"),
        "total_cents": cents,
        "sales_rows": func.sum(d.sales_rows),
        "updated_at": literal(now, t.updated_at.type),
    }
    if mart is SALES_TEAM:
        columns["incentive"] = literal(Decimal("0.00"), t.incentive.type)  # re-ranked below
    source = select(*(expr.label(name) for name, expr in columns.items())).group_by(
        *(d[k] for k in mart.keys)
    )
    t_cents, t_rows = t.total_cents, t.sales_rows

    def assignments(incoming: Any) -> list[tuple[str, Any]]:
        # total_sales first: MySQL applies these in order, and it reads the old total_cents
        pairs = [
            ("total_sales", (t_cents + incoming("total_cents")) / literal_column("100.0")),
            ("total_cents", t_cents + incoming("total_cents")),
            ("sales_rows", t_rows + incoming("sales_rows")),
            ("updated_at", incoming("updated_at")),
        ]
        pairs += [(a, func.coalesce(incoming(a), t[a])) for a in mart.attributes]
        return pairs

    bulk.upsert_from_select(conn, mart.table, list(columns), source, assignments)
    _check_storable(warehouse, conn, mart)
    if shrinks:  # a correction can empty a row: it then no longer exists
        keys = tuple_(*(t[k] for k in mart.keys))
        conn.execute(
            delete(mart.table).where(
                t.sales_rows <= 0, keys.in_(select(*(d[k] for k in mart.keys)).distinct())
            )
        )


def _check_storable(warehouse: Warehouse, conn: Connection, mart: _Mart) -> None:
    """Raise UnstorableError when a total this batch touched no longer fits DECIMAL(18, 2).
    MySQL's strict mode refuses such a total itself; SQLite would store it as it is."""
    if warehouse.dialect != "sqlite":
        return
    t, d = mart.table.c, mart.delta.c
    row = conn.execute(
        select(*(t[k] for k in mart.keys))
        .select_from(mart.table.join(mart.delta, and_(*(t[k] == d[k] for k in mart.keys))))
        .where(t.total_cents > MAX_CENTS)
        .limit(1)
    ).first()
    if row is not None:
        key = ", ".join(f"{k} {v}" for k, v in zip(mart.keys, row, strict=True))
        raise UnstorableError(
            f"{mart.table.name} total for {key} would be more than {MAX_STORABLE_AMOUNT}"
        )


def apply(
    warehouse: Warehouse,
    conn: Connection,
    customer_contributions: pa.Table,
    sales_team_contributions: pa.Table,
    superseded: Sequence[int],
    incentive_rate: Decimal,
) -> MartChanges:
    """Take superseded files' contributions out, put the new ones in, re-rank the incentive."""
    now = datetime.now().replace(microsecond=0)
    for mart, contributions in (
        (CUSTOMERS, customer_contributions),
        (SALES_TEAM, sales_team_contributions),
    ):
        _stage_deltas(warehouse, conn, mart, _with_cents(contributions, mart), superseded)
        _merge(warehouse, conn, mart, now, shrinks=bool(superseded))

    d = customer_delta.c
    labels: dict[Any, str] = {}  # few distinct months: label each once
    customers = frozenset(
        (cid, labels.get(month) or labels.setdefault(month, _month_label(month)))
        for cid, month in conn.execute(select(d.customer_id, d.sales_date_month).distinct())
    )
    t = sales_team_delta.c
    store_months = {(s, m) for s, m in conn.execute(select(t.store_id, t.sales_month).distinct())}
    team_rows = conn.execute(
        select(func.count()).select_from(
            select(t.store_id, t.sales_person_id, t.sales_month).distinct().subquery()
        )
    ).scalar_one()
    _rerank(conn, store_months, incentive_rate)
    months = {month for _customer, month in customers} | {m for _s, m in store_months}
    return MartChanges(len(customers), team_rows, frozenset(months), customers)


def _month_label(value: date | str) -> str:
    return value.strftime("%Y-%m") if isinstance(value, date) else str(value)[:7]


def _rerank(conn: Connection, store_months: set[tuple[int, str]], rate: Decimal) -> None:
    if not store_months:
        return
    mart = sales_team_data_mart
    totals: dict[tuple[int, int, str], Decimal] = {}
    current: dict[tuple[int, int, str], Decimal] = {}
    keys = sorted(store_months)
    for start in range(0, len(keys), KEY_CHUNK):
        chunk = keys[start : start + KEY_CHUNK]
        for r in conn.execute(
            select(mart).where(tuple_(mart.c.store_id, mart.c.sales_month).in_(chunk))
        ):
            key = (r.store_id, r.sales_person_id, r.sales_month)
            totals[key] = Decimal(r.total_cents) / 100
            current[key] = r.incentive
    for key, value in top_seller_incentives(totals, rate).items():
        if current[key] != value:
            conn.execute(
                update(mart)
                .where(
                    mart.c.store_id == key[0],
                    mart.c.sales_person_id == key[1],
                    mart.c.sales_month == key[2],
                )
                .values(incentive=value)
            )
