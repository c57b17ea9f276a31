"""The scheme trade-off plot: stored DiT bytes (x; every component's together when a scheme of
the checkpoint quantizes more than the DiT) against worst LPIPS (y), one labelled point per
scheme, the Pareto front of the passing schemes joined by a line. Inline SVG written with
ElementTree (every label is escaped by construction), no script, no font or file to load.

Both axes start at zero, so "half the bytes" looks like half the distance.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from quant_guard.report.scheme_table import SchemeSummary

WIDTH, HEIGHT = 560, 330
LEFT, RIGHT, TOP, BOTTOM = 70, 130, 16, 50  # margins: tick labels left, point labels may run right
X_LABEL = "stored DiT weights"
X_LABEL_ALL = "stored weights, all components"  # when a scheme quantizes more than the DiT
Y_LABEL = "worst LPIPS (lower is better)"
_CHAR_WIDTH = 7.5  # a character at 12px, generously: Chromium draws scheme names (lower case, digits, _) 6 to 7.1 wide
_ASCENT, _DESCENT = 11, 4  # a label's box above and below its baseline (Chromium's text box at 12px)
_LABEL_HEIGHT = _ASCENT + _DESCENT  # px between stacked point labels
_MARKER = 6  # half the side of the box around a marker (r 5, stroke 2)
_TRIES = 12  # stacked offsets tried on each side, up and down, before the least crowded place wins
_X_TICK_BASELINE = 20  # below the x axis: clear of the y axis's "0" tick at the origin
_BYTE_UNITS = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10), ("B", 1))


def plotted(summaries: Sequence[SchemeSummary]) -> list[SchemeSummary]:
    """The schemes that have a point: stored bytes and a finite worst LPIPS."""
    return [s for s in summaries if s.comparable]


def x_label(summaries: Sequence[SchemeSummary]) -> str:
    """What the x axis weighs: the DiT's bytes, or every component's (``SchemeSummary.size_bytes``)."""
    return X_LABEL_ALL if any(s.by_component for s in summaries) else X_LABEL


def scheme_plot_svg(summaries: Sequence[SchemeSummary], *, title: str = "") -> str:
    """The plot as an ``<svg>`` element (markup text); schemes without both numbers are left out."""
    points = plotted(summaries)
    svg = ET.Element("svg", {"xmlns": "http://www.w3.org/2000/svg", "class": "scheme-plot", "role": "img",
                             "viewBox": f"0 0 {WIDTH} {HEIGHT}", "width": str(WIDTH), "height": str(HEIGHT)})
    ET.SubElement(svg, "title").text = title or f"{x_label(summaries)} against {Y_LABEL}, one point per scheme"
    unit_name, unit = _byte_unit(max((s.size_bytes or 0.0 for s in points), default=0.0))
    x_max, x_ticks = nice_ticks(max((s.size_bytes or 0.0 for s in points), default=0.0) / unit)
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
        _text(axes, f"{tick:g} {unit_name}", x=x, y=TOP + height + _X_TICK_BASELINE, anchor="middle",
              cls="tick x-tick")
    for tick in y_ticks:
        y = TOP + height * (1 - tick / y_max)
        ET.SubElement(axes, "line", _num(x1=LEFT, y1=y, x2=LEFT + width, y2=y) | {"class": "grid"})
        _text(axes, f"{tick:g}", x=LEFT - 6, y=y + 4, anchor="end", cls="tick y-tick")
    ET.SubElement(axes, "line", _num(x1=LEFT, y1=TOP + height, x2=LEFT + width, y2=TOP + height) | {"class": "axis"})
    ET.SubElement(axes, "line", _num(x1=LEFT, y1=TOP, x2=LEFT, y2=TOP + height) | {"class": "axis"})
    _text(svg, x_label(summaries), x=LEFT + width / 2, y=HEIGHT - 8, anchor="middle", cls="axis-label x-label")
    y_label = _text(svg, Y_LABEL, x=14, y=TOP + height / 2, anchor="middle", cls="axis-label y-label")
    y_label.set("transform", f"rotate(-90 14 {TOP + height / 2:g})")

    front = sorted((s for s in points if s.rank == "front"), key=lambda s: s.size_bytes or 0.0)
    if len(front) > 1:
        ET.SubElement(svg, "polyline", {"class": "front", "fill": "none", "points": " ".join(
            f"{x_of(s.size_bytes or 0.0):g},{y_of(s.lpips_worst or 0.0):g}" for s in front)})

    ordered = sorted(points, key=lambda s: (s.lpips_worst or 0.0, s.size_bytes or 0.0))
    xy = [(x_of(s.size_bytes or 0.0), y_of(s.lpips_worst or 0.0)) for s in ordered]
    area = (LEFT + 1, 0.0, WIDTH - 1, TOP + height + _X_TICK_BASELINE - _ASCENT - 1)  # clear of the tick labels
    taken: list[Box] = [(x - _MARKER, y - _MARKER, x + _MARKER, y + _MARKER) for x, y in xy]
    for s, (x, y) in zip(ordered, xy):
        group = ET.SubElement(svg, "g", {"class": f"point {s.rank}", "data-scheme": s.scheme})
        ET.SubElement(group, "title").text = (
            f"{s.scheme}: {s.size_bytes:.0f} bytes stored{_per_component(s)}, worst LPIPS {s.lpips_worst:.4f}, "
            f"{s.passed} of {s.tests} tests passed" + (f", beaten by {s.beaten_by}" if s.beaten_by else ""))
        if s.rank == "failing":  # a cross: it cannot be chosen
            ET.SubElement(group, "path", {"class": "marker", "d": f"M{x - 5:g},{y - 5:g}l10,10m0,-10l-10,10"})
        else:
            ET.SubElement(group, "circle", _num(cx=x, cy=y, r=5) | {"class": "marker"})
        place = label_place(x, y, s.scheme, taken, area)
        taken.append(place.box)
        _text(group, s.scheme, x=place.x, y=place.y, anchor=place.anchor, cls="label")
        if place.y != round(y + 4, 1):  # moved off its point: a leader line says whose it is
            end_x = place.box[0] if place.anchor == "start" else place.box[2]
            ET.SubElement(group, "line", _num(x1=x, y1=y, x2=end_x, y2=place.y - 4) | {"class": "leader"})
    return ET.tostring(svg, encoding="unicode")


def _per_component(s: SchemeSummary) -> str:
    """" (quantizes dit, text_encoder_t5; bytes saved: dit 1863616, text_encoder_t5 115136)" for a
    point weighing every component (nothing for a DiT-only comparison), then "; bytes on device at
    render start: dit 0, ..." where some component had less there than it stores (cpu_offload)."""
    if not s.by_component:
        return ""
    saved = [f"{name} {s.saved(name):.0f}" for name in s.targets if s.saved(name) is not None]
    stored = dict(s.component_bytes)
    offloaded = any(b < stored.get(name, b) for name, b in s.component_resident)
    on_device = [f"{name} {b:.0f}" for name, b in s.component_resident] if offloaded else []
    return (f" (quantizes {', '.join(s.targets) or 'nothing'}" + (f"; bytes saved: {', '.join(saved)}" if saved else "")
            + (f"; bytes on device at render start: {', '.join(on_device)}" if on_device else "") + ")")


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


