"""Coupon suggestions from customer spending: the `customer_coupons` table.

The rules are data (`[[rules.coupons]]` in the config, typed in config.py); this module only
knows the three kinds of test a rule can make: top spenders of the month, spend fallen
against the previous month, first month with a purchase. Each customer gets at most one
coupon per month, from the first rule (in configured order) that matches them. A coupon's
`month` is the month whose spending earned it.

Coupons are recomputed inside the same warehouse transaction as the marts they derive from
(run/commit.py). That costs a little transaction time but means no reader ever sees marts
and coupons that disagree, and a crash can never leave coupons stale with nothing to say
which months need redoing. On MySQL/MariaDB a batch that only adds sales has its months'
spends read beside that transaction, as committed before it, and adds its deltas to them
(SpendsBeforeBatch). Only the months a batch can have changed are recomputed:

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
import hashlib
import logging
import math
import os
import re
import tempfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, case, delete, exists, func, select
from sqlalchemy.orm import aliased

from retail_etl import local_duckdb
from retail_etl.cents import decimals
from retail_etl.config import (
    CouponRule,
    FirstMonthRule,
    RulesSettings,
    SpendDropRule,
    TopSpendersRule,
)
from retail_etl.marts.merge import MartChanges
from retail_etl.warehouse import Warehouse, bulk, select_arrow
from retail_etl.warehouse.schema import customer, customer_coupons, customers_data_mart

log = logging.getLogger("retail_etl.coupons")
DEFAULT_SECRET = b"retail-etl coupon codes: set rules.coupon_secret"
_CHUNK = 500
RANGE_ROWS = 100_000  # coupons computed, compared (MySQL) and written at a time
ZERO = Decimal("0.00")
_PERCENT = pa.decimal128(5, 2)  # discount_pct
LAST_MONTH = "9999-12"


# The customer_coupons columns a computation fills, in the order month_coupons gives them.
STORED_COLUMNS = (
    "month",
    "customer_id",
    "segment",
    "discount_pct",
    "reason",
    "code",
    "total_sales",
)
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
    return str(coupon_codes(secret, pa.array([customer_id]), month, pa.array([segment]))[0])


def coupon_codes(secret: bytes, customer_ids: pa.Array, month: str, segments: pa.Array) -> pa.Array:
    """coupon_code for many customers at once (a month can hold a million coupons): the
    first 60 bits of HMAC-SHA256(secret, "customer_id|month|segment") as base-32 text."""
    numbers = _hmac_prefixes(secret, customer_ids, month, segments) >> np.uint64(4)
    pairs = pa.array(_CODE_PAIRS, pa.string())
    distinct = segments.unique()
    heads = pa.array([_code_prefix(s) + "-" for s in distinct.to_pylist()], pa.string())
    parts = [pc.take(heads, pc.index_in(segments, distinct))]
    for shift in (50, 40, 30, 20, 10, 0):
        index = ((numbers >> np.uint64(shift)) & np.uint64(1023)).astype(np.int64)
        parts.append(pc.take(pairs, pa.array(index)))
    return pc.binary_join_element_wise(*parts, "")


_SHA256_BLOCK = 64  # bytes: HMAC pads (or first hashes) the key to this


def _hmac_prefixes(
    secret: bytes, customer_ids: pa.Array, month: str, segments: pa.Array
) -> np.ndarray:
    """The first 8 bytes of each HMAC-SHA256 (RFC 2104), as big-endian uint64, computed by
    DuckDB's sha256 over blobs: Python's hmac, one call per code, took 3 times as long."""
    key = hashlib.sha256(secret).digest() if len(secret) > _SHA256_BLOCK else secret
    key = key.ljust(_SHA256_BLOCK, b"\0")
    inner, outer = bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)
    messages = pa.table({"customer_id": customer_ids, "segment": segments})
    with local_duckdb.connect() as db:
        db.register("messages", messages)
        digests = db.execute(
            """SELECT ('0x' || left(sha256($outer || unhex(sha256($inner || encode(
                   customer_id::VARCHAR || '|' || $month || '|' || segment)))), 16))::UBIGINT
               FROM messages""",
            {"inner": inner, "outer": outer, "month": month},
        ).fetchnumpy()
    return next(iter(digests.values())).astype(np.uint64)


def _number(value: Decimal) -> str:
    """A Decimal without exponent or trailing zeros: 10, 0.5, 12.25."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):,.2f}"


