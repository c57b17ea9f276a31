"""Metrics of a candidate clip against its golden clip (uint8 T x H x W x 3 arrays of equal shape):
per-frame LPIPS, SSIM and PSNR (mean and worst, with the worst frame's index) and two temporal
consistency measures that per-frame metrics cannot see:

- tLP: mean over t of |LPIPS(g_t, g_t+1) - LPIPS(c_t, c_t+1)|, how much the candidate's perceptual
  change from frame to frame differs from the golden's (a clip that wobbles where the golden is
  steady, or freezes where it moves);
- flicker: mean absolute difference of the two clips' temporal gradients (c_t+1 - c_t against
  g_t+1 - g_t), in pixel levels (0-255): brightness or texture that jumps between frames. Error
  that is independent from frame to frame (float8 rounding) counts here too;
- exposure flicker: the same on each frame's mean colour (per channel), so independent per-pixel
  error averages out and what is left is the whole frame getting brighter or darker (or changing
  tint) differently from the golden.

Both are 0 for identical clips and for a candidate that differs from its golden by the same
amount in every frame (a constant offset has the golden's temporal gradient)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from quant_guard.config.thresholds import ImageMetrics


@dataclass(frozen=True)
class ClipMetrics:
    frames: tuple[ImageMetrics, ...]  # per frame, in order
    tlp: float
    flicker: float  # pixel levels
    exposure_flicker: float  # pixel levels

    @property
    def mean_lpips(self) -> float:
        return sum(m.lpips for m in self.frames) / len(self.frames)

    @property
    def worst_lpips(self) -> tuple[float, int]:
        """(LPIPS, frame index) of the frame furthest from its golden."""
        index = max(range(len(self.frames)), key=lambda i: self.frames[i].lpips)
        return self.frames[index].lpips, index

    @property
    def mean_ssim(self) -> float:
        return sum(m.ssim for m in self.frames) / len(self.frames)

    @property
    def worst_ssim(self) -> tuple[float, int]:
        index = min(range(len(self.frames)), key=lambda i: self.frames[i].ssim)
        return self.frames[index].ssim, index

    @property
    def mean_psnr(self) -> float:
        return sum(m.psnr for m in self.frames) / len(self.frames)

    @property
    def worst_psnr(self) -> tuple[float, int]:
        index = min(range(len(self.frames)), key=lambda i: self.frames[i].psnr)
        return self.frames[index].psnr, index

    @property
    def worst(self) -> ImageMetrics:
        """Each metric at its worst frame (the frames may differ): what the image limits hold."""
        return worst_frame_metrics(self.frames)


def worst_frame_metrics(frames: tuple[ImageMetrics, ...]) -> ImageMetrics:
    """LPIPS, SSIM and PSNR each at the frame where it is worst."""
    from quant_guard.config.thresholds import ImageMetrics

    return ImageMetrics(lpips=max(m.lpips for m in frames), ssim=min(m.ssim for m in frames),
                        psnr=min(m.psnr for m in frames))


def compare_frames(golden: np.ndarray, candidate: np.ndarray) -> ImageMetrics:
    """Each metric at its worst frame, without the temporal measures (a drift comparison)."""
    from quant_guard.judge.metrics import compare_images

    _check_clips(golden, candidate)
    return worst_frame_metrics(tuple(compare_images(g, c) for g, c in zip(golden, candidate)))


def _check_clips(golden: np.ndarray, candidate: np.ndarray) -> None:
    if golden.ndim != 4 or golden.shape[-1] != 3:
        raise ValueError(f"a clip is a T x H x W x 3 array, got shape {golden.shape}")
    if golden.shape != candidate.shape:
        raise ValueError(f"golden clip {golden.shape} and candidate clip {candidate.shape} differ in shape")
    if golden.shape[0] < 2:
        raise ValueError(f"temporal metrics need at least 2 frames, got {golden.shape[0]}")


def tlp(golden: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over t of |LPIPS(g_t, g_t+1) - LPIPS(c_t, c_t+1)|."""
    from quant_guard.judge.metrics import lpips_distance

    _check_clips(golden, candidate)
    gaps = [abs(lpips_distance(golden[t], golden[t + 1]) - lpips_distance(candidate[t], candidate[t + 1]))
            for t in range(len(golden) - 1)]
    return float(sum(gaps) / len(gaps))


def flicker(golden: np.ndarray, candidate: np.ndarray) -> float:
    """Mean |(c_t+1 - c_t) - (g_t+1 - g_t)| over every pixel, channel and t, in pixel levels."""
    import numpy as np

    _check_clips(golden, candidate)
    g, c = golden.astype(np.float64), candidate.astype(np.float64)
    return float(np.abs(np.diff(c, axis=0) - np.diff(g, axis=0)).mean())


def exposure_flicker(golden: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over t and channel of |(mean c_t+1 - mean c_t) - (mean g_t+1 - mean g_t)|, frame means
    per channel, in pixel levels."""
    import numpy as np

    _check_clips(golden, candidate)
    g, c = golden.astype(np.float64).mean(axis=(1, 2)), candidate.astype(np.float64).mean(axis=(1, 2))
    return float(np.abs(np.diff(c, axis=0) - np.diff(g, axis=0)).mean())


def compare_clips(golden: np.ndarray, candidate: np.ndarray) -> ClipMetrics:
    from quant_guard.judge.metrics import compare_images

    _check_clips(golden, candidate)
    frames = tuple(compare_images(g, c) for g, c in zip(golden, candidate))
    return ClipMetrics(frames, tlp(golden, candidate), flicker(golden, candidate),
                       exposure_flicker(golden, candidate))
