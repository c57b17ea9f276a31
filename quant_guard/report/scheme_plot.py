"""The scheme trade-off plot: stored DiT bytes (x) against worst LPIPS (y), one labelled point
per scheme, the Pareto front of the passing schemes joined by a line. Inline SVG written with
ElementTree (every label is escaped by construction), no script, no font or file to load.

Both axes start at zero, so "half the bytes" looks like half the distance.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from quant_guard.report.scheme_table import SchemeSummary

WIDTH, HEIGHT = 560, 330
LEFT, RIGHT, TOP, BOTTOM = 70, 130, 16, 50  # margins: tick labels left, point labels may run right
X_LABEL = "stored DiT weights"
Y_LABEL = "worst LPIPS (lower is better)"
_LABEL_HEIGHT = 13  # px between stacked point labels
_BYTE_UNITS = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10), ("B", 1))


def plotted(summaries: Sequence[SchemeSummary]) -> list[SchemeSummary]:
    """The schemes that have a point: stored bytes and a finite worst LPIPS."""
    return [s for s in summaries if s.comparable]


def scheme_plot_svg(summaries: Sequence[SchemeSummary], *, title: str = "") -> str:
    """The plot as an ``<svg>`` element (markup text); schemes without both numbers are left out."""
    points = plotted(summaries)
    svg = ET.Element("svg", {"xmlns": "http://www.w3.org/2000/svg", "class": "scheme-plot", "role": "img",
                             "viewBox": f"0 0 {WIDTH} {HEIGHT}", "width": str(WIDTH), "height": str(HEIGHT)})
    ET.SubElement(svg, "title").text = title or f"{X_LABEL} against {Y_LABEL}, one point per scheme"
    unit_name, unit = _byte_unit(max((s.dit_bytes or 0.0 for s in points), default=0.0))
    x_max, x_ticks = nice_ticks(max((s.dit_bytes or 0.0 for s in points), default=0.0) / unit)
    y_max, y_ticks = nice_ticks(max((s.lpips_worst or 0.0 for s in points), default=0.0))
    width, height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x_of(value: float) -> float:
        return round(LEFT + width * value / unit / x_max, 1)

    def y_of(value: float) -> float:
        return round(TOP + height * (1 - value / y_max), 1)

    axes = ET.SubElement(svg, "g", {"class": "axes"})
    for tick in x_ticks:
        x = LEFT + width * tick / x_max
        ET.SubElement(axes, "line", _num(x1=x, y1=TOP, x2=x, y2=TOP + height) | {"class": "grid"})
        _text(axes, f"{tick:g} {unit_name}", x=x, y=TOP + height + 16, anchor="middle", cls="tick x-tick")
    for tick in y_ticks:
        y = TOP + height * (1 - tick / y_max)
        ET.SubElement(axes, "line", _num(x1=LEFT, y1=y, x2=LEFT + width, y2=y) | {"class": "grid"})
        _text(axes, f"{tick:g}", x=LEFT - 6, y=y + 4, anchor="end", cls="tick y-tick")
    ET.SubElement(axes, "line", _num(x1=LEFT, y1=TOP + height, x2=LEFT + width, y2=TOP + height) | {"class": "axis"})
    ET.SubElement(axes, "line", _num(x1=LEFT, y1=TOP, x2=LEFT, y2=TOP + height) | {"class": "axis"})
    _text(svg, X_LABEL, x=LEFT + width / 2, y=HEIGHT - 8, anchor="middle", cls="axis-label x-label")
    y_label = _text(svg, Y_LABEL, x=14, y=TOP + height / 2, anchor="middle", cls="axis-label y-label")
    y_label.set("transform", f"rotate(-90 14 {TOP + height / 2:g})")

    front = sorted((s for s in points if s.rank == "front"), key=lambda s: s.dit_bytes or 0.0)
    if len(front) > 1:
        ET.SubElement(svg, "polyline", {"class": "front", "fill": "none", "points": " ".join(
            f"{x_of(s.dit_bytes or 0.0):g},{y_of(s.lpips_worst or 0.0):g}" for s in front)})

    placed: list[tuple[float, float, float]] = []  # label boxes: left, right, baseline
    for s in sorted(points, key=lambda s: (s.lpips_worst or 0.0, s.dit_bytes or 0.0)):
        x, y = x_of(s.dit_bytes or 0.0), y_of(s.lpips_worst or 0.0)
        group = ET.SubElement(svg, "g", {"class": f"point {s.rank}", "data-scheme": s.scheme})
        ET.SubElement(group, "title").text = (
            f"{s.scheme}: {s.dit_bytes:.0f} bytes stored, worst LPIPS {s.lpips_worst:.4f}, "
            f"{s.passed} of {s.tests} tests passed" + (f", beaten by {s.beaten_by}" if s.beaten_by else ""))
        if s.rank == "failing":  # a cross: it cannot be chosen
            ET.SubElement(group, "path", {"class": "marker", "d": f"M{x - 5:g},{y - 5:g}l10,10m0,-10l-10,10"})
        else:
            ET.SubElement(group, "circle", _num(cx=x, cy=y, r=5) | {"class": "marker"})
        _text(group, s.scheme, **_label_position(x, y, s.scheme, placed), cls="label")
    return ET.tostring(svg, encoding="unicode")


def nice_ticks(largest: float, count: int = 4) -> tuple[float, list[float]]:
    """An axis from 0 with about ``count`` round steps (1, 2, 2.5 or 5 times a power of ten) that
    holds ``largest`` with some room: (axis maximum, ticks from 0 to it)."""
    if not math.isfinite(largest) or largest <= 0:
        largest = 1.0
    raw = largest * 1.08 / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    steps = math.ceil(largest * 1.08 / step - 1e-9)
    return step * steps, [round(step * i, 12) for i in range(steps + 1)]


def _byte_unit(largest: float) -> tuple[str, int]:
    return next(((name, size) for name, size in _BYTE_UNITS if largest >= size), ("B", 1))


def _label_position(x: float, y: float, label: str, placed: list[tuple[float, float, float]]) -> dict[str, object]:
    """Right of the point, or left of it near the right edge; moved down until it overlaps no
    earlier label (points with nearly the same numbers would print over each other)."""
    width = 7 * len(label)  # a generous guess of the text width at 12px
    right_side = x + 8 + width <= WIDTH - 2
    left, right = (x + 8, x + 8 + width) if right_side else (x - 8 - width, x - 8)
    baseline = y + 4
    while any(left < hi and lo < right and abs(baseline - b) < _LABEL_HEIGHT for lo, hi, b in placed):
        baseline += _LABEL_HEIGHT
    placed.append((left, right, baseline))
    return {"x": x + 8 if right_side else x - 8, "y": baseline, "anchor": "start" if right_side else "end"}


def _text(parent: ET.Element, text: str, *, x: float, y: float, anchor: str, cls: str) -> ET.Element:
    element = ET.SubElement(parent, "text", _num(x=x, y=y) | {"text-anchor": anchor, "class": cls})
    element.text = text
    return element


def _num(**values: float) -> dict[str, str]:
    return {k: f"{round(v, 1):g}" for k, v in values.items()}
