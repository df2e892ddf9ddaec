"""The reports as a person sees them: opened in a real headless Chromium, charts rendered,
no console error, nothing fetched, text from data shown as text, readable on a laptop.

Needs Debian's `chromium` (make test installs it); skipped locally without it, fails in CI.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from conftest import Env, csv_text, need
from headless import Chromium, find_chromium
from sqlalchemy import update

from retail_etl import reports
from retail_etl.tools.generate import generate
from retail_etl.warehouse.schema import customer

XSS_PRODUCT = "<script>alert(1)</script>"
XSS_NAME = '<img src=x onerror="alert(2)">'
CHART_SHAPES = "rect, polyline, circle"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    binary = find_chromium()
    need(binary is not None, "Chromium not installed (apt-get install chromium; make test does)")
    try:
        import websocket  # noqa: F401
    except ImportError:
        need(False, "websocket-client not installed (pip install -e '.[dev]')")
    assert binary is not None
    chromium = Chromium(binary, tmp_path / "chromium-profile")
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def report_files(embedded: Env, tmp_path: Path) -> dict[str, Path]:
    env = embedded
    with env.warehouse.begin() as conn:
        conn.execute(
            update(customer).where(customer.c.customer_id == 3).values(first_name=XSS_NAME)
        )
    for month in (date(2024, 1, 8), date(2024, 2, 8), date(2024, 3, 4)):
        generate(env.store, env.warehouse, env.landing, month, 2, 150, 4, seed=month.month)
    env.land(
        "extra/2024-03-05.csv",
        csv_text(
            f'3,1,"{XSS_PRODUCT}",2024-03-05,2,4000.00,1,4000.00',
            "1,1,Whole Milk 1L,2024-03-05,2,1.19,0,0",  # rejected: quantity
        ),
    )
    env.run()
    return {
        "monthly": reports.write(
            reports.monthly_html(env.settings, "2024-03"), tmp_path / "monthly.html"
        ),
        "daily": reports.write(
            reports.daily_html(env.settings, date(2024, 3, 5)), tmp_path / "daily.html"
        ),
    }


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


CHARTS_JS = f"""
[...document.querySelectorAll('svg.chart')].map(s => {{
  const box = s.getBoundingClientRect();
  const shapes = [...s.querySelectorAll('{CHART_SHAPES}')];
  const drawn = shapes.filter(e => {{
    const b = e.getBBox();
    return b.width > 0 || b.height > 0;
  }});
  return {{label: s.getAttribute('aria-label'), width: box.width, height: box.height,
           shapes: shapes.length, drawn: drawn.length,
           empty: s.textContent.includes('no data')}};
}})
"""


@pytest.mark.parametrize("kind, charts", [("monthly", 4), ("daily", 5)])
def test_report_in_chromium(
    browser: Chromium, report_files: dict[str, Path], tmp_path: Path, kind: str, charts: int
) -> None:
    path = report_files[kind]
    browser.open(path.as_uri(), width=1366, height=900)

    assert browser.problems() == []
    assert [u for u in browser.requests() if not u.startswith(("file://", "data:"))] == []

    rendered = browser.evaluate(CHARTS_JS)
    assert len(rendered) == charts, rendered
    for chart in rendered:
        assert not chart["empty"], chart
        assert chart["width"] > 300 and chart["height"] > 30, chart
        assert chart["shapes"] > 0 and chart["drawn"] == chart["shapes"], chart

    assert browser.evaluate("document.querySelectorAll('script, img, iframe, object').length") == 0
    text = browser.evaluate("document.body.innerText")
    expected = XSS_PRODUCT if kind == "daily" else XSS_NAME
    assert expected in text  # shown as text, not run
    # readable on a laptop: nothing wider than the window
    assert browser.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    shot = browser.screenshot(tmp_path / f"{kind}.png")
    width, height = png_size(shot)
    assert width == 1366 and height > 900  # the whole page, not just the first screen
    assert len(shot) > 50_000  # charts and tables, not a blank page
    assert browser.problems() == []


def test_the_harness_sees_what_it_must_fail_on(browser: Chromium, tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body><script>console.error('boom')</script>"
        "<img src='http://127.0.0.1:9/x.png'></body></html>",
        encoding="utf-8",
    )
    browser.open(page.as_uri())
    problems = browser.problems()
    assert any("boom" in p for p in problems), problems
    assert "http://127.0.0.1:9/x.png" in browser.requests()
