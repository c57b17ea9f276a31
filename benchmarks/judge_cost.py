"""What the gate's judgement of one image pair costs, as a multiple of one LPIPS pass.

The judgement is ``quant_guard.judge.judgement.judge``: LPIPS/SSIM/PSNR with their maps
(``metrics.compare_with_maps``), the scorecard reusing those maps (``scorecard.compute_scorecard``)
and the threshold checks. One LPIPS pass is the lpips library's own forward on the same pair
(``lpips.LPIPS(net="alex")(golden, candidate)`` on the judge's model and inputs, ``library_lpips``:
AlexNet once per image), the unit the issue measured in. The judgement (and ``lpips_distance``)
runs that network on both images as one channels-last batch, which on a CPU costs about three
quarters of the library's pass ("LPIPS with its map" below). Both run
on the same machine in the same process, taking turns (a busy machine slows them alike), and the
least wall time of ``--repeats`` runs of each is printed, one line per size:

    judge at 1024x1024: 1.42 x one LPIPS pass (LPIPS 0.91 s, judge 1.29 s)

then the ratio run by run (each judgement against the LPIPS pass just before it: the median and
range; on a shared virtual machine, where one lucky LPIPS run moves the ratio of the least times
by 0.2x, the steadier figure), then the cost of each measure inside the judgement, and all of them together as a multiple of
their own LPIPS part (the judgement's own LPIPS, batched; steadier than the first line on a machine
shared with other work, where the least time of a pass swings by 20% from run to run). The pair is golden-like: a real tiny golden
(golden/tiny) upscaled bicubically with fine texture added, and a candidate that differs from it
as a mild quantization does (a few levels of smooth noise, a slight colour cast).

A video (``--video``, default 33 frames of 832x480, Wan's size; ``--video ''`` skips it) gets a
line of the same form:

    judge at 33x832x480 video: 1.46 x one LPIPS pass (LPIPS 6.72 s, judge 9.81 s; frame by frame 29.10 s, 4.33 x)

where the judgement is ``temporal.compare_clips`` (per-frame LPIPS, SSIM and PSNR, tLP, flicker,
exposure flicker; frames in batches) and one LPIPS pass over a video is LPIPS of every frame
against its golden, the network run on the same batches (``temporal.frame_lpips``: 2 x 33 frames
through AlexNet). "frame by frame" is the judgement as it was before batching, timed in the same
loop: ``compare_images`` per frame and two library LPIPS passes per tLP step (6 x 33 - 4 frames
through AlexNet), flicker on float64 copies of the clips. Its breakdown follows, summed over the
batches. The clip is golden-like: the golden above panning 3 px a frame, each candidate frame
perturbed as above with noise of its own.

``--device cuda`` runs both on the GPU (the images' tensors moved there once) and prints GPU
seconds (synchronized); it fails at once when torch sees no CUDA device.

Usage: python benchmarks/judge_cost.py [--sizes 512,1024] [--video 33x832x480] [--repeats 5]
       [--video-repeats 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "golden" / "tiny" / "red-circle-blue-s0.png"


def golden_like(size: int, width: int | None = None) -> np.ndarray:
    """The tiny golden upscaled to ``size`` x ``width`` (default square; bicubic) with a fine
    texture of a few levels."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    width = width or size
    with Image.open(GOLDEN) as img:
        base = np.asarray(img.convert("RGB").resize((width, size), Image.Resampling.BICUBIC), dtype=np.float64)
    rng = np.random.default_rng(0)
    texture = gaussian_filter(rng.standard_normal((size, width, 3)), (1.0, 1.0, 0)) * 24
    return np.clip(np.rint(base + texture), 0, 255).astype(np.uint8)


def mildly_perturbed(golden: np.ndarray, seed: int = 1) -> np.ndarray:
    """What a mild quantization does: smooth noise of a few levels and a cast of one level."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    noise = gaussian_filter(rng.standard_normal(golden.shape), (1.5, 1.5, 0)) * 8
    return np.clip(np.rint(golden + noise + np.array([1.0, -1.0, 0.5])), 0, 255).astype(np.uint8)


def library_lpips(golden: np.ndarray, candidate: np.ndarray, device: str) -> float:
    """One LPIPS pass as the lpips library runs it: ``LPIPS.forward`` (spatial off), each image
    through AlexNet on its own."""
    import torch

    from quant_guard.judge import metrics

    pair = metrics.ImagePair(golden, candidate, device)
    with metrics.lpips_lock, torch.no_grad():
        model = metrics.lpips_model_for(pair.device, pair.dtype)  # built with spatial off
        batch = pair.lpips_batch()
        return float(model(batch[:1], batch[1:]).item())


class Timer:
    """Least wall seconds of the runs of each named piece of work; on CUDA synchronized around each."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.best: dict[str, float] = {}
        self.runs: dict[str, list[float]] = {}  # every run's seconds, in order

    def paired_ratios(self, name: str, base: str) -> str:
        """The median and range of ``name`` / ``base`` over the runs, each against the ``base`` run
        just before it (timed back to back: a slower or faster spell of a shared machine touches
        both alike)."""
        ratios = sorted(n / b for n, b in zip(self.runs[name], self.runs[base]))
        return f"{statistics.median(ratios):.2f} x ({ratios[0]:.2f}-{ratios[-1]:.2f})"

    def __call__(self, name: str, work: Callable[[], object]) -> object:
        sync = _cuda_sync if self.device == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        result = work()
        sync()
        elapsed = time.perf_counter() - start
        self.best[name] = min(elapsed, self.best.get(name, float("inf")))
        self.runs.setdefault(name, []).append(elapsed)
        return result


