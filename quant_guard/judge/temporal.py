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
amount in every frame (a constant offset has the golden's temporal gradient).

The frames are judged in batches (``frames_per_batch``: as many as hold ``BATCH_PIXELS`` pixels,
about 10 frames at 832x480), on ``device`` (default the CPU): each batch is converted once, runs
LPIPS's network once per frame (its features serve the frame's LPIPS and both tLP steps it is in,
the step across a batch edge included) and its SSIM on the same tensors. The numbers are those
of judging frame by frame (``compare_images`` per frame, ``lpips_distance`` per step), to float32
rounding (``tests/judge/test_temporal.py``); ``benchmarks/judge_cost.py --video`` times both."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy as np
    import torch

    from quant_guard.config.thresholds import ImageMetrics

# Pixels per batch of frames: bounds what a batch holds at once, on a CPU or a GPU (per frame of
# 832x480 and per clip, about 16 MB of LPIPS features in float32 and 5 MB of uint8 and float RGB).
BATCH_PIXELS = 4 * 1024 * 1024


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


def compare_frames(golden: np.ndarray, candidate: np.ndarray, *, device: str | None = None) -> ImageMetrics:
    """Each metric at its worst frame, without flicker (a drift comparison); frames in batches."""
    _check_clips(golden, candidate)
    frames, _ = _judge_frames(golden, candidate, device, None, per_frame=True)
    return worst_frame_metrics(frames)


def _check_clips(golden: np.ndarray, candidate: np.ndarray) -> None:
    if golden.ndim != 4 or golden.shape[-1] != 3:
        raise ValueError(f"a clip is a T x H x W x 3 array, got shape {golden.shape}")
    if golden.shape != candidate.shape:
        raise ValueError(f"golden clip {golden.shape} and candidate clip {candidate.shape} differ in shape")
    if golden.shape[0] < 2:
        raise ValueError(f"temporal metrics need at least 2 frames, got {golden.shape[0]}")


