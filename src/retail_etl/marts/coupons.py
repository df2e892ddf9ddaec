"""Coupon suggestions from customer spending: the `customer_coupons` table.

The rules are data (`[[rules.coupons]]` in the config, typed in config.py); this module only
knows the three kinds of test a rule can make: top spenders of the month, spend fallen
against the previous month, first month with a purchase. Each customer gets at most one
coupon per month, from the first rule (in configured order) that matches them. A coupon's
`month` is the month whose spending earned it.

Coupons are recomputed inside the same warehouse transaction as the marts they derive from
(publish.commit_batch). That costs a little transaction time but means no reader ever sees
marts and coupons that disagree, and a crash can never leave coupons stale with nothing to
say which months need redoing. Only the months a batch can have changed are recomputed:

* the months whose customers_data_mart rows changed (every rule reads its own month);
* the month after each of them (spend_drop compares with the previous month);
* for first_month rules, any later month in which a changed customer holds a first-month
  coupon (late sales moved their first month earlier) and, when the batch corrected files,
  each changed customer's current first month (taken-out sales can move it later).

A month without any customers_data_mart row gets no coupons: its sales are not loaded yet,
and "everyone's spend fell to 0" would be noise, not a segment.

Codes are an HMAC of customer, month and segment under `rules.coupon_secret`: recomputing a
month gives the same codes, and without the secret nobody can make a valid one.
"""

from __future__ import annotations

import csv
import hmac
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from itertools import islice
from operator import attrgetter
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, delete, exists, func, select
from sqlalchemy.orm import aliased

from retail_etl.config import (
    CouponRule,
    FirstMonthRule,
    RulesSettings,
    SpendDropRule,
    TopSpendersRule,
)
from retail_etl.marts.merge import MartChanges
from retail_etl.warehouse import Warehouse, bulk
from retail_etl.warehouse.schema import customer, customer_coupons, customers_data_mart

DEFAULT_SECRET = b"retail-etl coupon codes: set rules.coupon_secret"
_CHUNK = 500
_RANGE = 50_000  # customers whose coupons are compared and written at a time
ZERO = Decimal("0.00")
LAST_MONTH = "9999-12"


# The customer_coupons columns a computation fills, in the order Coupon.values() gives them.
STORED_COLUMNS = (
    "month",
    "customer_id",
    "segment",
    "discount_pct",
    "reason",
    "code",
    "total_sales",
)
_stored_values = attrgetter(*STORED_COLUMNS)
REASON_LENGTH = 255  # customer_coupons.reason


@dataclass(frozen=True)
class Coupon:
    customer_id: int
    month: str
    segment: str
    discount_pct: Decimal
    reason: str  # at most REASON_LENGTH characters
    code: str
    total_sales: Decimal

    def values(self) -> tuple[Any, ...]:
        """The customer_coupons row, in STORED_COLUMNS order."""
        return _stored_values(self)


# --- months -----------------------------------------------------------------------------------
def month_start(month: str) -> date:
    return date.fromisoformat(f"{month}-01")


def shift_month(month: str, delta: int) -> str:
    index = int(month[:4]) * 12 + int(month[5:7]) - 1 + delta
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _label(value: date | str) -> str:
    return value.strftime("%Y-%m") if isinstance(value, date) else str(value)[:7]


# --- the rules, as a pure function --------------------------------------------------------------
_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base 32: no I, L, O, U
_CODE_PAIRS = tuple(a + b for a in _CODE_ALPHABET for b in _CODE_ALPHABET)  # 10 bits each


