"""Server-side SVG charts: well-formed, proportional, and text from data escaped."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest

from retail_etl.reports import charts, money

D = Decimal
SVG = "{http://www.w3.org/2000/svg}"
NASTY = "<script>alert(\"x\")</script> & 'co'"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_bar_chart_is_proportional_and_escaped() -> None:
    svg = charts.bar_chart([(NASTY, D("100")), ("Milk", D("50"))], f"title {NASTY}", money)
    root = parse(svg)  # well-formed XML, so nothing leaked out of an attribute or text
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    bars = [r for r in root.iter(f"{SVG}rect")]
    assert len(bars) == 2
    assert float(bars[0].get("width", 0)) == pytest.approx(2 * float(bars[1].get("width", 0)))
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "100.00" in texts and "50.00" in texts
    assert root.get("aria-label") == f"title {NASTY}"
    assert root.find(f"{SVG}title").text == f"title {NASTY}"  # type: ignore[union-attr]


def test_long_labels_are_shortened_but_kept_whole_in_the_tooltip() -> None:
    label = "Extra Virgin Olive Oil, Cold Pressed, 750 ml bottle"
    root = parse(charts.bar_chart([(label, D("1"))], "t"))
    assert any(t.text == charts.short(label) for t in root.iter(f"{SVG}text"))
    assert len(charts.short(label)) == charts.LABEL_CHARS
    assert any((t.text or "").startswith(label) for t in root.iter(f"{SVG}title"))


def test_highlighted_bars() -> None:
    root = parse(
        charts.bar_chart([("a", 3), ("b", 2), ("c", 3)], "t", highlight=[True, False, True])
    )
    fills = [r.get("fill") for r in root.iter(f"{SVG}rect")]
    assert fills == [charts.HIGHLIGHT, charts.BAR, charts.HIGHLIGHT]


def test_line_chart_draws_each_series_with_gaps() -> None:
    svg = charts.line_chart(
        ["2024-01", "2024-02", "2024-03"],
        [("Store 1", [D("10"), D("20"), D("30")]), (NASTY, [None, D("5"), D("15")])],
        "trend",
        money,
    )
    root = parse(svg)
    lines = list(root.iter(f"{SVG}polyline"))
    assert len(lines) == 2
    assert [len(line.get("points", "").split()) for line in lines] == [3, 2]
    assert len(list(root.iter(f"{SVG}circle"))) == 5
    # rising values are drawn higher (smaller y)
    ys = [float(p.split(",")[1]) for p in lines[0].get("points", "").split()]
    assert ys[0] > ys[1] > ys[2]
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_single_point_line_chart() -> None:
    root = parse(charts.line_chart(["2024-01"], [("Store 1", [D("10")])], "t"))
    assert not list(root.iter(f"{SVG}polyline")) and len(list(root.iter(f"{SVG}circle"))) == 1


def test_column_chart() -> None:
    root = parse(charts.column_chart([("0–10", 4), ("10–20", 0), ("20–30", 2)], "hist"))
    heights = [float(r.get("height", 0)) for r in root.iter(f"{SVG}rect")]
    assert len(heights) == 3 and heights[0] == pytest.approx(2 * heights[2])
    # counts: whole-number axis labels only, even for small counts
    small = parse(charts.column_chart([("a", 1), ("b", 3)], "hist"))
    labels = [t.text for t in small.iter(f"{SVG}text") if t.get("text-anchor") == "end"]
    assert labels == ["0", "1", "2", "3"]


@pytest.mark.parametrize(
    "chart",
    [
        lambda: charts.bar_chart([], "t"),
        lambda: charts.column_chart([], "t"),
        lambda: charts.line_chart([], [], "t"),
        lambda: charts.line_chart(["a"], [("s", [None])], "t"),
    ],
)
def test_empty_charts_say_so(chart) -> None:  # type: ignore[no-untyped-def]
    svg = chart()
    parse(svg)
    assert "no data" in svg


def test_axis_helpers() -> None:
    assert charts.nice_step(1000) == 200
    assert charts.nice_step(37) == 10
    assert charts.nice_step(0.9) == 0.2
    assert [charts.compact(v) for v in (D("950"), D("1200"), D("3400000"), D("12.5"))] == [
        "950",
        "1.2k",
        "3.4M",
        "12.50",
    ]


def test_money() -> None:
    assert [money(v) for v in (D("1234.5"), D("0"), D("-3.456"), 7, None)] == [
        "1,234.50",
        "0.00",
        "-3.46",
        "7.00",
        "–",
    ]
    assert re.fullmatch(r"[\d,]+\.\d\d", money(D("1234567.891")))
