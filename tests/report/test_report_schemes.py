"""The scheme comparison (issue 14): per checkpoint, each scheme's tests, worst metrics, stored
DiT bytes, memory and step time, ranked so the best trade-off reads first; the inline SVG plot of
stored bytes against worst LPIPS; both in the HTML report, the terminal and the CI step summary."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from scheme_support import MiB, errored, scheme_matrix, scheme_record

from quant_guard.report.html import render_index
from quant_guard.report.scheme_plot import X_LABEL, Y_LABEL, nice_ticks, scheme_plot_svg
from quant_guard.report.scheme_table import compare_schemes, comparisons, dominates
from quant_guard.report.schemes_view import HEADERS, against_golden, scheme_comparisons, terminal_lines
from quant_guard.config.units import format_bytes

ROOT = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"


def ranked(records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    (summaries,) = compare_schemes(records).values()
    return [(s.scheme, s.rank, s.beaten_by) for s in summaries]


# ---- aggregation -----------------------------------------------------------------------------

def test_a_scheme_summary_aggregates_its_tests_and_skips_what_did_not_measure() -> None:
    records = [
        scheme_record("int8", 0, 0.002, ssim=0.98, psnr=45.0, steps=[9.0, 0.2, 0.4], peak=3 * MiB, start=2 * MiB),
        scheme_record("int8", 1, 0.004, ssim=0.97, psnr="inf", steps=[9.0, 0.3, 0.1], peak=5 * MiB, start=MiB),
        errored("int8", 2),
    ]
    (summary,) = compare_schemes(records)["tiny"]
    assert (summary.tests, summary.passed, summary.measured, summary.all_passed) == (3, 2, 2, False)
    assert summary.lpips_mean == pytest.approx(0.003) and summary.lpips_worst == 0.004
    assert (summary.ssim_worst, summary.psnr_worst) == (0.97, 45.0)  # "inf" dB is the best PSNR
    assert (summary.dit_bytes, summary.peak_bytes, summary.resident_bytes) == (MiB, 5 * MiB, 2 * MiB)
    assert summary.memory_kind == "RSS" and summary.description == "int8 storage"
    assert summary.step_median_s == pytest.approx(0.25)  # 0.2, 0.4, 0.3, 0.1: warm-up steps (9 s) dropped
    assert summary.worst_id == "tiny-int8-circle-s1" and summary.rank == "failing"


def test_schemes_without_measurements_and_nan_images_are_not_compared() -> None:
    records = [errored("absent", 0), scheme_record("nan", 0, "nan"), scheme_record("nan", 1, 0.001),
               scheme_record("no-bytes", 0, 0.001, dit=None), scheme_record("ok", 0, 0.01)]
    summaries = compare_schemes(records)["tiny"]
    assert [(s.scheme, s.rank) for s in summaries] == [("ok", "front"), ("absent", "unmeasured"),
                                                       ("nan", "unmeasured"), ("no-bytes", "unmeasured")]
    absent, nan = summaries[1], summaries[2]
    assert absent.lpips_worst is None and absent.dit_bytes is None and absent.step_median_s is None
    assert absent.memory_kind == "" and absent.trade_off == "not measured" and absent.worst_id == ""
    assert math.isnan(nan.lpips_worst or 0.0) and math.isnan(nan.lpips_mean or 0.0)  # a NaN image is never good
    assert nan.worst_id == "tiny-nan-circle-s1"


# ---- ranking ---------------------------------------------------------------------------------

def test_ranking_puts_the_passing_pareto_front_first_smallest_first() -> None:
    records = [
        scheme_record("float8_e4m3fn", 0, 0.004, dit=MiB),
        scheme_record("torchao_fp8", 0, 0.0007, dit=1.2 * MiB),  # beaten by int8: larger and worse
        scheme_record("torchao_int8", 0, 0.0001, dit=1.1 * MiB),
        scheme_record("nf4", 0, 0.0035, dit=0.6 * MiB),  # smaller and better than float8
        scheme_record("int4", 0, 0.02, dit=0.3 * MiB, passed=False),  # smallest, but failed a test
        errored("w8a8", 0),
    ]
    assert ranked(records) == [("nf4", "front", ""), ("torchao_int8", "front", ""),
                               ("float8_e4m3fn", "dominated", "nf4"), ("torchao_fp8", "dominated", "torchao_int8"),
                               ("int4", "failing", ""), ("w8a8", "unmeasured", "")]
    # a failing scheme beats nobody: without nf4, float8 is on the front although int4 is smaller
    assert ranked([r for r in records if r["scheme"] != "nf4"])[:2] == [("float8_e4m3fn", "front", ""),
                                                                          ("torchao_int8", "front", "")]


def test_one_failed_seed_moves_a_scheme_out_of_the_front() -> None:
    records = [scheme_record("a", 0, 0.001), scheme_record("a", 1, 0.001, passed=False),
               scheme_record("b", 0, 0.002, dit=2 * MiB)]
    assert ranked(records) == [("b", "front", ""), ("a", "failing", "")]


def test_equal_schemes_are_both_on_the_front_and_dominance_is_strict() -> None:
    records = [scheme_record("x", 0, 0.001), scheme_record("y", 0, 0.001), scheme_record("z", 0, 0.001, dit=2 * MiB)]
    assert ranked(records) == [("x", "front", ""), ("y", "front", ""), ("z", "dominated", "x")]
    x, y, z = compare_schemes(records)["tiny"]
    assert not dominates(x, y) and not dominates(y, x) and dominates(x, z) and not dominates(z, x)


def test_comparisons_are_per_checkpoint_and_need_two_schemes() -> None:
    records = [scheme_record("a", 0, 0.001, checkpoint="big"), scheme_record("b", 0, 0.002, checkpoint="big"),
               scheme_record("a", 0, 0.001, checkpoint="tiny"),
               scheme_record("a", 1, 0.003, checkpoint="tiny")]  # one scheme: nothing to compare
    assert list(compare_schemes(records)) == ["big", "tiny"]
    assert list(comparisons(records)) == ["big"]
    assert terminal_lines(records[2:]) == [] and scheme_comparisons(records[2:]) == {}


# ---- the plot --------------------------------------------------------------------------------

def _points(svg: str) -> dict[str, tuple[float, float, str]]:
    """Per scheme: the marker's centre (x, y) and the point's rank class."""
    root = ET.fromstring(svg)
    out = {}
    for group in root.iter(f"{SVG}g"):
        classes = group.get("class", "").split()
        if "point" not in classes:
            continue
        circle = group.find(f"{SVG}circle")
        if circle is not None:
            xy = (float(circle.get("cx", "nan")), float(circle.get("cy", "nan")))
        else:  # a failing scheme's cross: "M{x-5},{y-5}l10,10..."
            path = group.find(f"{SVG}path")
            assert path is not None
            x, y = map(float, re.match(r"M([\d.]+),([\d.]+)", path.get("d", "")).groups())  # type: ignore[union-attr]
            xy = (x + 5, y + 5)
        label = group.find(f"{SVG}text")
        assert label is not None and label.text == group.get("data-scheme")
        out[str(group.get("data-scheme"))] = (*xy, classes[1])
    return out


def test_the_plot_has_one_labelled_point_per_measured_scheme_placed_by_its_numbers() -> None:
    records = [scheme_record("nf4", 0, 0.0035, dit=0.6 * MiB), scheme_record("int8", 0, 0.0001, dit=1.1 * MiB),
               scheme_record("float8", 0, 0.004, dit=MiB), scheme_record("fp8", 0, 0.0007, dit=1.2 * MiB),
               scheme_record("int4", 0, 0.02, dit=0.3 * MiB, passed=False), errored("absent", 0)]
    summaries = compare_schemes(records)["tiny"]
    svg = scheme_plot_svg(summaries)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.find(f"{SVG}title") is not None
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert X_LABEL in texts and Y_LABEL in texts and "0 MiB" in texts and "0" in texts
    points = _points(svg)
    assert set(points) == {"nf4", "int8", "float8", "fp8", "int4"}  # "absent" has no numbers
    assert {k: v[2] for k, v in points.items()} == {"nf4": "front", "int8": "front", "float8": "dominated",
                                                    "fp8": "dominated", "int4": "failing"}
    by_bytes = sorted(summaries[:5], key=lambda s: s.dit_bytes or 0)
    xs = [points[s.scheme][0] for s in by_bytes]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)  # more bytes: further right
    by_lpips = sorted(summaries[:5], key=lambda s: s.lpips_worst or 0)
    ys = [points[s.scheme][1] for s in by_lpips]
    assert ys == sorted(ys, reverse=True) and len(set(ys)) == len(ys)  # worse LPIPS: higher up
    (front,) = root.iter(f"{SVG}polyline")  # the front's line joins its points, smallest first
    assert front.get("points") == " ".join(f"{points[s][0]:g},{points[s][1]:g}" for s in ("nf4", "int8"))


def test_plot_labels_are_escaped_and_do_not_overlap() -> None:
    hostile = '<script>alert("x")</script>'
    records = [scheme_record(hostile, 0, 0.001), scheme_record("twin", 0, 0.001), scheme_record("b", 0, 0.002)]
    svg = scheme_plot_svg(compare_schemes(records)["tiny"])
    assert "<script>" not in svg
    labels = {text: box for cls, text, box in _text_boxes(svg) if cls == "label"}
    assert hostile in labels and not _intersect(labels[hostile], labels["twin"])  # same point: labels apart
    html = render_index({"results": records})
    assert "<script>alert" not in html and html.count("<script>") == 1  # only the report's own script


def _text_boxes(svg: str, char_width: float = 7.2) -> list[tuple[str, str, tuple[float, float, float, float]]]:
    """(class, text, box) of every text of the plot; boxes as Chromium draws 12px text (11 px
    above the baseline, 3 below), a little wider than its scheme names measure (6 to 7.1 px a
    character)."""
    out = []
    for t in ET.fromstring(svg).iter(f"{SVG}text"):
        if "transform" in t.attrib:  # the rotated y axis title, far left of every point
            continue
        x, y, width = float(t.get("x", "nan")), float(t.get("y", "nan")), char_width * len(t.text or "")
        left = {"start": x, "middle": x - width / 2, "end": x - width}[t.get("text-anchor", "start")]
        out.append((t.get("class", ""), t.text or "", (left, y - 11, left + width, y + 3)))
    return out


def _intersect(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_plot_labels_clustered_near_the_origin_clear_each_other_the_markers_and_the_ticks() -> None:
    names = ("nf4", "int4_awq", "fp4", "int8_weight_only", "float8_e4m3fn", "q4_k")
    records = [scheme_record("bf16_like", 0, 0.05, dit=24 * MiB)] + [
        scheme_record(name, 0, 0.0001 * (i % 3), dit=(0.3 + 0.05 * i) * MiB, passed=name != "fp4")
        for i, name in enumerate(names)]
    svg = scheme_plot_svg(compare_schemes(records)["tiny"])
    texts = _text_boxes(svg)
    clashes = [(a[1], b[1]) for i, a in enumerate(texts) for b in texts[i + 1:]
               if "label" in (a[0].split() + b[0].split()) and _intersect(a[2], b[2])]
    assert clashes == []
    ticks = {text: box for cls, text, box in texts if "tick" in cls.split()}
    assert not _intersect(ticks["0"], ticks["0 MiB"])  # the two zeros at the origin
    points = _points(svg)
    labels = {text: box for cls, text, box in texts if cls == "label"}
    assert set(labels) == set(points) == {*names, "bf16_like"}
    root = ET.fromstring(svg)
    width, height = float(root.get("width", "0")), float(root.get("height", "0"))
    axis_y = max(y for _, y, _ in points.values())  # LPIPS 0: on the x axis
    for name, (x, y, _) in points.items():
        marker = (x - 6, y - 6, x + 6, y + 6)
        assert not [n for n, box in labels.items() if _intersect(box, marker)], name
        left, top, right, bottom = labels[name]
        assert 0 <= left and right <= width and 0 <= top and bottom <= axis_y + 9 < height, name
    for group in root.iter(f"{SVG}g"):  # a label moved off its point has a leader line from the point
        if "point" not in group.get("class", "").split():
            continue
        x, y, _ = points[str(group.get("data-scheme"))]
        label = group.find(f"{SVG}text")
        assert label is not None
        leader = group.find(f"{SVG}line")
        if abs(float(label.get("y", "nan")) - (y + 4)) > 0.1:
            assert leader is not None and (float(leader.get("x1", "nan")), float(leader.get("y1", "nan"))) == (x, y)
        else:
            assert leader is None


def test_nice_ticks_hold_the_largest_value_in_round_steps() -> None:
    assert nice_ticks(1.0) == (1.5, [0.0, 0.5, 1.0, 1.5])
    assert nice_ticks(0.0035) == (0.004, [0.0, 0.001, 0.002, 0.003, 0.004])
    assert nice_ticks(0.0) == (1.5, [0.0, 0.5, 1.0, 1.5])  # nothing measured: an empty axis
    top, ticks = nice_ticks(37.3)
    assert top >= 37.3 and ticks[0] == 0 and ticks[-1] == top and 3 <= len(ticks) <= 7


# ---- the HTML report and the terminal --------------------------------------------------------

def test_the_report_shows_the_ranked_table_and_the_plot_per_checkpoint() -> None:
    html = render_index({"results": scheme_matrix() + [scheme_record("only", 0, 0.001, checkpoint="single")]})
    assert html.count('class="schemes"') == 1 and 'id="schemes-tiny"' in html  # "single" has one scheme
    table = html[html.index('id="schemes-tiny"'):html.index("</table>", html.index('id="schemes-tiny"'))]
    assert all(f"<th>{h}</th>" in table for h in HEADERS) and "Pareto front" in table
    rows = re.findall(r"<tr class=\"[^\"]*\">(.*?)</tr>", table, re.S)
    assert [re.sub(r"<[^>]+>", "", r.split("</td>")[0]).strip() for r in rows] == ["nf4", "float8_e4m3fn", "int4"]
    assert 'href="#case-tiny-float8_e4m3fn-circle-s1"' in table  # a scheme links to its worst case
    assert "beaten by nf4" in table and "1.00 MiB" in table and "512.00 KiB" in table
    svg = re.search(r"<svg.*?</svg>", html, re.S)
    assert svg is not None and set(_points(svg.group(0))) == {"nf4", "float8_e4m3fn"}
    assert "Not plotted (no measurement): int4." in html


def _summary(html: str) -> str:
    return html[html.index('<section id="summary">'):html.index('<section id="cases">')]


def test_the_summary_heading_names_its_schemes() -> None:
    names = ("float8_e4m3fn", "nf4", "int8", "fp8_e5m2")
    records = [scheme_record(name, 0, 0.001 * (i + 1), dit=MiB / (i + 1)) for i, name in enumerate(names)]
    html = _summary(render_index({"results": records}))
    headings = [" ".join(re.sub(r"<[^>]+>", " ", h).split()) for h in re.findall(r"<h3>(.*?)</h3>", html, re.S)]
    ranked_names = [s.scheme for s in compare_schemes(records)["tiny"]]
    assert headings[0] == f"Checkpoint tiny 4 schemes ({', '.join(ranked_names)}) against the bf16 golden"
    # the comparison comes under that heading, each scheme's own tables under theirs
    first = html.index("<h3>")
    assert html.index("<h3>", first + 1) > html.index('class="schemes"') > first
    assert headings[1:] == [f"Checkpoint tiny {name} candidate against the bf16 golden" for name in names]
    single = _summary(render_index({"results": [scheme_record("nf4", 0, 0.001)]}))
    assert re.findall(r"<h3>(.*?)</h3>", single, re.S) == ["Checkpoint tiny <small>nf4 candidate against the bf16 "
                                                             "golden</small>"]
    assert against_golden(["nf4"]) == "nf4 candidate against the bf16 golden"
    assert against_golden(["a", "b"]) == "2 schemes (a, b) against the bf16 golden"


def test_a_run_without_several_schemes_shows_no_comparison() -> None:
    html = render_index({"results": [scheme_record("float8_e4m3fn", 0, 0.001)]})
    assert 'class="schemes"' not in html and "<svg" not in html


def test_terminal_lines_are_an_aligned_table_best_first() -> None:
    lines = terminal_lines(scheme_matrix())
    assert lines[0].startswith("checkpoint tiny: 3 schemes, best trade-off first")
    header, *rows = lines[1:]
    assert header.split()[:4] == ["scheme", "passed", "LPIPS", "mean"]
    assert [r.split()[0] for r in rows] == ["nf4", "float8_e4m3fn", "int4"]
    assert rows[0].split()[1:4] == ["2/2", "0.0030", "0.0030"] and rows[0].endswith("Pareto front")
    assert rows[2].split()[1] == "0/1" and rows[2].endswith("not measured")
    columns = {r.index(r.split()[1]) for r in rows}  # the second column starts at the same place
    assert len(columns) == 1


def test_the_ci_step_summary_ranks_the_schemes_with_the_same_module(tmp_path: Path) -> None:
    """ci/step_summary.py runs where quant_guard is not installed: it imports scheme_table.py from the checkout."""
    (tmp_path / "results.json").write_text(json.dumps({"results": scheme_matrix()}), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-I", "-S", str(ROOT / "ci" / "step_summary.py"), str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path)  # -I -S: standard library only
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "### Schemes of `tiny`, best trade-off first" in text
    section = text[text.index("### Schemes of `tiny`"):].splitlines()
    rows = [line for line in section if line.startswith("| `")]
    assert [r.split("|")[1].strip() for r in rows] == ["`nf4`", "`float8_e4m3fn`", "`int4`"]
    assert rows[0] == ("| `nf4` | ✅ 2/2 | 0.0030 | 0.0030 | 0.9900 | 40.00 dB | 512.00 KiB | 3.00 MiB (RSS) | "
                       "2.00 MiB | 100.0 ms | Pareto front |")
    assert rows[1].endswith("| beaten by nf4 |") and rows[2].startswith("| `int4` | ❌ 0/1 | – |")
    assert text.index("### Schemes") < text.index("### Failures")


def test_a_real_run_prints_the_scheme_table(qg_project: Callable[..., Path], pytester: pytest.Pytester) -> None:
    """Two storage schemes of the embedded tiny checkpoint, one case: the terminal summary and the
    report's results come from the same run."""
    qg_project(checkpoint_extra='schemes = ["float8_e4m3fn", "float8_e5m2"]')
    result = pytester.runpytest("--update-golden", "--qg-report=all")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*quant_guard schemes*",
                                 "checkpoint tiny: 2 schemes, best trade-off first*",
                                 "  scheme * passed * LPIPS mean * LPIPS worst *",
                                 "  float8_e* 1/1 * 0.0* dB * MiB *iB (RSS) *iB *s *Pareto front",
                                 "  float8_e* 1/1 * 0.0* dB * MiB *iB (RSS) *iB *s *beaten by float8_e*"])
    records = json.loads((pytester.path / "qg-report" / "results.json").read_text(encoding="utf-8"))["results"]
    stored = {format_bytes(r["candidate_render"]["dit_weight_bytes"]) for r in records}
    assert len(stored) == 1 and f"  {stored.pop()}  " in result.stdout.str()  # float8 either way: same bytes
    html = (pytester.path / "qg-report" / "index.html").read_text(encoding="utf-8")
    assert 'id="schemes-tiny"' in html and html.count('class="point ') == 2
