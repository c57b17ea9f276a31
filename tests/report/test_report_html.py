"""The HTML report from results.json records: worst regions and crops, the view-model
(summary, stability over seeds, budgets), templates with autoescape, self-contained output."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from quant_guard.report.html import render_extras_table, render_index, write_report
from quant_guard.report.records import results_document, write_results
from quant_guard.judge.regions import box_size, case_artifacts, colorize, upscale, worst_regions, zoom_for
from quant_guard.report.view import build_view

HOSTILE = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'


def _checks(lpips: float, ssim: float, psnr: float) -> list[dict[str, Any]]:
    return [
        {"metric": "LPIPS", "value": lpips, "limit": 0.05, "higher_is_better": False, "source": "threshold",
         "passed": lpips <= 0.05},
        {"metric": "SSIM", "value": ssim, "limit": 0.95, "higher_is_better": True, "source": "threshold",
         "passed": ssim >= 0.95},
        {"metric": "PSNR", "value": psnr, "limit": 30.0, "higher_is_better": True, "source": "threshold",
         "passed": psnr == "inf" or psnr >= 30.0},
    ]


def record(case: str, seed: int, lpips: float, ssim: float, psnr: Any, *, checkpoint: str = "tiny",
           prompt: str = "a red circle", **extra: Any) -> dict[str, Any]:
    checks = _checks(lpips, ssim, psnr)
    passed = all(c["passed"] for c in checks)
    stem = f"{case}-s{seed}"
    return {
        "nodeid": f"test_visual.py::test_visual[{checkpoint}-{stem}]", "outcome": "passed" if passed else "failed",
        "id": f"{checkpoint}-{stem}", "checkpoint": checkpoint, "case": case, "seed": seed, "prompt": prompt,
        "scheme": "float8_e4m3fn", "render": {"steps": 4, "width": 64, "height": 64, "guidance": 3.5},
        "limits": {"peak_memory_bytes": None, "step_time_s": None},
        "verdict": "passed" if passed else "image-failed", "reason": "" if passed else "candidate differs\n  SSIM ...",
        "metrics": {"lpips": lpips, "ssim": ssim, "psnr": psnr}, "checks": checks, "passed": passed,
        "candidate_render": {"step_times_s": [0.2, 0.1, 0.1], "total_s": 0.5,
                             "memory": {"kind": "cpu-rss", "peak_bytes": 3 * 2**20}},
        "images": {"golden": f"{checkpoint}/{stem}/golden.png", "candidate": f"{checkpoint}/{stem}/candidate.png",
                   "diff": f"{checkpoint}/{stem}/diff.png"},
        "golden": {"environment": {"created": "2026-01-01T00:00:00+00:00", "torch": "2.0", "device": "cpu"},
                   "steps": 4, "checkpoint_hashes": {"dit": "ab" * 32}},
        "environment": {"device": "cpu", "torch": "2.14.1"},
        **extra,
    }


# ---- regions and pictures --------------------------------------------------------------------

def test_worst_regions_are_the_strongest_non_overlapping_windows() -> None:
    score = np.zeros((64, 64), dtype=np.float32)
    score[40:48, 8:16] = 1.0  # strongest
    score[4:12, 44:52] = 0.8
    score[30:31, 30:31] = 0.5  # one hot pixel: its window mean is far below half the worst
    regions = worst_regions(score, 8)
    assert [(r.x, r.y) for r in regions] == [(8, 40), (44, 4)]
    assert regions[0].score == pytest.approx(1.0) and regions[1].score == pytest.approx(0.8)
    assert worst_regions(np.zeros((32, 32)), 8) == []
    assert len(worst_regions(np.random.default_rng(0).random((64, 64)), 16, count=3, min_ratio=0.0)) == 3


def test_sizes_zoom_upscale_and_colours() -> None:
    assert (box_size(64, 64), zoom_for(box_size(64, 64))) == (16, 4)
    assert (box_size(1024, 1024), zoom_for(box_size(1024, 1024))) == (128, 2)
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    big = upscale(image, 3)
    assert big.shape == (6, 6, 3) and (big[:3, :3] == image[0, 0]).all() and (big[3:, 3:] == image[1, 1]).all()
    ramp = colorize(np.array([[0.0, 1.0, 2.0]]))
    assert ramp.dtype == np.uint8 and ramp[0, 0].tolist() == [0, 0, 4] and ramp[0, 1].tolist() == ramp[0, 2].tolist()


def _write_pair(folder: Path, *, changed: bool = True) -> None:
    rng = np.random.default_rng(1)
    golden = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    candidate = golden.copy()
    if changed:
        candidate[36:52, 4:20] = 255 - candidate[36:52, 4:20]  # a damaged patch, lower left
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(golden).save(folder / "golden.png")
    Image.fromarray(candidate).save(folder / "candidate.png")
    Image.fromarray(np.abs(golden.astype(int) - candidate).astype(np.uint8)).save(folder / "diff.png")


def test_case_artifacts_find_the_damaged_patch_and_zoom_it(tmp_path: Path) -> None:
    _write_pair(tmp_path)
    art = case_artifacts(tmp_path / "golden.png", tmp_path / "candidate.png", tmp_path)
    assert art["score_kind"] == "LPIPS" and art["width"] == 64
    first = art["regions"][0]
    assert abs(first["x"] - 4) <= 8 and abs(first["y"] - 36) <= 8, first  # overlaps the damaged patch
    crop = Image.open(tmp_path / first["candidate"])
    assert crop.size == (16 * 4, 16 * 4) and first["zoom"] == 4
    assert Image.open(tmp_path / "heatmap.png").size == (64, 64)


# ---- view-model ------------------------------------------------------------------------------

def test_view_puts_failures_first_and_summarizes_seeds() -> None:
    records = [record("circle", 0, 0.01, 0.99, 40.0), record("circle", 1, 0.08, 0.90, 25.0),
               record("square", 0, 0.0, 1.0, "inf")]
    view = build_view(results_document(records, config_source=Path("p.toml"), report_dir=Path("r")))
    assert (view.total, view.passed, view.failed) == (3, 2, 1)
    assert [c.id for c in view.cases] == ["tiny-circle-s1", "tiny-circle-s0", "tiny-square-s0"]
    assert view.failing[0].headline == ("LPIPS 0.0800 > max 0.0500; SSIM 0.9000 < min 0.9500; "
                                        "PSNR 25.00 dB < min 30.00 dB")
    (table,) = view.tables
    circle, square = table.spread
    # anomalies per dimension: LPIPS/SSIM/PSNR count as structure; no scorecard limit, no other column
    assert [c.text for c in circle.cells] == ["circle", "2", "1 of 2", "1 of 2", "–", "–", "–", "–", "–",
                                              "0.0450 (0.0800)", "0.9000", "25.00 dB", "s1"]
    assert circle.failed and not square.failed and square.cells[11].text == "∞ dB"
    assert [c.ok for c in table.rows[1].cells[2:5]] == [False, False, False]


def test_budget_rows_use_budget_checks_else_configured_limits() -> None:
    limited = record("c", 0, 0.0, 1.0, 50.0, limits={"peak_memory_bytes": None, "step_time_s": 0.05})
    view = build_view({"results": [limited]})
    step = view.cases[0].budget[0]
    assert step.cells[2].text == "≤ 50.0 ms (median)" and step.cells[3].text == "FAIL" and step.failed
    checked = record("c", 0, 0.0, 1.0, 50.0, budget_checks=[
        {"name": "peak RSS", "value": 3 * 2**20, "limit": 2**30, "unit": "bytes", "passed": True},
        {"name": "step time (median)", "value": 0.1, "limit": 0.5, "unit": "s", "passed": True}],
        other_checks=[{"name": "thing", "passed": False}])
    case = build_view({"results": [checked]}).cases[0]
    assert [r.cells[2].text for r in case.budget] == ["step time (median) ≤ 500.0 ms", "peak RSS ≤ 1.00 GiB"]
    assert all(r.cells[3].ok for r in case.budget)
    assert list(case.extra_checks) == ["other checks"] and case.extra_checks["other checks"][0].failed


# ---- templates -------------------------------------------------------------------------------

def test_user_text_is_escaped_everywhere() -> None:
    bad = record("circle", 0, 0.08, 0.9, 25.0, prompt=HOSTILE, reason=f"reason {HOSTILE}")
    html = render_index({"results": [bad], "config": HOSTILE, "created": "now"})
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt;" in html
    assert html.count("<script>") == 1  # only the report's own inline script
    extras = render_extras_table(bad | {"id": HOSTILE})
    assert "<script>alert" not in extras and "&lt;script&gt;" in extras and "SSIM" in extras


def test_report_is_self_contained_and_links_every_picture(tmp_path: Path) -> None:
    records = [record("circle", 0, 0.08, 0.9, 25.0), record("circle", 1, 0.0, 1.0, "inf")]
    for r in records:
        _write_pair(tmp_path / Path(r["images"]["candidate"]).parent, changed=not r["passed"])
    write_results(tmp_path, results_document(records, config_source=tmp_path / "p.toml", report_dir=tmp_path))
    html = write_report(tmp_path).read_text(encoding="utf-8")
    sources = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert not [s for s in sources if re.match(r"[a-z]+:", s)], "every resource is a relative file"
    assert all((tmp_path / s).is_file() for s in sources), [s for s in sources if not (tmp_path / s).is_file()]
    for name in ("golden.png", "candidate.png", "heatmap.png", "lpips.png", "crop1-golden.png", "crop1-candidate.png"):
        assert f"tiny/circle-s0/{name}" in sources
    assert html.index('id="case-tiny-circle-s0"') < html.index('id="case-tiny-circle-s1"')
    assert "data-qg-compare" in html and 'type="range"' in html and "data-qg-flip" in html


def test_cases_without_images_or_metrics_still_render() -> None:
    minimal = {"id": "tiny-x-s0", "checkpoint": "tiny", "case": "x", "seed": 0, "verdict": "no-golden",
               "outcome": "failed", "passed": False, "reason": "no golden image golden/tiny/x-s0.png\nCreate it",
               "images": {}, "checks": [], "metrics": None, "golden": None}
    html = render_index({"results": [minimal]})
    assert 'id="case-tiny-x-s0"' in html and "no golden image golden/tiny/x-s0.png" in html
    assert '<figure class="compare"' not in html


def test_performance_table_puts_float8_and_bf16_side_by_side() -> None:
    """The source article's table: memory and time of each pipeline that rendered in the run."""
    reference = {"step_times_s": [0.4, 0.3, 0.3], "total_s": 1.5, "dit_weight_bytes": 2 * 2**20,
                 "memory": {"kind": "cuda", "peak_bytes": 9 * 2**30, "at_start_bytes": 8 * 2**30}}
    candidate = {"step_times_s": [0.6, 0.5, 0.5], "total_s": 2.0, "dit_weight_bytes": 2**20,
                 "memory": {"kind": "cuda", "peak_bytes": 5 * 2**30, "at_start_bytes": 4 * 2**30}}
    records = [record("a", seed, 0.01, 0.99, 40.0, candidate_render=candidate, reference_render=reference)
               for seed in (0, 1)]
    table = build_view({"results": records}).tables[0]
    cells = [[c.text for c in row.cells] for row in table.performance]
    assert cells == [
        ["float8_e4m3fn candidate", "2", "1.00 MiB", "4.00 GiB", "5.00 GiB (VRAM)", "500.0 ms", "2.00 s"],
        ["bf16 reference", "2", "2.00 MiB", "8.00 GiB", "9.00 GiB (VRAM)", "300.0 ms", "1.50 s"],
    ]
    checking_only = build_view({"results": [record("a", 0, 0.01, 0.99, 40.0)]}).tables[0]
    assert [row.cells[0].text for row in checking_only.performance] == ["float8_e4m3fn candidate"]
    html = render_index({"results": records})
    assert "<h4>Performance</h4>" in html and "bf16 reference" in html


def test_cells_carry_their_column_heading_for_the_phone_layout() -> None:
    """Each summary and case cell names its column (data-label, shown on a phone where the table
    stacks into cards); a table without headings (other checks) renders without one."""
    failing = record("circle", 0, 0.08, 0.9, 25.0, other_checks=[{"name": "thing", "passed": False}])
    html = render_index({"results": [failing]})
    assert '<td class="bad" data-label="Verdict">image-failed</td>' in html  # the seed table's verdict
    assert html.count('data-label="Verdict">FAIL</td>') == 3  # LPIPS, SSIM and PSNR in the case's metric table
    assert "<caption>other checks</caption>" in html
    assert '<td class="">name: thing</td><td class="bad">FAIL</td>' in html
