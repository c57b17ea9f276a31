"""A clip's judgement (``judgement.judge`` on T x H x W x 3 frames): the image limits hold each
metric at its worst frame, the scorecard is the worst-LPIPS frame's, and the temporal limits
(``flicker_max``, ``exposure_flicker_max``, ``tlp_max``) see what the frames do over time."""

from __future__ import annotations

import numpy as np
from judge.test_temporal import moving_square

from quant_guard.config.thresholds import Thresholds
from quant_guard.judge.judgement import image_metrics, judge

LIMITS = Thresholds(lpips_max=0.02, ssim_min=0.9, psnr_min=30.0, flicker_max=3.0, exposure_flicker_max=1.0,
                    tlp_max=0.05)


def failed(judgement: object) -> set[str]:
    return {c.key for c in judgement.checks if not c.passed}  # type: ignore[attr-defined]


def test_one_damaged_frame_fails_the_frame_limits_at_that_frame() -> None:
    golden = moving_square(frames=5, size=64)
    candidate = golden.copy()
    noise = np.random.default_rng(1).normal(0, 25, golden.shape[1:])
    candidate[3] = np.clip(golden[3] + noise, 0, 255).astype(np.uint8)  # the other four frames are exact
    judgement = judge(golden, candidate, LIMITS, prompt="a square")
    temporal = judgement.scorecard.temporal
    assert temporal is not None and (temporal.frames, temporal.worst_frame) == (5, 3)
    assert judgement.metrics.psnr == min(temporal.psnr) < 30 and judgement.metrics.lpips == max(temporal.lpips)
    assert np.mean(temporal.psnr[:3]) == float("inf")  # a mean over frames would hide it
    assert {"lpips", "psnr"} <= failed(judgement)
    assert "worst frame 4 of 5" in judgement.scorecard.describe()


def test_exposure_flicker_fails_on_the_temporal_limit_alone() -> None:
    golden = moving_square(frames=5, size=64)
    offsets = np.array([0, 3, -3, 3, -3])  # every frame within 3 levels of its golden
    candidate = np.clip(golden.astype(int) + offsets[:, None, None, None], 0, 255).astype(np.uint8)
    judgement = judge(golden, candidate, LIMITS, prompt="a square")
    assert failed(judgement) == {"flicker_max", "exposure_flicker_max"}, judgement.checks
    assert judgement.metrics.psnr > 38  # the frames alone pass
    words = judgement.scorecard.describe()
    assert "over time: flicker" in words and "exposure flicker" in words


def test_an_image_judgement_has_no_temporal_numbers() -> None:
    golden = moving_square(frames=2, size=64)
    judgement = judge(golden[0], golden[1], LIMITS, prompt="a square")
    assert judgement.scorecard.temporal is None
    assert not {"flicker_max", "exposure_flicker_max", "tlp_max"} & {c.key for c in judgement.checks}


def test_a_drift_comparison_of_clips_takes_the_worst_frame() -> None:
    golden = moving_square(frames=5, size=64)
    candidate = golden.copy()
    candidate[4, :8] = 0
    metrics = image_metrics(golden, candidate)
    assert metrics.psnr == image_metrics(golden[4], candidate[4]).psnr < 40
