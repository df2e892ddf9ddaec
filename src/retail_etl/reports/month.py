"""The monthly report's figures, read from the marts and the coupon table.

All sums are done here in Decimal (SQLite would sum money as binary floats); the rows read
are one per customer of the month and one per sales person, store and month for the trend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import select

from retail_etl.config import CouponRule, RulesSettings
from retail_etl.marts import coupons
from retail_etl.marts.coupons import month_start, shift_month
from retail_etl.reports.charts import compact, nice_step
from retail_etl.warehouse import Warehouse
from retail_etl.warehouse.schema import customers_data_mart, sales_team_data_mart, store

ZERO = Decimal("0.00")
TOP = 10
TREND_MONTHS = 12
COUPON_ROWS = 50  # the report lists the first; `retail-etl coupons` exports them all


def change_pct(now: Decimal, before: Decimal | None) -> Decimal | None:
    """Percent change, one decimal, or None when there is nothing to compare with."""
    if before is None or before == 0:
        return None
    return ((now - before) * 100 / before).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


@dataclass
class Spender:
    customer_id: int
    name: str
    total: Decimal
    coupon: str | None = None


@dataclass
class Seller:
    sales_person_id: int
    name: str
    total: Decimal
    incentive: Decimal
    winner: bool


@dataclass
class StoreMonth:
    store_id: int
    label: str
    detail: str
    total: Decimal = ZERO
    previous: Decimal | None = None
    sellers: list[Seller] = field(default_factory=list)

    @property
    def change(self) -> Decimal | None:
        return change_pct(self.total, self.previous)

    @property
    def winners(self) -> list[Seller]:
        return [s for s in self.sellers if s.winner]


@dataclass
class MonthlyReport:
    month: str
    total_sales: Decimal = ZERO
    customer_count: int = 0
    previous_total: Decimal | None = None
    top_spenders: list[Spender] = field(default_factory=list)
    distribution: list[tuple[str, int]] = field(default_factory=list)
    stores: list[StoreMonth] = field(default_factory=list)
    incentive_total: Decimal = ZERO
    trend_months: list[str] = field(default_factory=list)
    trend: list[tuple[str, list[Decimal | None]]] = field(default_factory=list)
    coupons: list[dict[str, Any]] = field(default_factory=list)
    coupon_count: int = 0
    coupon_segments: list[tuple[str, int, Decimal]] = field(default_factory=list)

    @property
    def has_sales(self) -> bool:
        return self.customer_count > 0 or any(s.sellers for s in self.stores)

    @property
    def average_spend(self) -> Decimal | None:
        if not self.customer_count:
            return None
        return (self.total_sales / self.customer_count).quantize(
            Decimal("0.01"), rounding=ROUND_HALF_UP
        )

    @property
    def change(self) -> Decimal | None:
        return change_pct(self.total_sales, self.previous_total)


def distribution(spends: list[Decimal], buckets: int = 8) -> list[tuple[str, int]]:
    """Customers per spend range [a, b) with round edges, from the range holding the lowest
    spend to the one holding the highest (the last range includes its end)."""
    if not spends:
        return []
    low, peak = min(spends), max(spends)
    step = Decimal(str(nice_step(float(peak - low) or float(peak) or 1.0, buckets)))
    start = (low // step) * step
    count = max(1, math.ceil((peak - start) / step))
    counts = [0] * count
    for spend in spends:
        counts[min(int((spend - start) // step), count - 1)] += 1
    return [
        (f"{compact(start + step * i)}–{compact(start + step * (i + 1))}", n)
        for i, n in enumerate(counts)
    ]


def coupon_order(
    listing: list[dict[str, Any]],
    rules: Sequence[CouponRule],
    previous: dict[int, Decimal],
) -> list[dict[str, Any]]:
    """Coupons by segment, in rule order, then by the rank their reason gives: top spenders
    and first purchases by spend (highest first), a spend drop by how far it fell (then by
    what was spent before); ties by customer id."""
    order = {rule.segment: (index, rule.kind) for index, rule in enumerate(rules)}

    def key(c: dict[str, Any]) -> tuple[Any, ...]:
        index, kind = order.get(c["segment"], (len(order), ""))
        spent = c["total_sales"] or ZERO
        if kind == "spend_drop":
            before = previous.get(c["customer_id"], ZERO)
            fell = (before - spent) / before if before else Decimal(0)
            return (index, c["segment"], -fell, -before, c["customer_id"])
        return (index, c["segment"], -spent, Decimal(0), c["customer_id"])

    return sorted(listing, key=key)


def build(warehouse: Warehouse, month: str, rules: RulesSettings | None = None) -> MonthlyReport:
    coupon_rules = (rules or RulesSettings()).coupons
    report = MonthlyReport(month)
    cm, tm = customers_data_mart, sales_team_data_mart
    first_day = month_start(month)
    with warehouse.begin() as conn:
        spenders = [
            Spender(r.customer_id, r.full_name or f"customer {r.customer_id}", r.total_sales)
            for r in conn.execute(
                select(cm.c.customer_id, cm.c.full_name, cm.c.total_sales).where(
                    cm.c.sales_date_month == first_day
                )
            )
        ]
        previous_by_customer: dict[int, Decimal] = dict(
            conn.execute(
                select(cm.c.customer_id, cm.c.total_sales).where(
                    cm.c.sales_date_month == month_start(shift_month(month, -1))
                )
            ).fetchall()
        )
        previous = list(previous_by_customer.values())
        months = [shift_month(month, -i) for i in range(TREND_MONTHS - 1, -1, -1)]
        team_rows = conn.execute(
            select(tm).where(tm.c.sales_month.in_(months)).order_by(tm.c.store_id)
        ).fetchall()
        store_info = {
            r.id: r
            for r in conn.execute(select(store.c.id, store.c.address, store.c.store_manager_name))
        }

    report.customer_count = len(spenders)
    report.total_sales = sum((s.total for s in spenders), ZERO)
    report.previous_total = sum(previous, ZERO) if previous else None
    report.distribution = distribution([s.total for s in spenders])

    stores: dict[int, StoreMonth] = {}
    per_store_month: dict[tuple[int, str], Decimal] = {}
    for r in team_rows:
        key = (r.store_id, r.sales_month)
        per_store_month[key] = per_store_month.get(key, ZERO) + r.total_sales
        if r.store_id not in stores:
            info = store_info.get(r.store_id)
            stores[r.store_id] = StoreMonth(
                r.store_id,
                f"Store {r.store_id}",
                f"{info.address} (manager {info.store_manager_name})" if info else "",
            )
        if r.sales_month == month:
            stores[r.store_id].sellers.append(
                Seller(
                    r.sales_person_id,
                    r.full_name or f"sales person {r.sales_person_id}",
                    r.total_sales,
                    r.incentive,
                    False,
                )
            )
    for entry in stores.values():
        entry.total = per_store_month.get((entry.store_id, month), ZERO)
        entry.previous = per_store_month.get((entry.store_id, shift_month(month, -1)))
        if entry.sellers:
            best = max(s.total for s in entry.sellers)
            for seller in entry.sellers:
                seller.winner = seller.total == best
        entry.sellers.sort(key=lambda s: (-s.total, s.sales_person_id))
        report.incentive_total += sum((s.incentive for s in entry.sellers), ZERO)
    report.stores = [stores[k] for k in sorted(stores)]

    with_data = [m for m in months if any(k[1] == m for k in per_store_month)]
    if with_data:
        report.trend_months = months[months.index(with_data[0]) :]
        for entry in report.stores:
            points: list[Decimal | None] = []
            for m in report.trend_months:
                if m not in with_data:
                    points.append(None)
                else:
                    points.append(per_store_month.get((entry.store_id, m), ZERO))
            report.trend.append((entry.label, points))

    listing = coupon_order(coupons.listing(warehouse, month), coupon_rules, previous_by_customer)
    report.coupon_count = len(listing)
    report.coupons = listing[:COUPON_ROWS]
    segments: dict[str, tuple[int, Decimal]] = {}
    for c in listing:  # in rule order, as listed
        n, _pct = segments.get(c["segment"], (0, c["discount_pct"]))
        segments[c["segment"]] = (n + 1, c["discount_pct"])
    report.coupon_segments = [(s, n, pct) for s, (n, pct) in segments.items()]
    by_customer = {c["customer_id"]: c["segment"] for c in listing}
    report.top_spenders = sorted(spenders, key=lambda s: (-s.total, s.customer_id))[:TOP]
    for spender in report.top_spenders:
        spender.coupon = by_customer.get(spender.customer_id)
    return report