Box = tuple[float, float, float, float]  # left, top, right, bottom


@dataclass(frozen=True)
class LabelPlace:
    x: float
    y: float  # the baseline
    anchor: str  # "start": right of the point, "end": left of it
    box: Box  # the room the label takes (a generous guess of its width)


def label_box(x: float, baseline: float, label: str, anchor: str) -> Box:
    """The room a point label takes, its width guessed generously from its length."""
    width = _CHAR_WIDTH * len(label)
    left = x if anchor == "start" else x - width
    return (left, baseline - _ASCENT, left + width, baseline + _DESCENT)


def overlap(a: Box, b: Box) -> float:
    """The area two boxes share (0 when they only touch)."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def label_place(x: float, y: float, label: str, taken: Sequence[Box], area: Box) -> LabelPlace:
    """Where the label of the point (x, y) goes: right of it, else left of it, then the same
    moved up and down in steps of a line, until it lies inside ``area`` and clear of every box in
    ``taken`` (markers and the labels placed before). Points near one another (schemes of about
    the same size and quality, often all near the origin) would otherwise print over each other.
    When every place is crowded, the one that overlaps least wins; deterministic either way."""
    candidates = []
    for step in range(_TRIES + 1):
        for dy in ((0,) if step == 0 else (-step * _LABEL_HEIGHT, step * _LABEL_HEIGHT)):
            for anchor, lx in (("start", x + 8), ("end", x - 8)):
                baseline = round(y + 4 + dy, 1)
                candidates.append(LabelPlace(round(lx, 1), baseline, anchor, label_box(lx, baseline, label, anchor)))

    def crowding(place: LabelPlace) -> tuple[float, float]:
        left, top, right, bottom = place.box
        outside = (max(0.0, area[0] - left) + max(0.0, right - area[2])) * (bottom - top) + (
            max(0.0, area[1] - top) + max(0.0, bottom - area[3])) * (right - left)
        return outside, sum(overlap(place.box, box) for box in taken)

    return next((c for c in candidates if crowding(c) == (0.0, 0.0)), None) or min(candidates, key=crowding)


def _text(parent: ET.Element, text: str, *, x: float, y: float, anchor: str, cls: str) -> ET.Element:
    element = ET.SubElement(parent, "text", _num(x=x, y=y) | {"text-anchor": anchor, "class": cls})
    element.text = text
    return element


def _num(**values: float) -> dict[str, str]:
    return {k: f"{round(v, 1):g}" for k, v in values.items()}
