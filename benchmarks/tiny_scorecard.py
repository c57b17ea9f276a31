"""Which scorecard dimension each kind of damage moves, on the embedded ``tiny`` checkpoint.

For (caption, seed) pairs of the tiny dataset, the bf16 render (the golden) against:

- honest float8_e4m3fn, and honest float8 against a golden "from another CPU" (the golden with
  the cross-CPU drift of ``tests/drift_support.drift_like``): what a limit must let through;
- colour-only damage: float8 with the VAE decoder's final layer off by ``--cast`` on its green
  output (``quant_guard.tools.degrade``, kind ``colour-cast``): a cast and nothing else;
- softening only: the float8 render blurred by a Gaussian of ``--sigma`` px
  (``quant_guard.tools.degrade.soften_image``);
- DiT damage kinds for comparison (``--kinds``, default ``colour-shift``).

rendered by the project's own ``quant_guard.model.pipelines.build_pipeline`` and
``quant_guard.model.render.render``. It prints the scorecard's numbers (mean [min, max] over the pairs);
each dimension's departure as a share of the tiny checkpoint's limit and the dimension that moves
most; how many images each limit catches; and a proposal of scorecard limits: midway on a log
scale between the worst honest image (either golden) and the mildest image of the damage aimed at
that dimension (as the LPIPS/SSIM/PSNR thresholds were chosen).

Usage: python benchmarks/tiny_scorecard.py [--seeds 24] [--pairs-seed 1] [--steps 8] [--cast 0.05]
                                          [--sigma 0.6] [--kinds colour-shift]
       python benchmarks/tiny_scorecard.py --cost 1024   (what the scorecard adds to the gate at 1024x1024)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # drift_support: the cross-CPU drift

from drift_support import drift_like  # noqa: E402

from quant_guard.model.checkpoints import ResolvedCheckpoint, tiny_resolved  # noqa: E402
from quant_guard.tools.degrade import (COLOUR_CAST_OFFSET, SOFTEN_SIGMA, THRESHOLD_KINDS, Degradation,  # noqa: E402
                                 degrade, soften_image)
from quant_guard.judge.metrics import compare_with_maps  # noqa: E402
from quant_guard.model.pipelines import build_pipeline  # noqa: E402
from quant_guard.model.render import RenderRequest, render  # noqa: E402
from quant_guard.config.schemes import FLOAT8_E4M3FN, REFERENCE, Scheme  # noqa: E402
from quant_guard.judge.scorecard import Scorecard, compute_scorecard  # noqa: E402
from quant_guard.judge.semantic import TinySceneScorer  # noqa: E402
from quant_guard.config.thresholds import EMBEDDED_THRESHOLDS, Thresholds  # noqa: E402
from quant_guard.judge import scenes as ds  # noqa: E402
from quant_guard.model.tiny.build import ensure_tiny_checkpoint  # noqa: E402

HONEST = "honest float8_e4m3fn"
DRIFTED = "honest, golden from another CPU"
HONEST_ROWS = (HONEST, DRIFTED)
CAST, SOFTEN = "colour-cast", "soften"  # the damage aimed at colour, at sharpness
DIMENSIONS = ("colour", "sharpness", "structure")  # the scorecard dimensions the tiny checkpoint limits


@dataclass(frozen=True)
class Pair:
    card: Scorecard
    lpips: float
    ssim: float
    psnr: float
    plain_laplacian: float  # the sharpness ratio with a plain 3x3 Laplacian, the measure SHARPNESS_SIGMA replaced


def plain_laplacian_ratio(golden: np.ndarray, candidate: np.ndarray) -> float:
    from scipy.ndimage import laplace
    from skimage.color import rgb2lab

    energy = [float((laplace(rgb2lab(img / 255.0)[..., 0], mode="reflect") ** 2).mean()) for img in (golden, candidate)]
    return energy[1] / max(energy[0], 1e-9)


def tiny_checkpoint(dit: Path | None = None, vae: Path | None = None) -> ResolvedCheckpoint:
    return tiny_resolved(ensure_tiny_checkpoint(), {FLOAT8_E4M3FN.id: dit} if dit else None, vae=vae)


def render_all(checkpoint: ResolvedCheckpoint, scheme: Scheme, pairs: list[tuple[str, int]],
               steps: int) -> list[np.ndarray]:
    pipe = build_pipeline(checkpoint, scheme, "cpu")
    return [render(pipe, RenderRequest(caption, seed, steps, ds.IMAGE_SIZE, ds.IMAGE_SIZE, ds.EMBEDDED_GUIDANCE,
                                       ds.T5_SEQUENCE_LENGTH)).image for caption, seed in pairs]


def _damaged_file(tmp: Path, source: Path, kind: Degradation, strength: float | None) -> Path:
    from safetensors.torch import load_file, save_file

    path = tmp / f"{kind.value}-{strength}.safetensors"
    save_file({k: v.contiguous() for k, v in degrade(load_file(str(source)), kind, strength=strength).items()},
              str(path))
    return path


def measure(pairs: list[tuple[str, int]], steps: int, casts: list[float], sigmas: list[float],
            kinds: list[Degradation]) -> dict[str, list[Pair]]:
    tiny = ensure_tiny_checkpoint()
    golden = render_all(tiny_checkpoint(), REFERENCE, pairs, steps)
    scorer = TinySceneScorer()

    def pair(g: np.ndarray, c: np.ndarray, caption: str) -> Pair:
        metrics, maps = compare_with_maps(g, c)  # as the gate: LPIPS and SSIM once, their maps reused
        return Pair(compute_scorecard(g, c, prompt=caption, scorer=scorer, lpips_map=maps.lpips,
                                      ssim=(metrics.ssim, maps.ssim)), metrics.lpips, metrics.ssim, metrics.psnr,
                    plain_laplacian_ratio(g, c))

    def score(images: list[np.ndarray], goldens: list[np.ndarray] = golden) -> list[Pair]:
        return [pair(g, c, caption) for g, c, (caption, _) in zip(goldens, images, pairs)]

    honest = render_all(tiny_checkpoint(), FLOAT8_E4M3FN, pairs, steps)
    results = {HONEST: score(honest),
               DRIFTED: score(honest, [drift_like(g, seed=i) for i, g in enumerate(golden)])}
    with tempfile.TemporaryDirectory() as tmp:
        for offset in casts:
            vae = _damaged_file(Path(tmp), tiny.vae, Degradation.COLOUR_CAST, offset)
            results[f"{CAST} {offset:+g}"] = score(render_all(tiny_checkpoint(vae=vae), FLOAT8_E4M3FN, pairs, steps))
        for sigma in sigmas:
            results[f"{SOFTEN} {sigma:g} px"] = score([soften_image(c, sigma) for c in honest])
        for kind in kinds:
            dit = _damaged_file(Path(tmp), tiny.dit, kind, None)
            results[f"DiT {kind.value}"] = score(render_all(tiny_checkpoint(dit), FLOAT8_E4M3FN, pairs, steps))
    return results


def _cell(values: list[float], fmt: str) -> str:
    return f"{fmt.format(np.mean(values))} [{fmt.format(min(values))}, {fmt.format(max(values))}]"


def _worst_region(p: Pair) -> float:
    return p.card.artifacts.worst.value if p.card.artifacts.worst else 0.0


def print_table(results: dict[str, list[Pair]]) -> None:
    columns: tuple[tuple[str, Callable[[Pair], float], str], ...] = (
        ("ΔE p95", lambda p: p.card.colour.delta_e_p95, "{:.2f}"),
        ("hue °", lambda p: p.card.colour.hue_shift_deg or 0.0, "{:+.1f}"),
        ("sharpness", lambda p: p.card.sharpness.ratio, "{:.3f}"),
        ("SSIM", lambda p: p.ssim, "{:.4f}"),
        ("worst LPIPS region", _worst_region, "{:.4f}"),
        ("LPIPS", lambda p: p.lpips, "{:.4f}"),
        ("PSNR dB", lambda p: p.psnr, "{:.1f}"),
    )
    print(f"\n{'candidate vs bf16 golden':<32} " + " ".join(f"{name + ' mean [min, max]':>30}"
                                                          for name, _, _ in columns) + "  meaning kept")
    for name, pairs in results.items():
        cells = [_cell([get(p) for p in pairs], fmt) for _, get, fmt in columns]
        kept = sum(bool(p.card.meaning and p.card.meaning.agrees) for p in pairs)
        print(f"{name:<32} " + " ".join(f"{c:>30}" for c in cells) + f"  {kept}/{len(pairs)}")


def print_measures(results: dict[str, list[Pair]]) -> None:
    """The sharpness ratio against the plain 3x3 Laplacian's: which one reads cross-CPU drift as
    lost detail."""
    print("\nSharpness measures, mean [min, max]: the scorecard's (Laplacian of Gaussian) and a plain 3x3 Laplacian's:")
    for name, pairs in results.items():
        print(f"  {name:<32} {_cell([p.card.sharpness.ratio for p in pairs], '{:.3f}'):>24} "
              f"{_cell([p.plain_laplacian for p in pairs], '{:.3f}'):>24}")


def tiny_limits() -> Thresholds:
    return EMBEDDED_THRESHOLDS["tiny"]["float8_e4m3fn"].apply(Thresholds.DEFAULT)


def limit_shares(p: Pair, t: Thresholds) -> dict[str, float]:
    """Each scorecard dimension's departure from bf16 as a share of its limit on the tiny
    checkpoint (1 = at the limit): colour ΔE p95 against its limit; sharpness |log ratio| against
    |log sharpness_min| (softer) or |log sharpness_max| (sharper; |log sharpness_min| where none);
    structure 1 - SSIM against 1 - ssim_min."""
    r = p.card.sharpness.ratio
    low = t.sharpness_min or 0.9
    high = t.sharpness_max or 1 / low
    return {"colour": p.card.colour.delta_e_p95 / (t.colour_delta_e_p95 or 1.0),
            "sharpness": math.log(r) / math.log(low) if r < 1 else math.log(r) / math.log(high),
            "structure": (1 - p.ssim) / (1 - t.ssim_min)}


def print_limit_shares(results: dict[str, list[Pair]]) -> None:
    """Per candidate: each dimension's departure as a share of its limit (mean over pairs), and
    on how many images each dimension was the one that moved most."""
    t = tiny_limits()
    print(f"\nDeparture as a share of the tiny float8 limit (1 = at the limit; mean over pairs): colour ΔE p95 / "
          f"{t.colour_delta_e_p95}, sharpness |log ratio| / |log {t.sharpness_min}|, structure (1 - SSIM) / "
          f"(1 - {t.ssim_min}); and the dimension that moves most, per image:")
    print(f"  {'candidate':<32} " + " ".join(f"{d:>10}" for d in DIMENSIONS) + "   moves most (images)")
    for name, pairs in results.items():
        shares = [limit_shares(p, t) for p in pairs]
        top = Counter(max(s, key=s.__getitem__) for s in shares)
        print(f"  {name:<32} " + " ".join(f"{np.mean([s[d] for s in shares]):>10.2f}" for d in DIMENSIONS)
              + "   " + ", ".join(f"{d} {top[d]}" for d in DIMENSIONS if top[d]))


def print_caught(results: dict[str, list[Pair]]) -> None:
    """Per candidate: how many images each limit of the tiny checkpoint fails."""
    t = tiny_limits()
    limits: dict[str, Callable[[Pair], bool]] = {
        f"ΔE p95 > {t.colour_delta_e_p95:g}": lambda p: p.card.colour.delta_e_p95 > (t.colour_delta_e_p95 or math.inf),
        f"sharpness < {t.sharpness_min:g}": lambda p: p.card.sharpness.ratio < (t.sharpness_min or 0.0),
        f"LPIPS > {t.lpips_max:g}": lambda p: p.lpips > t.lpips_max,
        f"SSIM < {t.ssim_min:g}": lambda p: p.ssim < t.ssim_min,
        f"PSNR < {t.psnr_min:g}": lambda p: p.psnr < t.psnr_min,
    }
    print("\nImages each shipped tiny float8 limit fails:")
    print(f"  {'candidate':<32} " + " ".join(f"{name:>16}" for name in limits))
    for name, pairs in results.items():
        print(f"  {name:<32} " + " ".join(f"{sum(map(fails, pairs)):>13}/{len(pairs):<2}" for fails in limits.values()))


def propose_limits(results: dict[str, list[Pair]]) -> None:
    """Per damage row aimed at colour or sharpness: the limit midway on a log scale between the
    worst honest image (either golden) and the mildest image of that row."""
    honest = [p for name in HONEST_ROWS for p in results[name]]
    worst_colour = max(p.card.colour.delta_e_p95 for p in honest)
    worst_sharpness = min(p.card.sharpness.ratio for p in honest)
    print("\nProposed scorecard limits for the tiny checkpoint (midway on a log scale between the worst honest "
          f"image, either golden: ΔE p95 {worst_colour:.2f}, sharpness {worst_sharpness:.3f}; and the mildest image "
          "of each damage aimed at that dimension):")
    for name, pairs in results.items():
        if name.startswith(CAST + " "):
            mild = min(p.card.colour.delta_e_p95 for p in pairs)
            print(f"  {name:<24} colour_delta_e_p95 max {math.sqrt(worst_colour * mild):.2f}  (mildest {mild:.2f}; "
                  f"separation x{mild / worst_colour:.2f})")
        elif name.startswith(SOFTEN + " "):
            mild = max(p.card.sharpness.ratio for p in pairs)
            print(f"  {name:<24} sharpness_min {math.sqrt(worst_sharpness * mild):.3f}  (mildest {mild:.3f}; "
                  f"separation x{worst_sharpness / mild:.2f})")


def print_cost(size: int, repeats: int = 3) -> None:
    """What the scorecard adds to the gate's comparison at ``size`` x ``size`` (fastest of
    ``repeats``): the gate computes LPIPS/SSIM/PSNR with their maps (``compare_with_maps``) and
    the scorecard reuses them."""
    from scipy.ndimage import gaussian_filter

    from quant_guard.judge.metrics import compare_images, compare_with_maps

    rng = np.random.default_rng(0)
    golden = np.clip(gaussian_filter(rng.random((size, size, 3)), (2, 2, 0)) * 765 - 255, 0, 255).astype(np.uint8)
    candidate = np.clip(golden.astype(np.int16) + rng.integers(-4, 5, golden.shape), 0, 255).astype(np.uint8)
    compare_images(golden[:64, :64].copy(), candidate[:64, :64].copy())  # the LPIPS model is built once

    def fastest(work: object) -> tuple[float, float]:
        """(wall, CPU) seconds, each the least of ``repeats`` runs: CPU time is what a loaded
        machine distorts least."""
        walls, cpus = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            work()  # type: ignore[operator]
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        return min(walls), min(cpus)

    metrics, maps = compare_with_maps(golden, candidate)
    rows = {
        "LPIPS/SSIM/PSNR (compare_images)": fastest(lambda: compare_images(golden, candidate)),
        "the same with their maps (compare_with_maps)": fastest(lambda: compare_with_maps(golden, candidate)),
        "the scorecard on those maps": fastest(lambda: compute_scorecard(golden, candidate, lpips_map=maps.lpips,
                                                                         ssim=(metrics.ssim, maps.ssim))),
        "the scorecard computing its own maps": fastest(lambda: compute_scorecard(golden, candidate)),
    }
    print(f"\nCost at {size}x{size} (least of {repeats} runs, {torch_threads()} torch threads, load average "
          f"{os.getloadavg()[0]:.1f}):")
    for name, (wall, cpu) in rows.items():
        print(f"  {name:<46} {wall:6.2f} s wall {cpu:6.2f} s CPU")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=24, help="(caption, seed) pairs")
    p.add_argument("--pairs-seed", type=int, default=1)
    p.add_argument("--steps", type=int, default=ds.RECOMMENDED_STEPS)
    p.add_argument("--cast", default=str(COLOUR_CAST_OFFSET),
                   help="comma-separated colour-cast offsets of the VAE's green output (default %(default)s)")
    p.add_argument("--sigma", default=str(SOFTEN_SIGMA),
                   help="comma-separated blur sigmas in px of the softening (default %(default)s)")
    p.add_argument("--kinds", default=Degradation.COLOUR_SHIFT.value,
                   help="comma-separated DiT damage kinds for comparison, at their default strength "
                        "(default %(default)s; '' for none)")
    p.add_argument("--cost", type=int, metavar="SIZE", default=0,
                   help="only time the scorecard at SIZE x SIZE (e.g. 1024) and exit")
    args = p.parse_args(argv)
    if args.cost:
        print_cost(args.cost)
        return 0
    kinds = [Degradation(k) for k in args.kinds.split(",") if k]
    dit_kinds = [*THRESHOLD_KINDS, Degradation.COLOUR_SHIFT]
    if any(k not in dit_kinds for k in kinds):
        p.error(f"--kinds takes DiT kinds: {', '.join(k.value for k in dit_kinds)}")
    casts = [float(x) for x in args.cast.split(",") if x]
    sigmas = [float(x) for x in args.sigma.split(",") if x]
    t0 = time.perf_counter()
    pairs = ds.benchmark_pairs(args.seeds, seed=args.pairs_seed)
    print(f"tiny checkpoint, {len(pairs)} (caption, seed) pairs, {args.steps} steps, 64x64; colour-cast "
          f"{', '.join(f'{c:+g}' for c in casts)}; soften sigma {', '.join(f'{x:g}' for x in sigmas)} px; "
          f"DiT kinds: {', '.join(k.value for k in kinds) or 'none'}")
    results = measure(pairs, args.steps, casts, sigmas, kinds)
    print_table(results)
    print_measures(results)
    print_limit_shares(results)
    print_caught(results)
    propose_limits(results)
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