@dataclass(frozen=True)
class Spends:
    """A month's spending in cents: every customer of the month or of the month before, in
    customer order. Arrays, not objects: a month can hold a million customers."""

    customer_id: np.ndarray  # int64, ascending
    cents: np.ndarray  # int64: this month's spend (0 without a mart row)
    previous_cents: np.ndarray  # int64: the previous calendar month's (0 without a row)
    in_month: np.ndarray  # bool: a mart row this month
    returning: np.ndarray  # bool: a mart row in an earlier month

    @classmethod
    def of(
        cls,
        current: Mapping[int, Decimal],
        previous: Mapping[int, Decimal],
        returning: Collection[int],
    ) -> Spends:
        """From customer -> spend mappings (spends with at most two decimals)."""
        ids = sorted(set(current) | set(previous))
        return cls(
            np.array(ids, dtype=np.int64),
            np.array([_cents(current.get(i, ZERO)) for i in ids], dtype=np.int64),
            np.array([_cents(previous.get(i, ZERO)) for i in ids], dtype=np.int64),
            np.array([i in current for i in ids], dtype=bool),
            np.array([i in returning for i in ids], dtype=bool),
        )


def _cents(value: Decimal) -> int:
    return int(value * 100)


def _at_least_cents(value: Decimal) -> int:
    """The smallest whole number of cents that is at least value."""
    return math.ceil(value * 100)


def _money_texts(cents: np.ndarray) -> list[str]:
    """1,234.50 from 123450 (as _money formats a Decimal), for each of an array's cents."""
    whole, part = np.divmod(np.abs(cents), 100)
    texts = [f"{w:,}.{p:02d}" for w, p in zip(whole.tolist(), part.tolist(), strict=True)]
    for index in np.flatnonzero(cents < 0).tolist():
        texts[index] = "-" + texts[index]
    return texts


def _at_most(cents: np.ndarray, before: np.ndarray, share: Fraction) -> np.ndarray:
    """cents <= before x share, exactly (Python integers where int64 could overflow)."""
    limit = np.iinfo(np.int64).max // max(share.denominator, share.numerator, 1)
    if len(cents) == 0 or max(int(np.abs(cents).max()), int(np.abs(before).max())) < limit:
        return cents * share.denominator <= before * share.numerator
    return np.array(
        [
            c * share.denominator <= b * share.numerator
            for c, b in zip(cents.tolist(), before.tolist(), strict=True)
        ],
        dtype=bool,
    )


def top_threshold(spends: np.ndarray, share: Decimal) -> int | None:
    """The lowest spend (cents) still in the top `share` of spenders (spend > 0), or None.

    k = ceil(share x spenders); a customer qualifies when their spend is at least the k-th
    highest, so everyone tied with the k-th customer qualifies too.
    """
    positive = np.sort(spends[spends > 0])
    k = math.ceil(share * len(positive))
    return int(positive[len(positive) - k]) if k >= 1 else None


def month_coupons(
    month: str, spends: Spends, rules: Sequence[CouponRule], secret: bytes = DEFAULT_SECRET
) -> pa.Table:
    """The month's coupons, in customer order, as customer_coupons rows (STORED_COLUMNS):
    each customer gets the first rule (in order) that matches them, or none."""
    return _render(month, _choose(spends, rules), rules, secret)


@dataclass(frozen=True)
class _Chosen:
    """The customers who get a coupon in a month and by which rule, in customer order."""

    customer_id: np.ndarray  # int64
    rule: np.ndarray  # int64: index of the rule
    cents: np.ndarray  # int64: this month's spend
    previous_cents: np.ndarray  # int64: the previous month's
    rank: np.ndarray  # int64: 1 + the customers of the month who spent more
    spenders: int  # customers of the month who spent more than 0

    def __len__(self) -> int:
        return len(self.customer_id)

    def slice(self, start: int, stop: int) -> _Chosen:
        part = slice(start, stop)
        return _Chosen(
            self.customer_id[part],
            self.rule[part],
            self.cents[part],
            self.previous_cents[part],
            self.rank[part],
            self.spenders,
        )