@lru_cache(maxsize=256)
def _code_prefix(segment: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", segment).upper()[:3]


def coupon_code(secret: bytes, customer_id: int, month: str, segment: str) -> str:
    """Deterministic and unforgeable without the secret: SEG-XXXXXXXXXXXX (60 bits)."""
    digest = hmac.digest(secret, f"{customer_id}|{month}|{segment}".encode(), "sha256")
    number = int.from_bytes(digest[:8], "big") >> 4
    body = "".join([_CODE_PAIRS[(number >> shift) & 1023] for shift in (50, 40, 30, 20, 10, 0)])
    return f"{_code_prefix(segment)}-{body}"


def _number(value: Decimal) -> str:
    """A Decimal without exponent or trailing zeros: 10, 0.5, 12.25."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):,.2f}"


def top_threshold(spends: Iterable[Decimal], share: Decimal) -> Decimal | None:
    """The lowest spend still in the top `share` of spenders (spend > 0), or None.

    k = ceil(share x spenders); a customer qualifies when their spend is at least the k-th
    highest, so everyone tied with the k-th customer qualifies too.
    """
    ordered = sorted((s for s in spends if s > 0), reverse=True)
    k = math.ceil(share * len(ordered))
    return ordered[k - 1] if k >= 1 else None


def coupons_of(
    month: str,
    current: Mapping[int, Decimal],
    previous: Mapping[int, Decimal],
    returning: set[int],
    rules: Sequence[CouponRule],
    secret: bytes = DEFAULT_SECRET,
) -> Iterator[Coupon]:
    """Coupons for `month`, one at a time, in customer order.

    current: customer -> spend this month (every customers_data_mart row of the month);
    previous: customer -> spend in the previous calendar month;
    returning: customers of this month with a mart row in any earlier month.
    """
    spenders = sum(1 for s in current.values() if s > 0)
    thresholds = {
        id(rule): top_threshold(current.values(), rule.share)
        for rule in rules
        if isinstance(rule, TopSpendersRule)
    }
    ranks: dict[Decimal, int] = {}
    for position, spend in enumerate(sorted(current.values(), reverse=True), start=1):
        ranks.setdefault(spend, position)
    prev_label = shift_month(month, -1)
    for customer_id in sorted(set(current) | set(previous)):
        spend = current.get(customer_id, ZERO)
        for rule in rules:
            reason = None
            if isinstance(rule, TopSpendersRule):
                threshold = thresholds[id(rule)]
                if (
                    customer_id in current
                    and threshold is not None
                    and spend > 0
                    and spend >= threshold
                    and spend >= rule.min_spend
                ):
                    reason = (
                        f"top {_number(rule.share * 100)}% of {spenders} spenders in {month}: "
                        f"rank {ranks[spend]}, spent {_money(spend)}"
                    )
            elif isinstance(rule, SpendDropRule):
                before = previous.get(customer_id, ZERO)
                if (
                    before > 0
                    and before >= rule.min_previous_spend
                    and spend <= before * (1 - rule.drop_share)
                ):
                    fell = ((before - spend) * 100 / before).quantize(
                        Decimal("1"), rounding=ROUND_HALF_UP
                    )
                    reason = (
                        f"spend fell {fell}% from {_money(before)} in {prev_label} "
                        f"to {_money(spend)} in {month}"
                    )
            elif (
                isinstance(rule, FirstMonthRule)
                and customer_id in current
                and customer_id not in returning
                and spend >= rule.min_spend
            ):
                reason = f"first purchases in {month}: spent {_money(spend)}"
            if reason is not None:
                yield Coupon(
                    customer_id,
                    month,
                    rule.segment,
                    rule.discount_pct,
                    reason[:REASON_LENGTH],
                    coupon_code(secret, customer_id, month, rule.segment),
                    spend,
                )
                break


# --- reading the marts, writing the table -----------------------------------------------------
def secret_of(rules: RulesSettings) -> bytes:
    if rules.coupon_secret is None:
        return DEFAULT_SECRET
    return rules.coupon_secret.get_secret_value().encode("utf-8")


def _spend(conn: Connection, month: str) -> dict[int, Decimal]:
    mart = customers_data_mart
    return {
        r.customer_id: r.total_sales
        for r in conn.execute(
            select(mart.c.customer_id, mart.c.total_sales).where(
                mart.c.sales_date_month == month_start(month)
            )
        )
    }


def _returning(conn: Connection, month: str) -> set[int]:
    """Customers of `month` who have a mart row in an earlier month (uses the primary key)."""
    this, earlier = customers_data_mart, aliased(customers_data_mart)
    first_day = month_start(month)
    query = select(this.c.customer_id).where(
        this.c.sales_date_month == first_day,
        exists().where(
            and_(
                earlier.c.customer_id == this.c.customer_id,
                earlier.c.sales_date_month < first_day,
            )
        ),
    )
    return set(conn.execute(query).scalars())


def compute_month(conn: Connection, month: str, rules: RulesSettings) -> Iterator[Coupon]:
    """The month's coupons as the marts say now, in customer order."""
    if not rules.coupons:
        return iter(())
    current = _spend(conn, month)
    if not current:
        return iter(())  # no sales loaded for the month (yet): nothing to judge spending by
    needs_previous = any(isinstance(r, SpendDropRule) for r in rules.coupons)
    needs_history = any(isinstance(r, FirstMonthRule) for r in rules.coupons)
    previous = _spend(conn, shift_month(month, -1)) if needs_previous else {}
    returning = _returning(conn, month) if needs_history else set()
    return coupons_of(month, current, previous, returning, rules.coupons, secret_of(rules))


def replace_month(warehouse: Warehouse, conn: Connection, month: str, rules: RulesSettings) -> None:
    """Make the month's rows equal to a fresh computation, writing only the differences
    (a nightly batch changes few of a month's coupons). A range of customers at a time: a
    month can hold a coupon for each of a million customers, and neither its coupons nor its
    stored rows need to be in memory at once."""
    coupons = compute_month(conn, month, rules)
    done_upto: int | None = None  # customers up to this id are replaced
    while chunk := list(islice(coupons, _RANGE)):
        last = chunk[-1].customer_id
        _replace_range(warehouse, conn, month, done_upto, last, chunk)
        done_upto = last
    _replace_range(warehouse, conn, month, done_upto, None, [])


def _replace_range(
    warehouse: Warehouse,
    conn: Connection,
    month: str,
    after: int | None,
    upto: int | None,
    coupons: list[Coupon],
) -> None:
    """The month's stored coupons of customers in (after, upto] (None: unbounded) := coupons."""
    t = customer_coupons
    query = select(*(t.c[name] for name in STORED_COLUMNS)).where(t.c.month == month)
    if after is not None:
        query = query.where(t.c.customer_id > after)
    if upto is not None:
        query = query.where(t.c.customer_id <= upto)
    # rows as tuples, not dicts: cheaper by the hundred thousand
    existing = {row.customer_id: tuple(row) for row in conn.execute(query)}
    wanted = {c.customer_id: c.values() for c in coupons}
    gone = sorted(set(existing) - set(wanted))
    for start in range(0, len(gone), _CHUNK):
        conn.execute(
            delete(t).where(t.c.month == month, t.c.customer_id.in_(gone[start : start + _CHUNK]))
        )
    changed = [values for cid, values in wanted.items() if existing.get(cid) != values]
    bulk.upsert(conn, t, STORED_COLUMNS, changed)


def months_to_refresh(
    conn: Connection,
    customers: Iterable[tuple[int, str]],
    rules: RulesSettings,
    rows_removed: bool = True,
) -> set[str]:
    """Every month whose coupons can differ after these (customer, month) mart rows changed.

    rows_removed: whether mart rows can have disappeared (only a correction takes sales
    out); without that, a customer's first month can only move earlier, into a changed month.
    """
    changed: dict[int, str] = {}  # customer -> earliest month changed
    months: set[str] = set()
    for customer_id, month in customers:
        changed[customer_id] = min(month, changed.get(customer_id, month))
        months.add(month)
    if not rules.coupons or not changed:
        return months
    if any(isinstance(r, SpendDropRule) for r in rules.coupons):
        # no month after 9999-12: dates beyond it exist nowhere (rows dated 9999-12-31 could
        # be loaded before the date rules of SPEC section 4)
        months |= {shift_month(m, 1) for m in months if m < LAST_MONTH}
    first_segments = [r.segment for r in rules.coupons if isinstance(r, FirstMonthRule)]
    if not first_segments:
        return months
    # A first month that moved earlier: the customer's first-month coupon, if any, is now
    # wrong (if another rule won that month, losing "first month" changes nothing there).
    t = customer_coupons
    held = conn.execute(
        select(t.c.customer_id, t.c.month).where(
            t.c.segment.in_(first_segments), t.c.month > min(changed.values())
        )
    )
    for customer_id, month in held:
        if customer_id in changed and month > changed[customer_id]:
            months.add(month)
    if rows_removed:
        # A first month that moved later: the new first month may earn a coupon.
        mart = customers_data_mart
        ids = sorted(changed)
        for start in range(0, len(ids), _CHUNK):
            firsts = conn.execute(
                select(mart.c.customer_id, func.min(mart.c.sales_date_month))
                .where(mart.c.customer_id.in_(ids[start : start + _CHUNK]))
                .group_by(mart.c.customer_id)
            )
            for customer_id, first in firsts:
                if first is not None and _label(first) > changed[customer_id]:
                    months.add(_label(first))
    return months


def refresh(
    warehouse: Warehouse,
    conn: Connection,
    changes: MartChanges,
    rules: RulesSettings,
    rows_removed: bool = True,
) -> set[str]:
    """Inside the marts' transaction: recompute the months this batch can have changed."""
    months = months_to_refresh(conn, changes.customers, rules, rows_removed)
    for month in sorted(months):
        replace_month(warehouse, conn, month, rules)
    return months


# --- export -----------------------------------------------------------------------------------
EXPORT_COLUMNS = (
    "code",
    "customer_id",
    "full_name",
    "month",
    "segment",
    "discount_pct",
    "total_sales",
    "reason",
)


def listing(warehouse: Warehouse, month: str) -> list[dict[str, Any]]:
    """The month's coupons with the customer's name, by segment then customer."""
    t, c = customer_coupons, customer
    with warehouse.begin() as conn:
        rows = conn.execute(
            select(t, c.c.first_name, c.c.last_name)
            .select_from(t.outerjoin(c, c.c.customer_id == t.c.customer_id))
            .where(t.c.month == month)
            .order_by(t.c.segment, t.c.customer_id)
        ).fetchall()
    out = []
    for r in rows:
        names = [n for n in (r.first_name, r.last_name) if n]
        record = {name: getattr(r, name) for name in EXPORT_COLUMNS if name != "full_name"}
        record["full_name"] = " ".join(names) if names else None
        out.append(record)
    return out


# Cells a spreadsheet would read as a formula start with one of these (OWASP, "CSV
# injection"); the marketing tool's users open the export in one.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER_COLUMNS = frozenset({"customer_id", "discount_pct", "total_sales"})


def _cell(name: str, value: Any) -> str:
    """A value as its CSV cell: numbers as they are (a negative amount stays a number), text
    starting like a formula prefixed with ' so that a spreadsheet shows it as text."""
    if value is None:
        return ""
    text = str(value)
    if name not in _NUMBER_COLUMNS and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def export_csv(warehouse: Warehouse, month: str, path: Path) -> int:
    """Write the month's coupons as CSV (UTF-8, header row, RFC 4180: CRLF record ends, and
    a field with a quote, comma, CR or LF quoted), readable by its owner only (it names
    customers); returns how many."""
    rows = listing(warehouse, month)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A temporary beside the file, renamed into place: a reader never sees half an export.
    # mkstemp makes it 0600, whatever the umask.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            # CRLF record ends: Python's csv then also quotes a lone CR, which with "\n"
            # ends it would write bare, splitting a record for other CSV readers.
            writer = csv.writer(handle, lineterminator="\r\n")
            writer.writerow(EXPORT_COLUMNS)
            for row in rows:
                writer.writerow([_cell(name, row[name]) for name in EXPORT_COLUMNS])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(rows)