def _cuda_sync() -> None:
    import torch

    torch.cuda.synchronize()


def breakdown(golden: np.ndarray, candidate: np.ndarray, device: str) -> dict[str, Callable[[], object]]:
    """The measures inside the judgement, each as the judgement runs it (images converted once,
    maps reused)."""
    from quant_guard.judge import metrics, scorecard
    from quant_guard.judge.regions import box_size
    from quant_guard.judge.torch_ops import rgb_to_lab

    side = box_size(*golden.shape[:2])
    pair = metrics.ImagePair(golden, candidate, device)
    lab_g, lab_c = pair.lab
    ssim_value, ssim_map = pair.ssim()
    lpips_map = metrics._lpips_with_map(pair)[1]
    return {
        "convert both images": lambda: metrics.ImagePair(golden, candidate, device).rgb,
        "LPIPS with its map": lambda: metrics._lpips_with_map(pair),
        "SSIM with its map": lambda: pair.ssim(),
        "PSNR": lambda: metrics.psnr(golden, candidate),
        "CIELAB of both images": lambda: [rgb_to_lab(rgb8, pair.dtype) for rgb8 in pair.rgb8],
        "colour (CIEDE2000, hue)": lambda: scorecard.colour_score(lab_g, lab_c),
        "sharpness (LoG, tiles)": lambda: scorecard.sharpness_score(lab_g[0], lab_c[0], side),
        "structure (SSIM tiles)": lambda: scorecard.structure_score(golden, candidate, side, (ssim_value, ssim_map)),
        "artifacts (LPIPS regions)": lambda: scorecard.artifact_score(golden, candidate, lpips_map),
    }


def measure(size: int, repeats: int, device: str) -> None:
    from quant_guard.config.thresholds import Thresholds
    from quant_guard.judge.judgement import judge

    golden = golden_like(size)
    candidate = mildly_perturbed(golden)
    # warm-up: the LPIPS model is built (on the device), CUDA kernels are loaded
    judge(golden, candidate, Thresholds.DEFAULT, prompt="warm-up", device=device)
    library_lpips(golden, candidate, device)
    timer = Timer(device)
    for _ in range(repeats):  # taking turns: a busy machine slows both alike
        timer("LPIPS", lambda: library_lpips(golden, candidate, device))
        timer("judge", lambda: judge(golden, candidate, Thresholds.DEFAULT, prompt="bench", device=device))
    lpips_s, judge_s = timer.best["LPIPS"], timer.best["judge"]
    print(f"judge at {size}x{size}: {judge_s / lpips_s:.2f} x one LPIPS pass (LPIPS {lpips_s:.2f} s, judge {judge_s:.2f} s)")
    print(f"  run by run: {timer.paired_ratios('judge', 'LPIPS')} one LPIPS pass, median (range) of {repeats} pairs")
    parts = breakdown(golden, candidate, device)
    for _ in range(repeats):
        for name, work in parts.items():
            timer(name, work)
    for name in parts:
        seconds = timer.best[name]
        print(f"  {name:<28} {seconds:6.3f} s  {seconds / lpips_s:5.2f} x LPIPS")
    # A steadier figure on a shared machine, where the least time of one LPIPS pass swings 2x run to run:
    # everything the judgement does as a multiple of its own LPIPS part, both timed in the same loop.
    inner = timer.best["LPIPS with its map"]
    print(f"  all measures together: {sum(timer.best[n] for n in parts) / inner:.2f} x their LPIPS part")
    _print_where(repeats, device)