def _choose(spends: Spends, rules: Sequence[CouponRule]) -> _Chosen:
    """Each customer's first matching rule, by arrays: cheap next to writing the texts."""
    s = spends
    rule_of = np.full(len(s.customer_id), -1, dtype=np.int64)
    spent = s.cents[s.in_month]
    ascending = np.sort(spent)
    for index, rule in enumerate(rules):
        free = rule_of == -1
        if isinstance(rule, TopSpendersRule):
            threshold = top_threshold(spent, rule.share)
            if threshold is None:
                continue
            match = free & s.in_month & (s.cents > 0) & (s.cents >= threshold)
            match &= s.cents >= _at_least_cents(rule.min_spend)
        elif isinstance(rule, SpendDropRule):
            before = s.previous_cents
            match = free & (before > 0) & (before >= _at_least_cents(rule.min_previous_spend))
            match &= _at_most(s.cents, before, 1 - Fraction(rule.drop_share))
        else:
            match = free & s.in_month & ~s.returning & (s.cents >= _at_least_cents(rule.min_spend))
        rule_of[match] = index
    chosen = np.flatnonzero(rule_of >= 0)
    cents = s.cents[chosen]
    return _Chosen(
        s.customer_id[chosen],
        rule_of[chosen],
        cents,
        s.previous_cents[chosen],
        1 + len(ascending) - np.searchsorted(ascending, cents, "right"),
        int(np.count_nonzero(spent > 0)),
    )


def _render(month: str, chosen: _Chosen, rules: Sequence[CouponRule], secret: bytes) -> pa.Table:
    """The chosen customers' coupons as customer_coupons rows: reasons and codes."""
    c = chosen
    prev_label = shift_month(month, -1)
    # each rule's reasons for its rows at once: a month can hold a million coupons
    reasons = np.empty(len(c), dtype=object)
    for index, rule in enumerate(rules):
        rows = np.flatnonzero(c.rule == index)
        cents = c.cents[rows]
        spent = _money_texts(cents)
        if isinstance(rule, TopSpendersRule):
            head = f"top {_number(rule.share * 100)}% of {c.spenders} spenders in {month}: rank "
            texts = [
                f"{head}{rank}, spent {money}"
                for rank, money in zip(c.rank[rows].tolist(), spent, strict=True)
            ]
        elif isinstance(rule, SpendDropRule):
            prior = c.previous_cents[rows]
            fell = ((prior - cents) * 200 + prior) // (2 * prior)  # percent, half up
            texts = [
                f"spend fell {pct}% from {before} in {prev_label} to {money} in {month}"
                for pct, before, money in zip(
                    fell.tolist(), _money_texts(prior), spent, strict=True
                )
            ]
        else:
            texts = [f"first purchases in {month}: spent {money}" for money in spent]
        reasons[rows] = [text[:REASON_LENGTH] for text in texts]
    take = pa.array(c.rule, pa.int64())
    ids = pa.array(c.customer_id, pa.int64())
    segments = pc.take(pa.array([r.segment for r in rules], pa.string()), take)
    return pa.table(
        {
            "month": pa.array([month] * len(c), pa.string()),
            "customer_id": ids,
            "segment": segments,
            "discount_pct": pc.take(pa.array([r.discount_pct for r in rules], _PERCENT), take),
            "reason": pa.array(reasons.tolist(), pa.string()),
            "code": coupon_codes(secret, ids, month, segments),
            "total_sales": decimals(c.cents),
        }
    )


def coupons_of(
    month: str,
    current: Mapping[int, Decimal],
    previous: Mapping[int, Decimal],
    returning: set[int],
    rules: Sequence[CouponRule],
    secret: bytes = DEFAULT_SECRET,
) -> Iterator[Coupon]:
    """month_coupons from customer -> spend mappings, as Coupons in customer order.

    current: customer -> spend this month (every customers_data_mart row of the month);
    previous: customer -> spend in the previous calendar month;
    returning: customers of this month with a mart row in any earlier month.
    """
    table = month_coupons(month, Spends.of(current, previous, returning), rules, secret)
    for row in table.to_pylist():
        yield Coupon(
            row["customer_id"],
            row["month"],
            row["segment"],
            row["discount_pct"],
            row["reason"],
            row["code"],
            row["total_sales"],
        )