def frames_per_batch(height: int, width: int, batch_frames: int | None = None) -> int:
    """``batch_frames`` when given (at least 1), else as many frames as hold ``BATCH_PIXELS`` (at least 1)."""
    if batch_frames is not None:
        if batch_frames < 1:
            raise ValueError(f"batch_frames must be at least 1, got {batch_frames}")
        return batch_frames
    return max(1, BATCH_PIXELS // (height * width))


@dataclass
class _FrameBatch:
    """One batch of frames [start, stop) of both clips, converted once: uint8 N x 3 x H x W tensors
    on the device and each frame's LPIPS features (``metrics.lpips_layers``)."""

    start: int
    rgb8: tuple[torch.Tensor, torch.Tensor]  # golden, candidate
    layers: tuple[list[torch.Tensor], list[torch.Tensor]]
    model: torch.nn.Module  # the shared LPIPS model that computed them
    dtype: torch.dtype  # of the measures (``torch_ops.compute_dtype``)

    def lpips(self) -> list[float]:
        """Each frame's LPIPS against its golden."""
        from quant_guard.judge.metrics import lpips_between

        return lpips_between(self.model, *self.layers).tolist()


def _frame_batches(golden: np.ndarray, candidate: np.ndarray, device: str | torch.device | None,
                   batch_frames: int | None) -> Iterator[_FrameBatch]:
    """The clips' batches in order; the caller holds ``metrics.lpips_lock`` and no_grad."""
    import numpy as np
    import torch

    from quant_guard.judge import metrics
    from quant_guard.judge.torch_ops import compute_dtype

    metrics._check_lpips_pair(golden[0], candidate[0])
    where = torch.device(device if device is not None else "cpu")
    dtype = compute_dtype(where)
    model = metrics.lpips_model_for(where, dtype)
    size = frames_per_batch(*golden.shape[1:3], batch_frames)
    for start in range(0, len(golden), size):
        # np.array copies: the slice of a read-only (memory-mapped) clip cannot back a tensor
        rgb8 = tuple(torch.from_numpy(np.array(clip[start:start + size])).to(where).permute(0, 3, 1, 2)
                     for clip in (golden, candidate))
        layers = tuple(metrics.lpips_layers(model, metrics.lpips_input(frames, dtype)) for frames in rgb8)
        yield _FrameBatch(start, rgb8, layers, model, dtype)  # type: ignore[arg-type]


@dataclass
class _Steps:
    """tLP's LPIPS of each step (t, t+1) of one clip, across batches: the last frame's features of
    the batch before are kept for the step over the edge."""

    values: list[float] = field(default_factory=list)
    last: list[torch.Tensor] | None = None

    def add(self, model: torch.nn.Module, layers: list[torch.Tensor]) -> None:
        from quant_guard.judge.metrics import lpips_between

        if self.last is not None:  # the step over the edge: the batch before's last frame to this one's first
            self.values += lpips_between(model, self.last, [f[:1] for f in layers]).tolist()
        if len(layers[0]) > 1:
            self.values += lpips_between(model, [f[:-1] for f in layers], [f[1:] for f in layers]).tolist()
        self.last = [f[-1:].clone() for f in layers]  # a copy: the batch's features can go


def _judge_frames(golden: np.ndarray, candidate: np.ndarray, device: str | torch.device | None,
                  batch_frames: int | None, *, per_frame: bool) -> tuple[tuple[ImageMetrics, ...], float]:
    """Each frame's metrics (when ``per_frame``, else none) and tLP, batch by batch."""
    import torch

    from quant_guard.judge import metrics
    from quant_guard.judge.torch_ops import psnr, ssim_with_map

    frames: list[ImageMetrics] = []
    steps = (_Steps(), _Steps())  # golden's, candidate's
    with metrics.lpips_lock, torch.no_grad():
        for batch in _frame_batches(golden, candidate, device, batch_frames):
            for clip_steps, layers in zip(steps, batch.layers):
                clip_steps.add(batch.model, layers)
            if not per_frame:
                continue
            for lpips_value, g8, c8 in zip(batch.lpips(), *batch.rgb8):
                g, c = metrics.float_planes(g8, batch.dtype), metrics.float_planes(c8, batch.dtype)
                frames.append(metrics.ImageMetrics(lpips=lpips_value, ssim=float(ssim_with_map(g, c)[0]),
                                                   psnr=psnr(g, c)))
    gaps = [abs(g - c) for g, c in zip(steps[0].values, steps[1].values)]
    return tuple(frames), float(sum(gaps) / len(gaps))


def tlp(golden: np.ndarray, candidate: np.ndarray, *, device: str | None = None,
        batch_frames: int | None = None) -> float:
    """Mean over t of |LPIPS(g_t, g_t+1) - LPIPS(c_t, c_t+1)| (frames in batches, ``frames_per_batch``)."""
    _check_clips(golden, candidate)
    return _judge_frames(golden, candidate, device, batch_frames, per_frame=False)[1]


def frame_lpips(golden: np.ndarray, candidate: np.ndarray, *, device: str | None = None,
                batch_frames: int | None = None) -> list[float]:
    """LPIPS of each frame against its golden, the network run on batches of frames: one LPIPS
    pass over a video (what ``benchmarks/judge_cost.py`` compares the judgement with)."""
    import torch

    from quant_guard.judge import metrics

    _check_clips(golden, candidate)
    with metrics.lpips_lock, torch.no_grad():
        return [value for batch in _frame_batches(golden, candidate, device, batch_frames) for value in batch.lpips()]


def flicker(golden: np.ndarray, candidate: np.ndarray) -> float:
    """Mean |(c_t+1 - c_t) - (g_t+1 - g_t)| over every pixel, channel and t, in pixel levels."""
    import numpy as np

    _check_clips(golden, candidate)
    # int16 holds the gradients' difference (|.| <= 510) and int64 its sum exactly: the float64
    # mean of these integers, without float64 copies of the clips, one step at a time
    total = 0
    for t in range(len(golden) - 1):
        g = golden[t + 1].astype(np.int16) - golden[t]
        c = candidate[t + 1].astype(np.int16) - candidate[t]
        total += int(np.abs(c - g).sum(dtype=np.int64))
    return total / (golden[0].size * (len(golden) - 1))


def exposure_flicker(golden: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over t and channel of |(mean c_t+1 - mean c_t) - (mean g_t+1 - mean g_t)|, frame means
    per channel, in pixel levels."""
    import numpy as np

    _check_clips(golden, candidate)
    g, c = golden.mean(axis=(1, 2), dtype=np.float64), candidate.mean(axis=(1, 2), dtype=np.float64)
    return float(np.abs(np.diff(c, axis=0) - np.diff(g, axis=0)).mean())


def compare_clips(golden: np.ndarray, candidate: np.ndarray, *, device: str | None = None,
                  batch_frames: int | None = None) -> ClipMetrics:
    """Per-frame metrics, tLP, flicker and exposure flicker; frames in batches on ``device``."""
    _check_clips(golden, candidate)
    frames, tlp_value = _judge_frames(golden, candidate, device, batch_frames, per_frame=True)
    return ClipMetrics(frames, tlp_value, flicker(golden, candidate), exposure_flicker(golden, candidate))