def golden_like_clip(frames: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A golden clip (the golden-like image panning 3 px a frame) and its mildly perturbed candidate."""
    still = golden_like(height, width)
    golden = np.stack([np.roll(still, 3 * t, axis=1) for t in range(frames)])
    candidate = np.stack([mildly_perturbed(frame, seed=1 + t) for t, frame in enumerate(golden)])
    return golden, candidate


def frame_by_frame(golden: np.ndarray, candidate: np.ndarray, device: str) -> tuple[list[object], float, float, float]:
    """The video judgement before batching: an image pair per frame and two per tLP step."""
    from quant_guard.judge.metrics import compare_images

    frames = [compare_images(g, c, device=device) for g, c in zip(golden, candidate)]
    steps = [abs(library_lpips(golden[t], golden[t + 1], device)
                 - library_lpips(candidate[t], candidate[t + 1], device)) for t in range(len(golden) - 1)]
    g, c = golden.astype(np.float64), candidate.astype(np.float64)
    flicker = float(np.abs(np.diff(c, axis=0) - np.diff(g, axis=0)).mean())
    g, c = g.mean(axis=(1, 2)), c.mean(axis=(1, 2))
    return frames, sum(steps) / len(steps), flicker, float(np.abs(np.diff(c, axis=0) - np.diff(g, axis=0)).mean())


def video_breakdown(golden: np.ndarray, candidate: np.ndarray, device: str) -> dict[str, float]:
    """Seconds of each measure inside ``compare_clips``, summed over its batches (as it runs them)."""
    import torch

    from quant_guard.judge import metrics, temporal
    from quant_guard.judge.torch_ops import ssim_with_map

    seconds: dict[str, float] = {}

    def timed(name: str, work: Callable[[], object]) -> object:
        timer = Timer(device)
        result = timer(name, work)
        seconds[name] = seconds.get(name, 0.0) + timer.best[name]
        return result

    frames = f"2 x {len(golden)} frames"
    with metrics.lpips_lock, torch.no_grad():
        batches = temporal._frame_batches(golden, candidate, device, None)
        steps = (temporal._Steps(), temporal._Steps())
        while (batch := timed(f"convert, LPIPS network ({frames})", lambda: next(batches, None))) is not None:
            assert isinstance(batch, temporal._FrameBatch)
            timed("frame LPIPS from features", batch.lpips)
            timed("tLP steps from features", lambda: [s.add(batch.model, f) for s, f in zip(steps, batch.layers)])
            timed("SSIM per frame", lambda: [ssim_with_map(g.to(batch.dtype), c.to(batch.dtype))
                                             for g, c in zip(*batch.rgb8)])
    timed("PSNR per frame", lambda: [metrics.psnr(g, c) for g, c in zip(golden, candidate)])
    timed("flicker", lambda: temporal.flicker(golden, candidate))
    timed("exposure flicker", lambda: temporal.exposure_flicker(golden, candidate))
    return seconds


def measure_video(shape: str, repeats: int, device: str) -> None:
    from quant_guard.judge.temporal import compare_clips, frame_lpips

    frames, width, height = (int(n) for n in shape.split("x"))
    golden, candidate = golden_like_clip(frames, height, width)
    compare_clips(golden, candidate, device=device)  # warm-up
    timer = Timer(device)
    parts: dict[str, float] = {}
    for _ in range(repeats):  # taking turns, as for images
        timer("LPIPS", lambda: frame_lpips(golden, candidate, device=device))
        timer("judge", lambda: compare_clips(golden, candidate, device=device))
        timer("frame by frame", lambda: frame_by_frame(golden, candidate, device))
        for name, seconds in video_breakdown(golden, candidate, device).items():
            parts[name] = min(seconds, parts.get(name, float("inf")))
    lpips_s, judge_s, before_s = (timer.best[n] for n in ("LPIPS", "judge", "frame by frame"))
    print(f"judge at {shape} video: {judge_s / lpips_s:.2f} x one LPIPS pass (LPIPS {lpips_s:.2f} s, "
          f"judge {judge_s:.2f} s; frame by frame {before_s:.2f} s, {before_s / lpips_s:.2f} x)")
    for name, seconds in parts.items():
        print(f"  {name:<36} {seconds:6.3f} s  {seconds / lpips_s:5.2f} x LPIPS")
    # steadier on a shared machine, as for images: the parts against their own LPIPS pass (the
    # conversion, the network and the frames' LPIPS), all timed in the same loop
    inner = sum(seconds for name, seconds in parts.items() if name.startswith(("convert", "frame LPIPS")))
    print(f"  all measures together: {sum(parts.values()) / inner:.2f} x their LPIPS part")
    _print_where(repeats, device)


def _print_where(repeats: int, device: str) -> None:
    import torch

    where = torch.cuda.get_device_name() if device == "cuda" else f"{torch.get_num_threads()} torch threads"
    print(f"  (least of {repeats} runs, {where}, load average {os.getloadavg()[0]:.1f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="512,1024", help="comma-separated square sizes, '' for none (default %(default)s)")
    p.add_argument("--video", default="33x832x480",
                   help="a video as FRAMESxWIDTHxHEIGHT, '' for none (default %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="runs of each; the least is printed (default %(default)s)")
    p.add_argument("--video-repeats", type=int, default=2, help="runs of each for the video (default %(default)s)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=0,
                   help="torch's CPU threads for both (default: torch's own choice, one per core)")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
            return 2
    for size in (int(s) for s in args.sizes.split(",") if s):
        measure(size, args.repeats, args.device)
    if args.video:
        measure_video(args.video, args.video_repeats, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
