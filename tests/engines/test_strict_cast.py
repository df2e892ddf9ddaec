"""The DuckDB engine's shortcut for typing values (a text that is the canonical spelling of its
own cast) accepts exactly what the row rules' patterns accept, with the same value."""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retail_etl import sql

TRICKY = [
    "1",
    "+1",
    "-1",
    "007",
    " 42 ",
    "1_000",
    "1e3",
    "1E3",
    "0x10",
    "0b1",
    "1.0",
    "1.",
    ".5",
    "4.80",
    "4.8",
    "4.805",
    "-0",
    "-0.00",
    "999999999999999999",
    "1000000000000000000",
    "-999999999999999999",
    "9223372036854775807",
    "-9223372036854775808",
    "2024-03-30",
    "2024-3-30",
    "2024-02-30",
    "10000-01-01",
    "0999-01-01",
    "infinity",
    "-infinity",
    "epoch",
    "2024-03-30 10:00",
    "20240330",
    "",
    " ",
    "nan",
    "inf",
    "1,5",
    "١٢",
    "99999999999999999.99",
    "9999999999999999.99",
    "-9999999999999999.99",
]


def _both(con: duckdb.DuckDBPyConnection, kind: str, values: list[str]) -> list[tuple]:
    sql_type, pattern, _guard = sql.STRICT_TYPES[kind]
    shortcut = sql._Macros("duckdb").strict_cast("v", kind)
    reference = (
        f"CASE WHEN regexp_full_match(trim(v), '{pattern}') "
        f"THEN TRY_CAST(trim(v) AS {sql_type}) END"
    )
    return con.execute(
        f"SELECT v, {shortcut} AS fast, {reference} AS ref FROM (SELECT unnest($1) AS v)",
        [values],
    ).fetchall()


@pytest.mark.parametrize("kind", sorted(sql.STRICT_TYPES))
def test_the_shortcut_agrees_with_the_pattern_on_tricky_values(kind: str) -> None:
    rows = _both(duckdb.connect(), kind, TRICKY)
    assert [(v, fast) for v, fast, _ in rows] == [(v, ref) for v, _, ref in rows]
    accepted = {v for v, fast, _ in rows if fast is not None}
    assert accepted, "some tricky values are valid"


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.text(alphabet="0123456789+-._eExXbB :T", max_size=22), max_size=50))
def test_the_shortcut_agrees_with_the_pattern_on_any_text(values: list[str]) -> None:
    con = duckdb.connect()
    for kind in sql.STRICT_TYPES:
        rows = _both(con, kind, values)
        assert [fast for _, fast, _ in rows] == [ref for _, _, ref in rows], kind
