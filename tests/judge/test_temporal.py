"""Clip metrics (quant_guard/judge/temporal.py): tLP and flicker see a candidate that changes
differently from frame to frame than its golden, and stay 0 for an identical clip or one off by
the same amount in every frame."""

from __future__ import annotations

import numpy as np
import pytest

from quant_guard.judge.temporal import compare_clips, compare_frames, exposure_flicker, flicker, tlp


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


def frame_by_frame(golden: np.ndarray, candidate: np.ndarray) -> tuple[list[tuple[float, float, float]], float]:
    """Each frame's (LPIPS, SSIM, PSNR) and tLP as their definitions say, one image pair at a time."""
    from quant_guard.judge.metrics import compare_images, lpips_distance

    frames = [(m.lpips, m.ssim, m.psnr) for m in (compare_images(g, c) for g, c in zip(golden, candidate))]
    steps = [abs(lpips_distance(golden[t], golden[t + 1]) - lpips_distance(candidate[t], candidate[t + 1]))
             for t in range(len(golden) - 1)]
    return frames, sum(steps) / len(steps)


@pytest.mark.parametrize("batch_frames", [1, 2, 3, 7])
def test_batched_frames_give_the_frame_by_frame_numbers(batch_frames: int) -> None:
    """Batches of 1, 2 and 3 frames split 7 frames with edges everywhere (3 leaves one frame alone
    in the last batch); 7 is the whole clip in one batch. Each frame moves and is damaged
    differently, so a frame paired with the wrong golden or a step lost at an edge shows."""
    golden = moving_square(frames=7, size=40)
    rng = np.random.default_rng(2)
    noise = rng.integers(-3, 4, golden.shape) * np.arange(1, 8)[:, None, None, None]  # more each frame
    candidate = np.clip(golden.astype(int) + noise, 0, 255).astype(np.uint8)
    expected_frames, expected_tlp = frame_by_frame(golden, candidate)
    batched = compare_clips(golden, candidate, batch_frames=batch_frames)
    assert len(batched.frames) == len(golden)
    for t, (m, (lp, ss, ps)) in enumerate(zip(batched.frames, expected_frames)):
        assert m.lpips == pytest.approx(lp, abs=1e-5), t
        assert m.ssim == pytest.approx(ss, abs=1e-5), t
        assert m.psnr == pytest.approx(ps, rel=1e-12), t
    assert batched.tlp == pytest.approx(expected_tlp, abs=1e-5)
    assert tlp(golden, candidate, batch_frames=batch_frames) == pytest.approx(expected_tlp, abs=1e-5)



def test_a_drift_comparison_holds_each_metric_at_its_worst_frame() -> None:
    """``compare_frames`` (the drift check's clip metrics) runs the batched pass and keeps each
    metric's worst frame: the frame-by-frame numbers' worst, to the batched tolerance."""
    golden = moving_square(frames=7, size=40)
    scale = np.array([1, 6, 2, 1, 3, 1, 2])[:, None, None, None]  # the worst frame is not the first
    noise = np.random.default_rng(3).integers(-3, 4, golden.shape) * scale
    candidate = np.clip(golden.astype(int) + noise, 0, 255).astype(np.uint8)
    frames, _ = frame_by_frame(golden, candidate)
    worst = compare_frames(golden, candidate)
    assert worst.lpips == pytest.approx(max(f[0] for f in frames), abs=1e-5)
    assert worst.ssim == pytest.approx(min(f[1] for f in frames), abs=1e-5)
    assert worst.psnr == pytest.approx(min(f[2] for f in frames), rel=1e-12)

def test_flicker_counts_exactly_what_the_float64_formula_does() -> None:
    golden = moving_square(frames=6)
    rng = np.random.default_rng(3)
    candidate = np.clip(golden.astype(int) + rng.integers(-40, 41, golden.shape), 0, 255).astype(np.uint8)
    g, c = golden.astype(np.float64), candidate.astype(np.float64)
    assert flicker(golden, candidate) == pytest.approx(np.abs(np.diff(c, axis=0) - np.diff(g, axis=0)).mean(), rel=1e-12)
    means_g, means_c = g.mean(axis=(1, 2)), c.mean(axis=(1, 2))
    expected = np.abs(np.diff(means_c, axis=0) - np.diff(means_g, axis=0)).mean()
    assert exposure_flicker(golden, candidate) == pytest.approx(expected, rel=1e-12)


def test_a_batch_size_below_one_is_refused() -> None:
    golden = moving_square()
    with pytest.raises(ValueError, match="batch_frames must be at least 1"):
        compare_clips(golden, golden, batch_frames=0)