# --- reading the marts, writing the table -----------------------------------------------------
def secret_of(rules: RulesSettings) -> bytes:
    if rules.coupon_secret is None:
        return DEFAULT_SECRET
    return rules.coupon_secret.get_secret_value().encode("utf-8")


def _month_spends(conn: Connection, label: str, returning: bool = False) -> tuple[np.ndarray, ...]:
    """A month's customer ids (sorted), their cents and, when asked, whether each has a mart
    row in an earlier month (by the primary key, in the same read: reading a million
    returning customers apart, row by row, took 6 s more on MariaDB)."""
    mart = customers_data_mart
    first_day = month_start(label)
    columns: list[Any] = [mart.c.customer_id, mart.c.total_cents]
    if returning:
        earlier = aliased(mart)
        columns.append(
            case(
                (
                    exists().where(
                        earlier.c.customer_id == mart.c.customer_id,
                        earlier.c.sales_date_month < first_day,
                    ),
                    1,
                ),
                else_=0,
            ).label("has_earlier_row")
        )
    rows = select_arrow(
        conn,
        select(*columns).where(mart.c.sales_date_month == first_day),
        key=mart.c.customer_id,  # sorted below: an ORDER BY would sort them twice
    )
    order = np.argsort(rows["customer_id"].to_numpy(), kind="stable")
    return tuple(column.to_numpy()[order] for column in rows.columns)


def _spends(conn: Connection, month: str, rules: RulesSettings) -> Spends | None:
    """The month's Spends as the marts say now; None when the month has no sales loaded."""
    ids, cents, *flags = _month_spends(conn, month, returning=_has(rules, FirstMonthRule))
    if _has(rules, SpendDropRule):
        prev_ids, prev_cents = _month_spends(conn, shift_month(month, -1))
    else:
        prev_ids, prev_cents = _NO_IDS, _NO_IDS
    return _assemble(ids, cents, flags[0] == 1 if flags else None, prev_ids, prev_cents)


_NO_IDS = np.empty(0, np.int64)


def _has(rules: RulesSettings, kind: type[CouponRule]) -> bool:
    """Whether any coupon rule is of this kind."""
    return any(isinstance(r, kind) for r in rules.coupons)


def _assemble(
    ids: np.ndarray,
    cents: np.ndarray,
    returning: np.ndarray | None,
    prev_ids: np.ndarray,
    prev_cents: np.ndarray,
) -> Spends | None:
    """Spends from a month's sorted ids and cents (returning: a flag per id, None when no
    rule asks) and the previous month's; None when the month has no sales loaded."""
    if not len(ids):
        return None  # no sales loaded for the month (yet): nothing to judge spending by
    # both are sorted and unique: a merge, not np.union1d's hashing (1 s a million ids)
    merged = np.sort(np.concatenate([ids, prev_ids]), kind="stable")
    every = merged[np.concatenate([[True], merged[1:] != merged[:-1]])]
    in_month = np.isin(every, ids, assume_unique=True)
    at = np.searchsorted(every, ids)
    this = np.zeros(len(every), np.int64)
    this[at] = cents
    before = np.zeros(len(every), np.int64)
    before[np.searchsorted(every, prev_ids)] = prev_cents
    flags = np.zeros(len(every), bool)
    if returning is not None:
        flags[at] = returning
    return Spends(every, this, before, in_month, flags)


