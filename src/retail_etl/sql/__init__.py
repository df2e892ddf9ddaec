"""SQL shared by every engine: Jinja templates whose few dialect differences are macros.

The templates only ever receive identifiers and integers we generate; values from data go
through registered tables, never through the template text.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Literal

from jinja2 import Environment, StrictUndefined

Dialect = Literal["duckdb", "spark"]

# Patterns are anchored by `matches`; RE2 (DuckDB) and Java (Spark) agree on this subset.
# Spark anchors the end with \z: Java's $ would also match before a final line break.
INTEGER = "[+-]?[0-9]{1,18}"
NUMBER = "[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)"
MONEY = "[+-]?([0-9]{1,16}([.][0-9]{0,2})?|[.][0-9]{1,2})"
ISO_DATE = "[0-9]{4}-[0-9]{2}-[0-9]{2}"


class _Macros:
    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect

    def matches(self, expr: str, pattern: str) -> str:
        if self.dialect == "duckdb":
            return f"regexp_full_match({expr}, '{pattern}')"
        return f"({expr} RLIKE '^(?:{pattern})\\\\z')"

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
            broadcast=macros.broadcast,
            month_start=macros.month_start,
            month_label=macros.month_label,
            INTEGER=INTEGER,
            NUMBER=NUMBER,
            MONEY=MONEY,
            ISO_DATE=ISO_DATE,
            **params,
        )
    )
