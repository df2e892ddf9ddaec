"""Merge per-file contributions into the marts, inside the caller's transaction.

The engines compute each file's contribution with the shared SQL (sql/*_data_mart.sql). Here
those contributions are stored per file (so a correction can take them back out) and added to
the mart rows they touch, in exact Decimal arithmetic; nothing re-reads earlier files. The
incentive rule is applied to every store and month whose totals changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pyarrow as pa
from sqlalchemy import Connection, Table, delete, select, tuple_, update

from retail_etl.warehouse import Warehouse
from retail_etl.warehouse.schema import (
    customer_sales_partial,
    customers_data_mart,
    sales_team_data_mart,
    sales_team_partial,
)

CENT = Decimal("0.01")
KEY_CHUNK = 500


@dataclass(frozen=True)
class MartChanges:
    customer_rows: int
    sales_team_rows: int
    months: frozenset[str]  # 'YYYY-MM' whose snapshots must be rewritten
    # (customer_id, 'YYYY-MM') of every customers_data_mart row added, changed or removed
    customers: frozenset[tuple[int, str]] = frozenset()


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


def _select_in(conn: Connection, table: Table, columns: Sequence[str], keys: Sequence[tuple]):  # type: ignore[no-untyped-def,type-arg]
    cols = [table.c[name] for name in columns]
    for start in range(0, len(keys), KEY_CHUNK):
        chunk = keys[start : start + KEY_CHUNK]
        yield from conn.execute(select(table).where(tuple_(*cols).in_(chunk)))


def _delete_in(
    conn: Connection, table: Table, columns: Sequence[str], keys: Sequence[tuple]
) -> None:  # type: ignore[type-arg]
    cols = [table.c[name] for name in columns]
    for start in range(0, len(keys), KEY_CHUNK):
        conn.execute(delete(table).where(tuple_(*cols).in_(keys[start : start + KEY_CHUNK])))


class _Delta:
    __slots__ = ("total", "rows", "attrs")

    def __init__(self) -> None:
        self.total = Decimal("0.00")
        self.rows = 0
        self.attrs: dict[str, Any] | None = None


def _accumulate(
    deltas: dict[tuple, _Delta],
    rows: Iterable[dict[str, Any]],
    key_cols: Sequence[str],
    attr_cols: Sequence[str],
    sign: int,  # type: ignore[type-arg]
) -> None:
    for row in rows:
        key = tuple(row[c] for c in key_cols)
        delta = deltas.get(key)
        if delta is None:
            delta = deltas[key] = _Delta()
        delta.total += sign * row["total_sales"]
        delta.rows += sign * row["sales_rows"]
        if sign > 0:
            delta.attrs = {c: row[c] for c in attr_cols}


def _merge(
    warehouse: Warehouse,
    conn: Connection,
    mart: Table,
    key_cols: Sequence[str],
    attr_cols: Sequence[str],
    deltas: dict[tuple, _Delta],  # type: ignore[type-arg]
    now: datetime,
) -> dict[tuple, dict[str, Any]]:  # type: ignore[type-arg]
    """Add deltas to mart rows; rows left with no sales are removed. Returns the new rows."""
    keys = list(deltas)
    existing = {
        tuple(r._mapping[c] for c in key_cols): r._mapping
        for r in _select_in(conn, mart, key_cols, keys)
    }
    upserts: dict[tuple, dict[str, Any]] = {}  # type: ignore[type-arg]
    removed = []
    for key, delta in deltas.items():
        old = existing.get(key)
        total = (old["total_sales"] if old else Decimal("0.00")) + delta.total
        rows = (old["sales_rows"] if old else 0) + delta.rows
        if rows <= 0:
            if old is not None:
                removed.append(key)
            continue
        attrs = delta.attrs or ({c: old[c] for c in attr_cols} if old else {})
        record = dict(zip(key_cols, key, strict=True))
        record.update(attrs)
        record.update(total_sales=total.quantize(CENT), sales_rows=rows, updated_at=now)
        upserts[key] = record
    _delete_in(conn, mart, key_cols, removed)
    if mart is sales_team_data_mart:
        for record in upserts.values():
            record.setdefault("incentive", Decimal("0.00"))
    warehouse.upsert(conn, mart, list(upserts.values()))
    return upserts


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
    customer_keys = ("customer_id", "sales_date_month")
    team_keys = ("store_id", "sales_person_id", "sales_month")
    customer_deltas: dict[tuple, _Delta] = {}  # type: ignore[type-arg]
    team_deltas: dict[tuple, _Delta] = {}  # type: ignore[type-arg]

    if superseded:
        old_c = [
            dict(r._mapping)
            for r in conn.execute(
                select(customer_sales_partial).where(
                    customer_sales_partial.c.ledger_id.in_(superseded)
                )
            )
        ]
        old_t = [
            dict(r._mapping)
            for r in conn.execute(
                select(sales_team_partial).where(sales_team_partial.c.ledger_id.in_(superseded))
            )
        ]
        _accumulate(customer_deltas, old_c, customer_keys, (), -1)
        _accumulate(team_deltas, old_t, team_keys, (), -1)
        conn.execute(
            delete(customer_sales_partial).where(customer_sales_partial.c.ledger_id.in_(superseded))
        )
        conn.execute(
            delete(sales_team_partial).where(sales_team_partial.c.ledger_id.in_(superseded))
        )

    new_c = customer_contributions.to_pylist()
    new_t = sales_team_contributions.to_pylist()
    warehouse.insert_many(
        conn,
        customer_sales_partial,
        [
            {
                c: r[c]
                for c in (
                    "ledger_id",
                    "customer_id",
                    "sales_date_month",
                    "total_sales",
                    "sales_rows",
                )
            }
            for r in new_c
        ],
    )
    warehouse.insert_many(
        conn,
        sales_team_partial,
        [
            {
                c: r[c]
                for c in (
                    "ledger_id",
                    "store_id",
                    "sales_person_id",
                    "sales_month",
                    "total_sales",
                    "sales_rows",
                )
            }
            for r in new_t
        ],
    )
    _accumulate(customer_deltas, new_c, customer_keys, ("full_name", "address", "phone_number"), 1)
    _accumulate(team_deltas, new_t, team_keys, ("full_name",), 1)

    _merge(
        warehouse,
        conn,
        customers_data_mart,
        customer_keys,
        ("full_name", "address", "phone_number"),
        customer_deltas,
        now,
    )
    _merge(warehouse, conn, sales_team_data_mart, team_keys, ("full_name",), team_deltas, now)
    _rerank(conn, {(k[0], k[2]) for k in team_deltas}, incentive_rate)

    customers = frozenset(
        (int(k[0]), k[1].strftime("%Y-%m") if isinstance(k[1], date) else str(k[1])[:7])
        for k in customer_deltas
    )
    months = {month for _customer, month in customers}
    months |= {k[2] for k in team_deltas}
    return MartChanges(len(customer_deltas), len(team_deltas), frozenset(months), customers)


def _rerank(conn: Connection, store_months: set[tuple[int, str]], rate: Decimal) -> None:
    if not store_months:
        return
    mart = sales_team_data_mart
    totals: dict[tuple[int, int, str], Decimal] = {}
    current: dict[tuple[int, int, str], Decimal] = {}
    for r in _select_in(conn, mart, ("store_id", "sales_month"), sorted(store_months)):
        key = (r.store_id, r.sales_person_id, r.sales_month)
        totals[key] = r.total_sales
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
