"""The HTML report in a real browser (headless Chromium over the DevTools pipe): every image
loads, the console stays clean, nothing outside the report folder is requested, a hostile
prompt stays text, and the golden/candidate slider and flip respond to real mouse clicks.

Needs Chromium (``ci/install_browser.sh``). Without one the tests skip locally, but fail in CI
(``CI`` or ``QG_REQUIRE_BROWSER`` set): a report nobody has opened is not tested.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from quant_guard.report.browser import Browser, check_report, find_browser
from quant_guard.report.demo import HOSTILE_PROMPT, shared_demo_report


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    binary = find_browser()
    if binary is None:
        message = "no Chromium found: run ci/install_browser.sh (or set QG_CHROMIUM)"
        if os.environ.get("CI") or os.environ.get("QG_REQUIRE_BROWSER"):
            pytest.fail(f"{message}; in CI the browser test must run, not skip", pytrace=False)
        pytest.skip(message)
    with Browser.launch(binary) as b:
        yield b


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, status, output = shared_demo_report(tmp_path_factory.getbasetemp())
    assert status == 1, output
    return root / "qg-report"


def test_report_loads_cleanly_and_the_comparison_works(browser: Browser, report: Path) -> None:
    page = browser.open(report / "index.html")
    result = check_report(page)
    assert result.broken_images == []
    assert len(result.images) >= 5 * 6  # per case at least golden, candidate (twice), heatmap, map, a crop pair
    assert result.problems == []
    assert len(result.widgets) == 5
    for states in result.widgets:
        assert states["initial"]["showing"] == "split" and states["initial"]["value"] == 50
        # slider near the left end: only a sliver of golden; near the right end: nearly all golden
        assert states["slider_left"]["value"] < 20 and states["slider_left"]["at"] == {
            "left": "golden", "middle": "candidate", "right": "candidate"}
        assert states["slider_right"]["value"] > 80 and states["slider_right"]["at"] == {
            "left": "golden", "middle": "golden", "right": "candidate"}
        assert states["flip_1"]["showing"] == "golden" and set(states["flip_1"]["at"].values()) == {"golden"}
        assert states["flip_2"]["showing"] == "candidate" and set(states["flip_2"]["at"].values()) == {"candidate"}


def test_hostile_prompt_is_shown_as_text_not_run(browser: Browser, report: Path) -> None:
    page = browser.open(report / "index.html")
    assert page.evaluate("typeof window.__qg_pwned") == "undefined"
    prompts = page.evaluate("[...document.querySelectorAll('.prompt')].map(p => p.textContent)")
    assert HOSTILE_PROMPT in prompts
    assert page.evaluate("document.title").startswith("quant_guard: 3 of 5 failed")


def test_the_check_notices_a_missing_image(browser: Browser, report: Path, tmp_path: Path) -> None:
    broken = tmp_path / "qg-report"
    shutil.copytree(report, broken)
    (broken / "tiny-damaged" / "red-circle-blue-s0" / "crop1-candidate.png").unlink()
    result = check_report(browser.open(broken / "index.html"), max_widgets=0)
    assert result.broken_images == ["tiny-damaged/red-circle-blue-s0/crop1-candidate.png"]
    assert any("ERR_FILE_NOT_FOUND" in p for p in result.problems)
