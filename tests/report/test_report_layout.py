"""The report's layout in a real browser (issue 26, point 7) at a desktop (1440 px) and a phone
(390 px) width: long text wraps instead of scrolling sideways or being cut off (the re-baseline
command at the end of a failure message, a drift verdict), the verdict and FAIL cells are on a
phone's screen, and no two labels of the scheme plot overlap, with schemes clustered near its
origin. The report is built once, from hand-made records (no render), with tiny PNGs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image
from report_browser import ReportPage
from scheme_support import MiB, scheme_record

from quant_guard.report.html import render_index

if TYPE_CHECKING:
    from playwright.sync_api import Browser

WIDTHS = {"desktop": (1440, 900), "phone": (390, 844)}
REBASELINE = ('pytest --update-golden "tests/visual/test_quantized_checkpoints.py::test_visual'
              '[flux-dev-float8-e4m3fn-red-circle-on-a-blue-background-s0]" '
              '"tests/visual/test_quantized_checkpoints.py::test_visual'
              '[flux-dev-nf4-red-circle-on-a-blue-background-s0]"')
DRIFT_VERDICT = "FAIL: LPIPS max 0.0050 (drift tolerance); PSNR min 45.00 dB (drift tolerance)"
CLUSTER = ("nf4", "int4_awq", "fp4", "int8_weight_only", "float8_e4m3fn")  # all near the origin


def _comparison(name: str, lpips: float, psnr: float, passed: bool, source: str, limit: float) -> dict[str, Any]:
    checks = [{"metric": "LPIPS", "value": lpips, "limit": limit, "higher_is_better": False, "source": source,
               "passed": passed},
              {"metric": "PSNR", "value": psnr, "limit": 45.0, "higher_is_better": True, "source": source,
               "passed": passed}]
    return {"name": name, "metrics": {"lpips": lpips, "ssim": 0.99, "psnr": psnr}, "checks": checks, "passed": passed}


def drifted(seed: int) -> dict[str, Any]:
    """A float8 test failed by environment drift, the message ending in a long re-baseline command."""
    stem = f"circle-s{seed}"
    reason = ("environment drift: the bf16 golden no longer reproduces here, and the float8_e4m3fn candidate "
              "passes against the bf16 reference rendered now\n"
              f"  {'':<28}    LPIPS     SSIM       PSNR  verdict\n"
              "  bf16 now vs golden               0.0210   0.9700   38.12 dB  "
              "FAIL (LPIPS > 0.005 drift tolerance; PSNR < 45 dB drift tolerance)\n"
              "  what to do: the environment changed, not the quantization. Re-baseline on this machine with\n"
              f"    {REBASELINE}\n  (review the new goldens), or run with --qg-reference=live")
    checks = [{"metric": "LPIPS", "value": 0.03, "limit": 0.02, "higher_is_better": False, "source": "threshold",
               "passed": False}]
    return scheme_record(
        "float8_e4m3fn", seed, 0.03, dit=1.0 * MiB, passed=False, verdict="env-drift", reason=reason, checks=checks,
        prompt="a red circle on a blue background", render={"steps": 4, "width": 64, "height": 64},
        images={"golden": f"tiny/{stem}/golden.png", "candidate": f"tiny/{stem}/candidate.png"},
        drift={"candidate_vs_golden": _comparison("candidate vs golden", 0.03, 36.0, False, "threshold", 0.02),
               "reference_vs_golden": _comparison("bf16 now vs golden", 0.021, 38.1, False, "drift tolerance",
                                                  0.005),
               "candidate_vs_reference": _comparison("candidate vs bf16 now", 0.004, 47.0, True, "threshold",
                                                     0.02)})


def layout_records() -> list[dict[str, Any]]:
    """The drifted float8 test and, on the same checkpoint, other schemes clustered near the
    origin of the plot beside one far away: a 6-scheme comparison."""
    records = [drifted(0), scheme_record("bf16_like", 0, 0.05, dit=24 * MiB)]
    records += [scheme_record(name, 0, 0.0001 * (i % 3), dit=(0.3 + 0.05 * i) * MiB, passed=name != "fp4")
                for i, name in enumerate(CLUSTER) if name != "float8_e4m3fn"]
    return records


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("layout")
    rng = np.random.default_rng(0)
    for record in layout_records():
        for image in (record.get("images") or {}).values():
            (folder / image).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(folder / image)
    index = folder / "index.html"
    index.write_text(render_index({"results": layout_records()}), encoding="utf-8")
    return index


@pytest.fixture(params=list(WIDTHS), scope="module")
def page(request: pytest.FixtureRequest, browser: Browser, report: Path) -> Iterator[ReportPage]:
    width, height = WIDTHS[request.param]
    opened = ReportPage.open(browser, report, width=width, height=height)
    yield opened
    opened.page.close()


# Text-holding elements whose content is wider than their box (it scrolls or is cut off).
_CLIPPED_JS = """() => [...document.body.querySelectorAll('*')]
  .filter(e => !(e instanceof SVGElement) && e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1
               && e.textContent.trim() !== '')
  .map(e => `${e.tagName.toLowerCase()}.${[...e.classList].join('.')} ${e.scrollWidth}>${e.clientWidth}: `
            + e.textContent.trim().slice(0, 60))"""

# Is the element holding ``text`` (its innermost) inside the viewport, left to right?
_IN_VIEW_JS = """(text) => {
  const e = [...document.querySelectorAll('pre, td')].find(e => e.textContent.includes(text));
  if (!e) return 'missing';
  const range = document.createRange(); range.selectNodeContents(e);
  const rects = [...range.getClientRects()];
  return rects.every(r => r.left >= 0 && r.right <= window.innerWidth + 0.5) ? 'in view'
    : rects.map(r => `${Math.round(r.left)}..${Math.round(r.right)}`).join(' ');
}"""

# The boxes of the plot's texts (labels, ticks, axis titles) and point markers, on screen.
_PLOT_BOXES_JS = """() => [...document.querySelectorAll('svg.scheme-plot text, svg.scheme-plot .marker')].map(e => {
  const r = e.getBoundingClientRect();
  return {name: e.tagName === 'text' ? e.textContent : e.parentElement.dataset.scheme + ' marker',
          text: e.tagName === 'text', box: [r.left, r.top, r.right, r.bottom]};
})"""


def test_no_text_is_clipped_or_scrolls_sideways(page: ReportPage) -> None:
    layout = page.overflow()
    assert layout["scrollWidth"] <= layout["innerWidth"], layout["wide"]
    assert page.page.evaluate(_CLIPPED_JS) == []
    assert page.problems == []


def test_the_rebaseline_command_and_the_drift_verdict_are_on_screen(page: ReportPage) -> None:
    assert page.page.evaluate(_IN_VIEW_JS, "--qg-reference=live") == "in view"
    assert page.page.evaluate(_IN_VIEW_JS, "[flux-dev-nf4-red-circle-on-a-blue-background-s0]") == "in view"
    assert page.page.evaluate(_IN_VIEW_JS, DRIFT_VERDICT) == "in view"


def test_every_verdict_and_fail_cell_is_on_screen(page: ReportPage) -> None:
    outside = page.page.evaluate("""() => [...document.querySelectorAll('td.bad, td.ok')]
      .filter(e => { const r = e.getBoundingClientRect(); return r.left < 0 || r.right > window.innerWidth + 0.5; })
      .map(e => e.textContent.trim())""")
    assert outside == []
    fails = [t for t in page.page.locator("td.bad").all_text_contents() if t.strip().startswith("FAIL")]
    assert len(fails) == 3  # the metric table's and the drift table's two
    # each FAIL cell, on a phone too, says what it judges
    if page.page.viewport_size["width"] < 600:  # type: ignore[index]
        labels = page.page.eval_on_selector_all("table.drift td.bad", "es => es.map(e => e.dataset.label)")
        assert labels == ["Verdict", "Verdict"]


def test_no_two_plot_labels_overlap(page: ReportPage) -> None:
    page.page.locator("svg.scheme-plot").scroll_into_view_if_needed()
    boxes = page.page.evaluate(_PLOT_BOXES_JS)
    names = {b["name"] for b in boxes}
    assert set(CLUSTER) <= names and {"0", "0 MiB"} <= names
    clashes = [(a["name"], b["name"]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
               if (a["text"] or b["text"]) and a["box"][0] < b["box"][2] and b["box"][0] < a["box"][2]
               and a["box"][1] < b["box"][3] and b["box"][1] < a["box"][3]]
    assert clashes == []  # markers may cover one another (same numbers), nothing else may

