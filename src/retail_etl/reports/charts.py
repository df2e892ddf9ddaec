"""Charts as inline SVG, drawn on the server: no JavaScript, no library, nothing to fetch.

Every piece of text that can come from data goes through `markupsafe.escape` (element text
and attribute values alike); the functions return Markup that a template can embed as is.
Values are Decimal; they become floats only for geometry, never for a printed figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from decimal import Decimal

from markupsafe import Markup, escape

Number = Decimal | int
Formatter = Callable[[Number], str]

PALETTE = (
    "#2563eb",
    "#dc2626",
    "#16a34a",
    "#9333ea",
    "#ea580c",
    "#0891b2",
    "#ca8a04",
    "#db2777",
)
BAR = "#3b82f6"
HIGHLIGHT = "#f59e0b"
WIDTH = 640
LABEL_CHARS = 28  # about 7 user units a character at font-size 12


def _f(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _el(tag: str, attrs: dict[str, object] | None = None, *children: object) -> Markup:
    """An element; attribute values and str children are escaped, Markup children kept."""
    parts = [f"<{tag}"]
    for name, value in (attrs or {}).items():
        if value is None:
            continue
        text = _f(value) if isinstance(value, float) else str(value)
        parts.append(f' {name}="{escape(text)}"')
    if not children:
        return Markup("".join(parts) + "/>")
    body = "".join(str(c) if isinstance(c, Markup) else str(escape(str(c))) for c in children)
    return Markup("".join(parts) + ">" + body + f"</{tag}>")


def _svg(width: float, height: float, title: str, *children: Markup) -> Markup:
    return _el(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "viewBox": f"0 0 {_f(width)} {_f(height)}",
            "width": "100%",
            "role": "img",
            "aria-label": title,
            "class": "chart",
            "font-family": "system-ui, sans-serif",
            "font-size": "12",
        },
        _el("title", None, title),
        *children,
    )


def short(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def nice_step(span: float, target: int = 5) -> float:
    """A round step (1, 2, 2.5 or 5 x 10^n) that cuts span into about `target` parts."""
    if span <= 0:
        return 1.0
    raw = span / target
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def compact(value: Number) -> str:
    """Axis labels: 950, 1.2k, 3.4M."""
    amount = float(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(amount) >= limit:
            return f"{amount / limit:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{amount:.0f}" if amount == int(amount) else f"{amount:.2f}"


def _empty(title: str, width: float) -> Markup:
    return _svg(
        width,
        60,
        title,
        _el(
            "text",
            {"x": width / 2, "y": 34.0, "text-anchor": "middle", "fill": "#6b7280"},
            "no data",
        ),
    )


def bar_chart(
    items: Sequence[tuple[str, Number]],
    title: str,
    fmt: Formatter = compact,
    highlight: Sequence[bool] | None = None,
    width: float = WIDTH,
) -> Markup:
    """Horizontal bars, one per (label, value), in the given order."""
    if not items:
        return _empty(title, width)
    row, top, label_w, value_w = 24.0, 8.0, min(200.0, width * 0.34), 84.0
    plot_w = width - label_w - value_w
    peak = max(float(v) for _l, v in items) or 1.0
    children = []
    for index, (label, value) in enumerate(items):
        y = top + index * row
        bar_w = max(float(value) / peak * plot_w, 0.0)
        marked = bool(highlight and highlight[index])
        children.append(
            _el(
                "g",
                {"class": "bar" + (" highlight" if marked else "")},
                _el("title", None, f"{label}: {fmt(value)}"),
                _el(
                    "text",
                    {"x": label_w - 8, "y": y + 16, "text-anchor": "end", "fill": "#111827"},
                    short(label, max(8, int(label_w / 7))),
                ),
                _el(
                    "rect",
                    {
                        "x": label_w,
                        "y": y + 3,
                        "width": max(bar_w, 1.0),
                        "height": row - 6,
                        "rx": 3,
                        "fill": HIGHLIGHT if marked else BAR,
                    },
                ),
                _el("text", {"x": label_w + bar_w + 6, "y": y + 16, "fill": "#374151"}, fmt(value)),
            )
        )
    return _svg(width, top * 2 + row * len(items), title, *children)


def _axis(
    peak: float, plot: tuple[float, float, float, float], whole: bool = False
) -> tuple[float, list[Markup]]:
    """Horizontal grid lines and value labels (whole numbers only for counts); returns the
    axis maximum."""
    left, top, width, height = plot
    step = nice_step(peak)
    if whole:
        step = float(max(1, math.ceil(step)))
    ceiling = step * max(1, math.ceil(peak / step))
    marks = []
    value = 0.0
    while value <= ceiling + step / 2:
        y = top + height - value / ceiling * height
        marks.append(
            _el("line", {"x1": left, "x2": left + width, "y1": y, "y2": y, "stroke": "#e5e7eb"})
        )
        marks.append(
            _el(
                "text",
                {"x": left - 6, "y": y + 4, "text-anchor": "end", "fill": "#6b7280"},
                compact(Decimal(str(round(value, 2)))),
            )
        )
        value += step
    return ceiling, marks


def column_chart(
    items: Sequence[tuple[str, Number]],
    title: str,
    fmt: Formatter = compact,
    width: float = WIDTH,
    counts: bool = True,
) -> Markup:
    """Vertical columns (a histogram: counts per bucket), labels under each column."""
    if not items:
        return _empty(title, width)
    height, left, top, bottom = 260.0, 44.0, 16.0, 44.0
    plot = (left, top, width - left - 12, height - top - bottom)
    ceiling, children = _axis(max(float(v) for _l, v in items) or 1.0, plot, whole=counts)
    slot = plot[2] / len(items)
    for index, (label, value) in enumerate(items):
        h = float(value) / ceiling * plot[3]
        x = left + index * slot
        children.append(
            _el(
                "g",
                {"class": "bar"},
                _el("title", None, f"{label}: {fmt(value)}"),
                _el(
                    "rect",
                    {
                        "x": x + slot * 0.12,
                        "y": top + plot[3] - h,
                        "width": slot * 0.76,
                        "height": max(h, 0.5),
                        "rx": 2,
                        "fill": BAR,
                    },
                ),
                _el(
                    "text",
                    {
                        "x": x + slot / 2,
                        "y": top + plot[3] - h - 4,
                        "text-anchor": "middle",
                        "fill": "#374151",
                    },
                    fmt(value),
                ),
                _el(
                    "text",
                    {
                        "x": x + slot / 2,
                        "y": height - bottom + 16,
                        "text-anchor": "middle",
                        "fill": "#111827",
                        "font-size": "11",
                    },
                    short(label, max(4, int(slot / 6.5))),
                ),
            )
        )
    return _svg(width, height, title, *children)


def line_chart(
    x_labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[Number | None]]],
    title: str,
    fmt: Formatter = compact,
    width: float = WIDTH,
    height: float = 260.0,
    missing: str | None = None,
) -> Markup:
    """One line per series over the x labels (None: no point, and a gap in the line); a
    legend below. `missing` marks the x positions where no series has a point."""
    values = [float(v) for _n, vs in series for v in vs if v is not None]
    if not x_labels or not values:
        return _empty(title, width)
    legend_rows = math.ceil(len(series) / 4)
    height, left, top, bottom = height + 20 * legend_rows, 56.0, 16.0, 40.0 + 20 * legend_rows
    plot = (left, top, width - left - 32, height - top - bottom)
    ceiling, children = _axis(max(values) or 1.0, plot)
    slot = plot[2] / max(len(x_labels) - 1, 1)
    xs = [left + (i * slot if len(x_labels) > 1 else plot[2] / 2) for i in range(len(x_labels))]
    every = max(1, math.ceil(len(x_labels) / max(2, int(plot[2] / 70))))
    for i, label in enumerate(x_labels):
        if i % every == 0 or i == len(x_labels) - 1:
            children.append(
                _el(
                    "text",
                    {
                        "x": xs[i],
                        "y": top + plot[3] + 16,
                        "text-anchor": "middle",
                        "fill": "#6b7280",
                    },
                    label,
                )
            )
    if missing:  # x positions where no series has data, marked on the axis
        for i in range(len(x_labels)):
            if all(i >= len(points) or points[i] is None for _n, points in series):
                children.append(
                    _el(
                        "text",
                        {
                            "x": xs[i],
                            "y": top + plot[3] - 6,
                            "text-anchor": "middle",
                            "fill": "#9ca3af",
                            "font-size": "10",
                            "class": "missing",
                        },
                        missing,
                    )
                )
    for index, (name, points) in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        coords = [
            (xs[i], top + plot[3] - float(v) / ceiling * plot[3], x_labels[i], v)
            for i, v in enumerate(points)
            if v is not None
        ]
        group = [_el("title", None, name)]
        # A point without data breaks the line: a gap, never a drop to 0.
        runs: list[list[tuple[float, float]]] = [[]]
        for i, v in enumerate(points):
            if v is None:
                runs.append([])
            else:
                runs[-1].append((xs[i], top + plot[3] - float(v) / ceiling * plot[3]))
        for run in runs:
            if len(run) < 2:
                continue
            group.append(
                _el(
                    "polyline",
                    {
                        "points": " ".join(f"{_f(x)},{_f(y)}" for x, y in run),
                        "fill": "none",
                        "stroke": color,
                        "stroke-width": 2.5,
                        "stroke-linejoin": "round",
                    },
                )
            )
        for x, y, label, v in coords:
            group.append(
                _el(
                    "circle",
                    {"cx": x, "cy": y, "r": 3.5, "fill": color},
                    _el("title", None, f"{name}, {label}: {fmt(v)}"),
                )
            )
        children.append(_el("g", {"class": "series"}, *group))
        lx = left + (index % 4) * (plot[2] / 4)
        ly = height - bottom + 36 + (index // 4) * 20
        children.append(
            _el(
                "g",
                {"class": "legend"},
                _el("rect", {"x": lx, "y": ly - 10, "width": 12, "height": 12, "fill": color}),
                _el("text", {"x": lx + 18, "y": ly, "fill": "#111827"}, short(name, 22)),
            )
        )
    return _svg(width, height, title, *children)