class SpendsBeforeBatch:
    """The spends of the months a batch changes, as committed before it, read on a connection
    of their own while the batch's transaction merges it (started on construction); after the
    merge a month's spends are these plus the batch's deltas, so the transaction reads
    nothing of them itself. MariaDB runs one transaction's statements one after another on
    one thread, and the month's read inside it (a million customers: about 3 s of the
    commit) was the one step of that chain that needs nothing the batch wrote.

    Exact only for a batch that adds sales: every delta adds rows (sales_rows > 0), so no
    mart row goes away and a customer's earlier months only grow (spends_before_batch
    decides). The months covered: the changed ones and, for spend-drop rules, each next
    month; any other month refresh recomputes is read inside the transaction as before."""

    def __init__(
        self, warehouse: Warehouse, customer_deltas: pa.Table, rules: RulesSettings
    ) -> None:
        self._first_month = _has(rules, FirstMonthRule)
        self._spend_drop = _has(rules, SpendDropRule)
        self._deltas: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        month_column = customer_deltas["sales_date_month"]
        for value in pc.unique(month_column).to_pylist():
            # the deltas are in key order: each month's customers ascending
            of_month = customer_deltas.filter(pc.equal(month_column, value))
            self._deltas[_label(value)] = (
                of_month["customer_id"].to_numpy().astype(np.int64),
                of_month["total_cents"].to_numpy().astype(np.int64),
            )
        months = set(self._deltas)
        if self._spend_drop:
            months |= {shift_month(m, 1) for m in months if m < LAST_MONTH}
        self.months = frozenset(months)
        to_read = set(months)
        if self._spend_drop:
            to_read |= {shift_month(m, -1) for m in months}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="spends-before")
        self._read = self._pool.submit(self._read_before, warehouse, sorted(to_read))
        self._failed = False

    def _read_before(
        self, warehouse: Warehouse, months: list[str]
    ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, np.ndarray]]:
        """Each month's (ids, cents) and, for first-month rules, the customers with a row
        before each covered month that will have sales: one snapshot of what is committed
        (the batch's transaction has not committed, and its locks never block such reads)."""
        with warehouse.begin(snapshot=True) as conn:
            before = {}
            for month in months:
                ids, cents = _month_spends(conn, month)
                before[month] = (ids.astype(np.int64), cents.astype(np.int64))
            earlier = {
                m: _customers_before(conn, m)
                for m in sorted(self.months)
                if self._first_month and (len(before[m][0]) or m in self._deltas)
            }
        return before, earlier

    def covers(self, month: str) -> bool:
        """Whether after(month) can be used: a covered month, read without a fault. A read
        that failed is logged and the transaction reads the month itself."""
        if month not in self.months or self._failed:
            return False
        try:
            self._read.result()
        except Exception as exc:  # an optimisation: never the batch's fault
            log.warning("reading spends beside the commit failed (%s): read in it instead", exc)
            self._failed = True
            return False
        return True

    def after(self, month: str) -> Spends | None:
        """The month's Spends once the batch is merged (a covered month): _spends' result."""
        before, earlier = self._read.result()
        ids, cents = _added(before[month], self._deltas.get(month))
        returning = None
        if self._first_month and len(ids):
            late = [d[0] for m, d in self._deltas.items() if m < month]  # rows the batch adds
            flagged = np.concatenate([earlier[month], *late])
            returning = np.isin(ids, flagged)
        prev_ids, prev_cents = _NO_IDS, _NO_IDS
        if self._spend_drop:
            previous = shift_month(month, -1)
            prev_ids, prev_cents = _added(before[previous], self._deltas.get(previous))
        return _assemble(ids, cents, returning, prev_ids, prev_cents)

    def close(self) -> None:
        """Wait for the read (a transaction that failed before using it leaves it running)."""
        self._pool.shutdown(wait=True)


