"""What the gate's judgement of one image pair costs, as a multiple of one LPIPS pass.

The judgement is ``quant_guard.judge.judgement.judge``: LPIPS/SSIM/PSNR with their maps
(``metrics.compare_with_maps``), the scorecard reusing those maps (``scorecard.compute_scorecard``)
and the threshold checks. One LPIPS pass is ``metrics.lpips_distance`` on the same pair. Both run
on the same machine in the same process, taking turns (a busy machine slows them alike), and the
least wall time of ``--repeats`` runs of each is printed, one line per size:

    judge at 1024x1024: 1.42 x one LPIPS pass (LPIPS 0.91 s, judge 1.29 s)

then the cost of each measure inside the judgement, and all of them together as a multiple of
their own LPIPS part (steadier than the first line on a machine shared with other work). The pair is golden-like: a real tiny golden
(golden/tiny) upscaled bicubically with fine texture added, and a candidate that differs from it
as a mild quantization does (a few levels of smooth noise, a slight colour cast).

``--device cuda`` runs both on the GPU (the images' tensors moved there once) and prints GPU
seconds (synchronized); it fails at once when torch sees no CUDA device.

Usage: python benchmarks/judge_cost.py [--sizes 512,1024] [--repeats 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "golden" / "tiny" / "red-circle-blue-s0.png"


def golden_like(size: int) -> np.ndarray:
    """The tiny golden upscaled to ``size`` x ``size`` (bicubic) with a fine texture of a few levels."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    with Image.open(GOLDEN) as img:
        base = np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64)
    rng = np.random.default_rng(0)
    texture = gaussian_filter(rng.standard_normal((size, size, 3)), (1.0, 1.0, 0)) * 24
    return np.clip(np.rint(base + texture), 0, 255).astype(np.uint8)


def mildly_perturbed(golden: np.ndarray) -> np.ndarray:
    """What a mild quantization does: smooth noise of a few levels and a cast of one level."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(1)
    noise = gaussian_filter(rng.standard_normal(golden.shape), (1.5, 1.5, 0)) * 8
    return np.clip(np.rint(golden + noise + np.array([1.0, -1.0, 0.5])), 0, 255).astype(np.uint8)


class Timer:
    """Least wall seconds of the runs of each named piece of work; on CUDA synchronized around each."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.best: dict[str, float] = {}

    def __call__(self, name: str, work: Callable[[], object]) -> object:
        sync = _cuda_sync if self.device == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        result = work()
        sync()
        elapsed = time.perf_counter() - start
        self.best[name] = min(elapsed, self.best.get(name, float("inf")))
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
    import torch

    from quant_guard.config.thresholds import Thresholds
    from quant_guard.judge.judgement import judge
    from quant_guard.judge.metrics import lpips_distance

    golden = golden_like(size)
    candidate = mildly_perturbed(golden)
    # warm-up: the LPIPS model is built (on the device), CUDA kernels are loaded
    judge(golden, candidate, Thresholds.DEFAULT, prompt="warm-up", device=device)
    lpips_distance(golden, candidate, device=device)
    timer = Timer(device)
    for _ in range(repeats):  # taking turns: a busy machine slows both alike
        timer("LPIPS", lambda: lpips_distance(golden, candidate, device=device))
        timer("judge", lambda: judge(golden, candidate, Thresholds.DEFAULT, prompt="bench", device=device))
    lpips_s, judge_s = timer.best["LPIPS"], timer.best["judge"]
    print(f"judge at {size}x{size}: {judge_s / lpips_s:.2f} x one LPIPS pass (LPIPS {lpips_s:.2f} s, judge {judge_s:.2f} s)")
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
    where = torch.cuda.get_device_name() if device == "cuda" else f"{torch.get_num_threads()} torch threads"
    print(f"  (least of {repeats} runs, {where}, load average {os.getloadavg()[0]:.1f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="512,1024", help="comma-separated square sizes (default %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="runs of each; the least is printed (default %(default)s)")
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
    for size in (int(s) for s in args.sizes.split(",")):
        measure(size, args.repeats, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
