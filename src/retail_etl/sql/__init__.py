"""SQL shared by every engine: Jinja templates whose few dialect differences are macros.

The templates only ever receive identifiers, integers, dates and decimals we generate or that
the typed configuration holds; values from data go through registered tables, never through
the template text.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Literal

from jinja2 import Environment, StrictUndefined

from retail_etl.config import MAX_STORABLE_AMOUNT
from retail_etl.engines.base import PRODUCT_NAME_LENGTH

Dialect = Literal["duckdb", "spark"]

# Patterns are anchored by `matches`; RE2 (DuckDB) and Java (Spark) agree on this subset.
# Spark anchors the end with \z: Java's $ would also match before a final line break.
INTEGER = "[+-]?[0-9]{1,18}"
NUMBER = "[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)"
MONEY = "[+-]?([0-9]{1,16}([.][0-9]{0,2})?|[.][0-9]{1,2})"
ISO_DATE = "[0-9]{4}-[0-9]{2}-[0-9]{2}"

# What a strict cast accepts: the pattern (after trimming) and a value the type can hold.
# DuckDB first tries a cheap exact test: the text is the canonical spelling of its own cast
# (e.g. "4.80", "2024-03-30"), which only values the pattern accepts can be (the guard rules
# out the few canonical spellings it does not: 19 digits, five-digit years). Anything else,
# including every rejected value, goes through the pattern as before. The regular expressions
# cost about 3x the whole CSV parse; the canonical test about 1/3 of it. In Spark the same
# shortcut (Java's BigDecimal and date formatting) made the engine 1.5x slower, so Spark keeps
# the patterns alone.
STRICT_TYPES = {
    "integer": ("BIGINT", INTEGER, "{v} BETWEEN -999999999999999999 AND 999999999999999999"),
    "money": ("DECIMAL(18, 2)", MONEY, "TRUE"),
    "date": ("DATE", ISO_DATE, "length({text}) = 10"),
}


class _Macros:
    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect

    def matches(self, expr: str, pattern: str) -> str:
        if self.dialect == "duckdb":
            return f"regexp_full_match({expr}, '{pattern}')"
        return f"({expr} RLIKE '^(?:{pattern})\\\\z')"

    def strict_cast(self, expr: str, kind: str) -> str:
        """expr (text) as the type of kind, or NULL when it does not match kind's pattern."""
        sql_type, pattern, guard = STRICT_TYPES[kind]
        by_pattern = (
            f"WHEN {self.matches(f'trim({expr})', pattern)} "
            f"THEN TRY_CAST(trim({expr}) AS {sql_type})"
        )
        if self.dialect == "spark":
            return f"CASE {by_pattern} END"
        value = f"TRY_CAST({expr} AS {sql_type})"
        canonical = f"CAST({value} AS VARCHAR) = {expr} AND {guard.format(v=value, text=expr)}"
        return f"CASE WHEN {canonical} THEN {value} {by_pattern} END"

    def month_start(self, expr: str) -> str:
        if self.dialect == "duckdb":
            return f"CAST(date_trunc('month', {expr}) AS DATE)"
        return f"trunc({expr}, 'MM')"

    def broadcast(self, *aliases: str) -> str:
        """A join hint: Spark ships these (small) relations to every task; DuckDB decides alone."""
        if self.dialect == "duckdb":
            return ""
        return f"/*+ BROADCAST({', '.join(aliases)}) */"

    def month_label(self, expr: str) -> str:
        if self.dialect == "duckdb":
            return f"strftime({expr}, '%Y-%m')"
        return f"date_format({expr}, 'yyyy-MM')"


@cache
def _environment() -> Environment:
    return Environment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)


def render(name: str, dialect: Dialect, **params: object) -> str:
    """Render sql/<name>.sql for a dialect."""
    text = files(__package__).joinpath(f"{name}.sql").read_text(encoding="utf-8")
    macros = _Macros(dialect)
    return (
        _environment()
        .from_string(text)
        .render(
            dialect=dialect,
            matches=macros.matches,
            strict_cast=macros.strict_cast,
            broadcast=macros.broadcast,
            month_start=macros.month_start,
            month_label=macros.month_label,
            NUMBER=NUMBER,
            MAX_STORABLE_AMOUNT=MAX_STORABLE_AMOUNT,
            product_name_length=PRODUCT_NAME_LENGTH,
            **params,
        )
    )