def _added(
    before: tuple[np.ndarray, np.ndarray], delta: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ids and cents: before's plus delta's, summed per customer."""
    if delta is None or not len(delta[0]):
        return before
    ids = np.concatenate([before[0], delta[0]])
    order = np.argsort(ids, kind="stable")  # two sorted runs: a merge
    ids, cents = ids[order], np.concatenate([before[1], delta[1]])[order]
    starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
    return ids[starts], np.add.reduceat(cents, starts)


def _customers_before(conn: Connection, month: str) -> np.ndarray:
    """The ids of the customers with a mart row before the month: one pass over the
    primary key in customer order, never a temporary table (a DISTINCT over the earlier
    months by the month index took three times as long on MariaDB)."""
    mart = customers_data_mart
    rows = select_arrow(
        conn,
        select(mart.c.customer_id)
        .group_by(mart.c.customer_id)
        .having(func.min(mart.c.sales_date_month) < month_start(month)),
        key=mart.c.customer_id,
    )
    return rows["customer_id"].to_numpy().astype(np.int64)


@contextmanager
def spends_before_batch(
    warehouse: Warehouse, customer_deltas: pa.Table, rules: RulesSettings
) -> Iterator[SpendsBeforeBatch | None]:
    """A SpendsBeforeBatch for the batch's transaction to use, or None: on MySQL/MariaDB, for
    a batch that only adds sales. SQLite reads a month in under a second and its reads hold
    the GIL the merge's thread needs."""
    if (
        warehouse.dialect == "sqlite"
        or not rules.coupons
        or customer_deltas.num_rows == 0
        or pc.min(customer_deltas["sales_rows"]).as_py() <= 0
    ):
        yield None
        return
    before = SpendsBeforeBatch(warehouse, customer_deltas, rules)
    try:
        yield before
    finally:
        before.close()


def replace_month(
    warehouse: Warehouse,
    conn: Connection,
    month: str,
    rules: RulesSettings,
    before: SpendsBeforeBatch | None = None,
) -> None:
    """Make the month's stored coupons equal to a fresh computation, writing only the rows
    that differ (a nightly batch changes few of a month's coupons). before: the month's
    spends read beside the transaction, when it covers the month."""
    if not rules.coupons:
        spends = None
    elif before is not None and before.covers(month):
        spends = before.after(month)
    else:
        spends = _spends(conn, month, rules)
    t = customer_coupons
    in_month = t.c.month == month
    if spends is None:
        conn.execute(delete(t).where(in_month))
        return
    chosen = _choose(spends, rules.coupons)
    secret = secret_of(rules)
    ranges = (
        _render(month, chosen.slice(start, start + RANGE_ROWS), rules.coupons, secret)
        for start in range(0, len(chosen), RANGE_ROWS)
    )
    _write_ranges(conn, month, ranges)
    # Every wanted coupon is stored now: the month holds coupons no longer earned only when
    # it holds more rows than wanted. Counted rather than read: day 30 of a month over a
    # million customers read a million stored ids to find none.
    held = conn.execute(select(func.count()).select_from(t).where(in_month)).scalar_one()
    if held == len(chosen):
        return
    stored_ids = select_arrow(conn, select(t.c.customer_id).where(in_month), key=t.c.customer_id)
    gone = pc.filter(
        stored_ids["customer_id"],
        pc.invert(pc.is_in(stored_ids["customer_id"], pa.array(chosen.customer_id))),
    ).to_pylist()
    for start in range(0, len(gone), _CHUNK):
        conn.execute(delete(t).where(in_month, t.c.customer_id.in_(gone[start : start + _CHUNK])))


def _write_ranges(conn: Connection, month: str, ranges: Iterator[pa.Table]) -> None:
    """Upsert the month's coupons a range of customers at a time, each range written on a
    thread while the next one is computed: the warehouse stores one while Python writes the
    other's texts and codes (a month's million coupons: 3 s of texts and codes beside 9 to
    13 s of writing). The connection is used by one thread at a time, and nothing of it is
    left running when this returns or raises.

    Where the warehouse's upsert cannot skip unchanged rows itself (MySQL), each range is
    compared with the stored one and only its differing rows are written: a range at a
    time, a month's million coupons are not held beside the million stored ones."""
    t = customer_coupons
    compare = not bulk.upsert_skips_unchanged(conn)

    def write(part: pa.Table) -> None:
        if compare:
            first, last = part["customer_id"][0].as_py(), part["customer_id"][-1].as_py()
            stored = select_arrow(
                conn,
                select(*(t.c[name] for name in STORED_COLUMNS)).where(
                    t.c.month == month, t.c.customer_id.between(first, last)
                ),
                key=t.c.customer_id,
            )
            part = _differing(part, stored)
        bulk.upsert(conn, t, part.select(list(STORED_COLUMNS)))

    with ThreadPoolExecutor(1, thread_name_prefix="coupons") as writer:
        writing: Future[None] | None = None
        for part in ranges:
            if writing is not None:
                writing.result()  # raises what writing the previous range raised
            writing = writer.submit(write, part)
        if writing is not None:
            writing.result()


def _differing(wanted: pa.Table, stored: pa.Table) -> pa.Table:
    """The rows of wanted that stored does not hold as they are (new or changed)."""
    if not stored.num_rows:
        return wanted
    old = stored.rename_columns(
        [f"{c}_old" if c != "customer_id" else c for c in stored.column_names]
    )
    joined = wanted.join(old, "customer_id", join_type="left outer")
    same = None
    for name in STORED_COLUMNS:
        if name == "customer_id":
            continue
        equal = pc.fill_null(pc.equal(joined[name], joined[f"{name}_old"]), False)
        same = equal if same is None else pc.and_(same, equal)
    return joined.filter(pc.invert(same)).select(list(wanted.column_names))


def months_to_refresh(
    conn: Connection,
    customers: pa.Table,
    rules: RulesSettings,
    rows_removed: bool = True,
) -> set[str]:
    """Every month whose coupons can differ after these customers_data_mart rows changed
    (customers: their customer_id and sales_date_month).

    rows_removed: whether mart rows can have disappeared (only a correction takes sales
    out); without that, a customer's first month can only move earlier, into a changed month.
    """
    months = {_label(m) for m in pc.unique(customers["sales_date_month"]).to_pylist()}
    if not rules.coupons or not months:
        return months
    if _has(rules, SpendDropRule):
        # no month after 9999-12: dates beyond it exist nowhere (rows dated 9999-12-31 could
        # be loaded before the date rules of SPEC section 4)
        months |= {shift_month(m, 1) for m in months if m < LAST_MONTH}
    first_segments = [r.segment for r in rules.coupons if isinstance(r, FirstMonthRule)]
    if not first_segments:
        return months
    # A first month that moved earlier: the customer's first-month coupon, if any, is now
    # wrong (if another rule won that month, losing "first month" changes nothing there).
    # The coupons held after the batch's first month are read first: usually none, and then
    # no customer's earliest changed month is needed (a million customers: 1 s).
    t = customer_coupons
    first_changed = _label(pc.min(customers["sales_date_month"]).as_py())
    held = select_arrow(
        conn,
        select(t.c.customer_id, t.c.month).where(
            t.c.segment.in_(first_segments), t.c.month > first_changed
        ),
    )
    if held.num_rows:
        ids = held["customer_id"].cast(customers["customer_id"].type)
        holders = customers.filter(pc.is_in(customers["customer_id"], ids))
        later = held.join(_earliest_changed(holders), "customer_id")
        later = later.filter(pc.greater(later["month"], later["changed"]))
        months |= set(pc.unique(later["month"]).to_pylist())
    if rows_removed:
        # A first month that moved later: the new first month may earn a coupon.
        mart = customers_data_mart
        earliest = _earliest_changed(customers)
        changed = dict(
            zip(earliest["customer_id"].to_pylist(), earliest["changed"].to_pylist(), strict=True)
        )
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


def _earliest_changed(customers: pa.Table) -> pa.Table:
    """Each customer's earliest changed month, as 'YYYY-MM' (customer_id, changed)."""
    earliest = customers.group_by("customer_id", use_threads=False).aggregate(
        [("sales_date_month", "min")]
    )
    return pa.table(
        {
            "customer_id": earliest["customer_id"],
            "changed": pc.strftime(earliest["sales_date_month_min"], "%Y-%m"),
        }
    )


def refresh(
    warehouse: Warehouse,
    conn: Connection,
    changes: MartChanges,
    rules: RulesSettings,
    rows_removed: bool = True,
    before: SpendsBeforeBatch | None = None,
) -> set[str]:
    """Inside the marts' transaction: recompute the months this batch can have changed."""
    months = months_to_refresh(conn, changes.customers, rules, rows_removed)
    for month in sorted(months):
        replace_month(warehouse, conn, month, rules, before)
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
