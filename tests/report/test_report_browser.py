"""The HTML report in a real browser (the system's headless Chromium, driven with Playwright):
every image loads, the console stays clean, nothing outside the report folder is requested, a
hostile prompt stays text, the golden/candidate slider and flip respond to the mouse and the
keyboard, every zoomed crop loads, and the page fits a phone and a desktop screen.

Needs Playwright (the ``test`` extra) and Chromium (``ci/install_browser.sh``). Without them the
tests skip locally, but fail in CI (``CI`` or ``QG_REQUIRE_BROWSER`` set).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from report_browser import BROWSER_ENV, ReportPage, require_browser

from quant_guard.tools.report_demo import HOSTILE_PROMPT, shared_demo_report

# whole-system runs (xdist workers, a browser): .ci/run runs them, the quick loop leaves them out
pytestmark = pytest.mark.slow

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CASES = 5  # the demo: tiny x red-circle-blue x 2 seeds, tiny-damaged x the same + the hostile prompt



@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, status, output = shared_demo_report(tmp_path_factory.getbasetemp())
    assert status == 1, output
    return root / "qg-report" / "index.html"


@pytest.fixture
def page(browser: Browser, report: Path) -> Iterator[ReportPage]:
    opened = ReportPage.open(browser, report)
    yield opened
    opened.page.close()


def test_every_image_loads_and_nothing_goes_wrong(page: ReportPage) -> None:
    images = page.images()
    assert len(images) >= CASES * 6  # per case at least golden, candidate (twice), heatmap, map, a crop pair
    assert page.broken_images() == []
    assert page.problems == []
    assert page.foreign_requests() == []


def test_every_zoomed_crop_is_loaded(page: ReportPage) -> None:
    crops = page.images(".crop img")
    regions = page.page.locator(".crop").count()
    assert regions >= CASES and len(crops) == 2 * regions  # a golden and a candidate per region
    assert page.broken_images(".crop img") == []


def test_slider_and_flip_respond_to_the_mouse(page: ReportPage) -> None:
    widgets = page.page.locator("[data-qg-compare]")
    assert widgets.count() == CASES
    for n in range(CASES):
        initial = page.comparison(n)
        assert initial["showing"] == "split" and initial["value"] == 50
        assert (initial["at"]["left"], initial["at"]["right"]) == ("golden", "candidate")
        r = initial["range"]
        # slider near the left end: only a sliver of golden; near the right end: nearly all golden
        page.page.mouse.click(r["x"] + r["w"] * 0.1, r["y"] + r["h"] / 2)
        state = page.comparison(n)
        assert state["value"] < 20 and state["at"] == {"left": "golden", "middle": "candidate", "right": "candidate"}
        page.page.mouse.click(r["x"] + r["w"] * 0.9, r["y"] + r["h"] / 2)
        state = page.comparison(n)
        assert state["value"] > 80 and state["at"] == {"left": "golden", "middle": "golden", "right": "candidate"}
        flip = widgets.nth(n).locator("[data-qg-flip]")
        flip.click()
        state = page.comparison(n)
        assert state["showing"] == "golden" and set(state["at"].values()) == {"golden"}
        flip.click()
        state = page.comparison(n)
        assert state["showing"] == "candidate" and set(state["at"].values()) == {"candidate"}
    assert page.problems == []


def test_slider_works_from_the_keyboard(page: ReportPage) -> None:
    keyboard = page.page.keyboard
    # Tab from the top of the page reaches the first slider
    for _ in range(200):
        keyboard.press("Tab")
        if page.page.evaluate("document.activeElement.matches('[data-qg-compare] input[type=range]')"):
            break
    else:
        pytest.fail("Tab never reaches the first comparison slider")
    assert page.page.evaluate("document.activeElement === document.querySelector('[data-qg-compare] input')")
    for _ in range(10):
        keyboard.press("ArrowLeft")
    state = page.comparison(0)
    assert state["value"] == 40 and state["output"] == "split at 40%"
    assert state["at"] == {"left": "golden", "middle": "candidate", "right": "candidate"}
    keyboard.press("End")
    state = page.comparison(0)
    assert state["showing"] == "golden" and set(state["at"].values()) == {"golden"}
    keyboard.press("Home")
    state = page.comparison(0)
    assert state["showing"] == "candidate" and set(state["at"].values()) == {"candidate"}
    for _ in range(60):
        keyboard.press("ArrowRight")
    state = page.comparison(0)
    assert state["value"] == 60 and state["at"] == {"left": "golden", "middle": "golden", "right": "candidate"}


@pytest.mark.parametrize("width", [390, 1440], ids=["phone", "desktop"])
def test_the_page_fits_the_screen_without_scrolling_sideways(browser: Browser, report: Path, width: int) -> None:
    opened = ReportPage.open(browser, report, width=width, height=844)
    try:
        layout = opened.overflow()
        assert layout["scrollWidth"] <= layout["innerWidth"] == width, layout["wide"]
    finally:
        opened.page.close()


def test_hostile_prompt_is_shown_as_text_not_run(page: ReportPage) -> None:
    assert page.page.evaluate("typeof window.__qg_pwned") == "undefined"
    prompts = page.page.locator(".prompt").all_text_contents()
    assert HOSTILE_PROMPT in prompts
    assert page.page.title().startswith("quant_guard: 3 of 5 failed")


def test_the_check_notices_a_missing_image(browser: Browser, report: Path, tmp_path: Path) -> None:
    broken = tmp_path / "qg-report"
    shutil.copytree(report.parent, broken)
    (broken / "tiny-damaged" / "red-circle-blue-s0" / "crop1-candidate.png").unlink()
    opened = ReportPage.open(browser, broken / "index.html")
    try:
        assert opened.broken_images() == ["tiny-damaged/red-circle-blue-s0/crop1-candidate.png"]
        assert opened.broken_images(".crop img") == ["tiny-damaged/red-circle-blue-s0/crop1-candidate.png"]
        assert any("ERR_FILE_NOT_FOUND" in p for p in opened.problems), opened.problems
    finally:
        opened.page.close()


@pytest.mark.parametrize("ci", ["", "true"])
def test_a_missing_browser_skips_locally_but_fails_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        ci: str) -> None:
    monkeypatch.setenv(BROWSER_ENV, str(tmp_path / "no-such-chromium"))
    monkeypatch.delenv("QG_REQUIRE_BROWSER", raising=False)
    monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match="no Chromium found: run ci/install_browser.sh|Playwright is not installed"):
        require_browser()


# ---- the scheme comparison (report/schemes_view.py) --------------------------------------------

def test_the_scheme_plot_is_drawn_with_every_point_inside_it(browser: Browser, tmp_path: Path) -> None:
    from scheme_support import scheme_matrix

    from quant_guard.report.html import render_index

    index = tmp_path / "index.html"
    index.write_text(render_index({"results": scheme_matrix()}), encoding="utf-8")
    opened = ReportPage.open(browser, index, width=390, height=844)  # a phone: the plot shrinks to fit
    try:
        plot = opened.page.locator("svg.scheme-plot")
        plot.scroll_into_view_if_needed()
        assert plot.is_visible()
        box = plot.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 100 and box["x"] + box["width"] <= 390
        markers = {name: opened.page.locator(f'svg.scheme-plot g[data-scheme="{name}"] .marker').bounding_box()
                   for name in ("nf4", "float8_e4m3fn")}
        for marker in markers.values():
            assert marker is not None and marker["width"] > 3
            assert box["x"] <= marker["x"] and marker["x"] + marker["width"] <= box["x"] + box["width"]
            assert box["y"] <= marker["y"] and marker["y"] + marker["height"] <= box["y"] + box["height"]
        nf4, float8 = markers["nf4"], markers["float8_e4m3fn"]
        assert nf4 is not None and float8 is not None
        assert nf4["x"] < float8["x"] and nf4["y"] > float8["y"]  # half the bytes, lower worst LPIPS
        assert opened.page.locator(".schemes-table tbody tr").count() == 3
        assert opened.problems == [] and opened.foreign_requests() == []
    finally:
        opened.page.close()
