"""A video case in the HTML report: the contact sheet, the per-frame LPIPS curve with the worst
frame marked, and a player whose golden, candidate and difference windows always show the same
frame (slider, worst-frame button, play). Built from a synthetic clip judged by the real judge,
no render; the browser test opens it in headless Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from judge.test_temporal import moving_square

from quant_guard.config.thresholds import Thresholds
from quant_guard.judge.judgement import judge
from quant_guard.report.clip_view import SHEET_GAP, contact_sheet
from quant_guard.store.golden import encode_clip, encode_png

FRAMES, SIZE, FPS = 5, 64, 8
LIMITS = Thresholds(lpips_max=0.02, ssim_min=0.9, psnr_min=30.0, flicker_max=3.0, exposure_flicker_max=1.0)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report folder with one failing clip case: frame 3 is noisy, and the exposure flickers."""
    from quant_guard.report.html import write_report

    root = tmp_path_factory.mktemp("clip-report")
    golden = moving_square(frames=FRAMES, size=SIZE)
    offsets = np.array([0, 3, -3, 3, -3])[:, None, None, None]
    candidate = np.clip(golden.astype(int) + offsets, 0, 255)
    candidate[3] += np.random.default_rng(1).normal(0, 25, candidate.shape[1:]).astype(int)
    candidate = np.clip(candidate, 0, 255).astype(np.uint8)
    judgement = judge(golden, candidate, LIMITS, prompt="a square")
    diff = np.repeat(np.clip(np.abs(golden.astype(int) - candidate).max(axis=-1) * 4, 0, 255)
                     .astype(np.uint8)[..., None], 3, axis=-1)
    folder = root / "tiny-wan" / "float8_e4m3fn" / "clip-s0"
    folder.mkdir(parents=True)
    for name, data in (("golden.png", encode_clip(golden, FPS)), ("candidate.png", encode_clip(candidate, FPS)),
                       ("diff.png", encode_clip(diff, FPS)), ("sheet.png", encode_png(contact_sheet(golden, candidate, diff)))):
        (folder / name).write_bytes(data)
    images = {name: f"tiny-wan/float8_e4m3fn/clip-s0/{name}.png" for name in ("golden", "candidate", "diff", "sheet")}
    record = {
        "id": "tiny-wan-float8_e4m3fn-clip-s0", "checkpoint": "tiny-wan", "case": "clip", "seed": 0,
        "prompt": "a square moving right", "scheme": "float8_e4m3fn", "verdict": "image-failed", "passed": False,
        "outcome": "failed", "reason": "float8_e4m3fn candidate differs from the bf16 golden",
        "render": {"steps": 3, "width": SIZE, "height": SIZE, "guidance": 1.0, "frames": FRAMES, "fps": FPS},
        "images": images, "metrics": vars(judgement.metrics),
        "checks": [{**vars(c), "passed": c.passed, "dimension": c.dimension} for c in judgement.checks],
        "scorecard": {**judgement.scorecard.to_json(), "words": judgement.scorecard.describe()},
    }
    (root / "results.json").write_text(json.dumps({"quant_guard_results": 1, "results": [record]}))
    write_report(root)
    return root / "index.html"


def test_the_case_page_has_the_sheet_curve_and_a_player_at_the_worst_frame(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    assert 'data-qg-clip data-frames="5" data-fps="8" data-worst="3"' in html
    assert html.count('class="clip-window"') == 3 and 'src="tiny-wan/float8_e4m3fn/clip-s0/sheet.png"' in html
    points = re.search(r'<polyline points="([^"]+)"', html)
    assert points is not None and len(points.group(1).split()) == FRAMES
    # the worst frame's point is the curve's highest (smallest y), and the marker sits on it
    ys = [float(p.split(",")[1]) for p in points.group(1).split()]
    marker = re.search(r'<circle cx="[\d.]+" cy="([\d.]+)"', html)
    assert marker is not None and float(marker.group(1)) == pytest.approx(min(ys), abs=0.05) == ys[3]
    assert "Frames (5 at 8 fps; worst frame 4)" in html


@pytest.mark.slow
def test_the_player_moves_golden_candidate_and_difference_together(browser: object, report: Path) -> None:
    from report_browser import ReportPage

    page = ReportPage.open(browser, report)  # type: ignore[arg-type]
    clip = page.page.locator("[data-qg-clip]")
    step = int(clip.get_attribute("data-step") or 0)
    assert step == (SIZE + SHEET_GAP) * 3  # 64 px frames shown 3x

    def frames() -> list[tuple[str, str]]:
        return page.page.eval_on_selector_all(
            ".clip-window", "ws => ws.map(w => [w.getAttribute('data-frame'), w.style.backgroundPosition])")

    def shown(frame: int) -> None:
        assert [f for f, _ in frames()] == [str(frame)] * 3
        assert all(position.startswith(f"-{frame * step}px ") or (frame == 0 and position.startswith("0px "))
                   for _, position in frames()), frames()
        assert clip.locator("[data-qg-frame]").text_content() == f"frame {frame + 1} of {FRAMES}"

    shown(3)  # opens at the worst frame
    clip.locator("input[type=range]").fill("1")
    shown(1)
    clip.locator("[data-qg-worst]").click()
    shown(3)
    clip.locator("[data-qg-play]").click()
    page.page.wait_for_timeout(1000 // FPS * 3)
    clip.locator("[data-qg-play]").click()  # pause
    now = int(frames()[0][0])
    assert now != 3
    shown(now)
    assert page.broken_images() == [] and page.problems == []
