"""Clip metrics (quant_guard/judge/temporal.py): tLP and flicker see a candidate that changes
differently from frame to frame than its golden, and stay 0 for an identical clip or one off by
the same amount in every frame."""

from __future__ import annotations

import numpy as np
import pytest

from quant_guard.judge.temporal import compare_clips, flicker, tlp


def moving_square(frames: int = 5, size: int = 32) -> np.ndarray:
    """A white square moving right over a textured blue background, uint8 T x H x W x 3."""
    rng = np.random.default_rng(0)
    background = np.clip(rng.normal(0, 12, (size, size, 3)) + [40, 60, 180], 0, 255)
    clip = np.repeat(background[None], frames, axis=0)
    for t in range(frames):
        clip[t, 10:20, 4 + 3 * t:14 + 3 * t] = 230
    return clip.astype(np.uint8)


def test_an_identical_clip_and_a_constant_offset_have_no_temporal_error() -> None:
    golden = moving_square()
    assert tlp(golden, golden) == 0 and flicker(golden, golden) == 0
    brighter = np.clip(golden.astype(int) + 6, 0, 255).astype(np.uint8)  # same change every frame
    assert flicker(golden, brighter) < 0.2  # only where +6 clips at 255


def test_a_per_frame_brightness_flicker_moves_flicker_but_barely_the_frames() -> None:
    golden = moving_square()
    offsets = np.array([0, 6, -6, 6, -6])  # alternating exposure: what a viewer sees as flicker
    flickering = np.clip(golden.astype(int) + offsets[:, None, None, None], 0, 255).astype(np.uint8)
    steady = np.clip(golden.astype(int) + 6, 0, 255).astype(np.uint8)
    bad, good = compare_clips(golden, flickering), compare_clips(golden, steady)
    assert bad.flicker > 5 * max(good.flicker, 0.1)
    # frame-mean steps of +6, -12, +12, -12 levels against the golden's: 10.5 on average (less clipping)
    assert 9 < bad.exposure_flicker < 11 and good.exposure_flicker < 0.2, (bad, good)
    assert bad.worst_psnr[0] == pytest.approx(good.worst_psnr[0], abs=0.5)  # same per-frame error size


def test_a_frozen_clip_moves_tlp() -> None:
    golden = moving_square()
    frozen = np.repeat(golden[:1], len(golden), axis=0)  # frame 0 held: every later frame is wrong too
    metrics = compare_clips(golden, frozen)
    assert metrics.tlp > 0.01 and metrics.worst_lpips[1] == len(golden) - 1


def test_clips_of_other_shapes_or_one_frame_are_refused() -> None:
    golden = moving_square()
    with pytest.raises(ValueError, match="differ in shape"):
        flicker(golden, golden[:-1])
    with pytest.raises(ValueError, match="at least 2 frames"):
        tlp(golden[:1], golden[:1])


def test_independent_pixel_noise_moves_flicker_but_not_exposure_flicker() -> None:
    """Rounding error that is independent per pixel and frame (what float8 does) shows in pixel
    flicker; averaged over a frame it cancels, so exposure flicker stays near 0."""
    golden = moving_square()
    rng = np.random.default_rng(1)
    noisy = np.clip(golden.astype(int) + rng.integers(-4, 5, golden.shape), 0, 255).astype(np.uint8)
    metrics = compare_clips(golden, noisy)
    assert metrics.flicker > 2 and metrics.exposure_flicker < 0.3, metrics
