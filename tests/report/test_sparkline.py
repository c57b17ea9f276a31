"""The report's inline SVG sparklines, read back as XML: one point per finite value, the threshold
line where the scale puts it, environment changes as vertical lines, all text escaped."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from quant_guard.report.sparkline import HEIGHT, PAD, WIDTH, scale_for, sparkline

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup: str) -> ET.Element:
    root = ET.fromstring(markup)
    assert root.tag == f"{SVG}svg" and root.get("class") == "sparkline"
    return root


def points(root: ET.Element) -> list[tuple[float, float]]:
    (line,) = root.iter(f"{SVG}polyline")
    return [(float(x), float(y)) for x, y in (p.split(",") for p in line.get("points", "").split())]


def by_class(root: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in root.iter() if name in (e.get("class") or "").split()]


def test_one_point_per_finite_value_oldest_left() -> None:
    root = parse(sparkline([0.02, None, 0.03, math.inf, 0.05, math.nan, 0.04]))
    got = points(root)
    assert len(got) == 4 and len(by_class(root, "point")) == 4
    assert [x for x, _ in got] == sorted(x for x, _ in got)
    assert got[0][0] == PAD and got[-1][0] == WIDTH - PAD  # the first and the last run span the width
    top = min(got, key=lambda p: p[1])
    assert top == got[2]  # 0.05, the largest value, is highest (smallest y)
    assert len(by_class(root, "last")) == 1 and float(by_class(root, "last")[0].get("cy", "")) == got[-1][1]


def test_threshold_line_sits_where_the_scale_puts_it() -> None:
    values = [1.0, 2.0, 3.0]
    root = parse(sparkline(values, threshold=4.0))
    (line,) = by_class(root, "threshold")
    assert line.get("y1") == line.get("y2")
    assert float(line.get("y1", "")) == PAD  # above every value: the top of the range
    assert points(root)[0][1] == HEIGHT - PAD  # the smallest value: the bottom
    # a threshold between the values: drawn at the height of an equal value
    root = parse(sparkline([1.0, 3.0, 2.0], threshold=2.0))
    (line,) = by_class(root, "threshold")
    assert float(line.get("y1", "")) == pytest.approx(points(root)[2][1], abs=0.01)
    assert float(line.get("y1", "")) == pytest.approx(scale_for([1.0, 3.0, 2.0], 2.0).y(2.0), abs=0.01)
    assert not by_class(parse(sparkline(values)), "threshold")  # no threshold, no line


def test_environment_changes_are_vertical_lines_at_their_runs() -> None:
    labels = ["run1", "run2", "run3 <torch 2.6>", "run4"]
    root = parse(sparkline([1.0, 1.0, 2.0, 2.0], env_changes=[2], labels=labels))
    (change,) = by_class(root, "env-change")
    x = float(change.get("x1", ""))
    assert x == float(change.get("x2", "")) == points(root)[2][0]
    assert change.findtext(f"{SVG}title") == "environment changed: run3 <torch 2.6>"  # escaped, read back as text


def test_flat_single_and_empty_series_draw_without_dividing_by_zero() -> None:
    flat = points(parse(sparkline([0.5, 0.5, 0.5])))
    assert len({y for _, y in flat}) == 1 and PAD < flat[0][1] < HEIGHT - PAD
    (single,) = points(parse(sparkline([0.5])))
    assert single[0] == WIDTH / 2
    empty = parse(sparkline([None, math.inf], threshold=1.0))
    assert not list(empty.iter(f"{SVG}polyline")) and len(by_class(empty, "threshold")) == 1


def test_title_text_is_escaped() -> None:
    root = parse(sparkline([1.0, 2.0], title='LPIPS <script>alert("x")</script> & more'))
    assert root.findtext(f"{SVG}title") == 'LPIPS <script>alert("x")</script> & more'
    assert not list(root.iter("script")) and not list(root.iter(f"{SVG}script"))
