"""Which scorecard dimension each kind of damage moves, on the embedded ``tiny`` checkpoint.

For (caption, seed) pairs of the tiny dataset: the bf16 render (the golden) against honest
float8_e4m3fn and float8 with each kind of ``quant_guard.degrade`` damage applied to the DiT,
rendered by the project's own ``quant_guard.pipelines.build_pipeline`` and
``quant_guard.render.render``. Per kind it prints the scorecard's numbers (mean [min, max] over
the pairs) and, per dimension, how far the kind moves it in units of honest float8's worst image
(colour: ΔE p95; sharpness: |log ratio|; structure: 1 - SSIM; artifacts: worst LPIPS region), so
that "the matching dimension moves most" can be read off. Then a proposal of scorecard limits for
the tiny checkpoint: midway on a log scale between the worst honest image and the mildest image of
the matching damage (as the LPIPS/SSIM/PSNR thresholds were chosen).

Usage: python benchmarks/tiny_scorecard.py [--seeds 24] [--pairs-seed 1] [--steps 8] [--kinds colour-shift,soften]
                                          [--strengths 1,2]
       python benchmarks/tiny_scorecard.py --cost 1024   (what the scorecard adds to the gate at 1024x1024)
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")

from quant_guard.checkpoints import ResolvedCheckpoint  # noqa: E402
from quant_guard.degrade import Degradation, degrade  # noqa: E402
from quant_guard.metrics import compare_with_maps  # noqa: E402
from quant_guard.pipelines import build_pipeline  # noqa: E402
from quant_guard.schemes import FLOAT8_E4M3FN, REFERENCE, Scheme  # noqa: E402
from quant_guard.render import RenderRequest, render  # noqa: E402
from quant_guard.scorecard import Scorecard, compute_scorecard  # noqa: E402
from quant_guard.semantic import TinyColourScorer  # noqa: E402
from quant_guard.tiny import dataset as ds  # noqa: E402
from quant_guard.thresholds import EMBEDDED_THRESHOLDS, Thresholds  # noqa: E402
from quant_guard.tiny.build import ensure_tiny_checkpoint  # noqa: E402

HONEST = "honest float8_e4m3fn"
MATCHING = {"colour": Degradation.COLOUR_SHIFT, "sharpness": Degradation.SOFTEN}
# honest float8's sharpness ratios over 72 pairs lie inside this (used to scale sharpness where
# the tiny checkpoint sets no sharpness limit)
SHARPNESS_RANGE = (0.9, 1.1)


@dataclass(frozen=True)
class Pair:
    card: Scorecard
    lpips: float
    psnr: float


def tiny_checkpoint(candidate: Path | None = None) -> ResolvedCheckpoint:
    return ResolvedCheckpoint("tiny", dict(ensure_tiny_checkpoint().components()),
                              {FLOAT8_E4M3FN.id: candidate} if candidate else {}, ds.T5_SEQUENCE_LENGTH)


def render_all(checkpoint: ResolvedCheckpoint, scheme: Scheme, pairs: list[tuple[str, int]],
               steps: int) -> list[np.ndarray]:
    pipe = build_pipeline(checkpoint, scheme, "cpu")
    return [render(pipe, RenderRequest(caption, seed, steps, ds.IMAGE_SIZE, ds.IMAGE_SIZE, ds.EMBEDDED_GUIDANCE,
                                       ds.T5_SEQUENCE_LENGTH)).image for caption, seed in pairs]


def measure(pairs: list[tuple[str, int]], steps: int, kinds: list[Degradation],
            strengths: list[float | None]) -> dict[str, list[Pair]]:
    from safetensors.torch import load_file, save_file

    golden = render_all(tiny_checkpoint(), REFERENCE, pairs, steps)
    scorer = TinyColourScorer()

    def score(images: list[np.ndarray]) -> list[Pair]:
        return [pair(g, c, caption) for g, c, (caption, _) in zip(golden, images, pairs)]

    def pair(g: np.ndarray, c: np.ndarray, caption: str) -> Pair:
        metrics, maps = compare_with_maps(g, c)  # as the gate: LPIPS and SSIM once, their maps reused
        return Pair(compute_scorecard(g, c, prompt=caption, scorer=scorer, lpips_map=maps.lpips,
                                      ssim=(metrics.ssim, maps.ssim)), metrics.lpips, metrics.psnr)

    results = {HONEST: score(render_all(tiny_checkpoint(), FLOAT8_E4M3FN, pairs, steps))}
    state = load_file(str(ensure_tiny_checkpoint().dit))
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            for strength in strengths:
                path = Path(tmp) / f"{kind.value}.safetensors"
                save_file({k: v.contiguous() for k, v in degrade(state, kind, strength=strength).items()}, str(path))
                name = f"float8 + {kind.value}" + ("" if strength is None else f" {strength:g}")
                results[name] = score(render_all(tiny_checkpoint(path), FLOAT8_E4M3FN, pairs, steps))
    return results


# per dimension: the number per image, and how it departs from "no change" (0 = unchanged)
DIMENSIONS = {
    "colour": (lambda p: p.card.colour.delta_e_p95, lambda v: v),
    "sharpness": (lambda p: p.card.sharpness.ratio, lambda v: abs(math.log(max(v, 1e-9)))),
    "structure": (lambda p: p.card.structure.ssim, lambda v: 1.0 - v),
    "artifacts": (lambda p: p.card.artifacts.worst.value if p.card.artifacts.worst else 0.0, lambda v: v),
}


def _cell(values: list[float], fmt: str) -> str:
    return f"{fmt.format(np.mean(values))} [{fmt.format(min(values))}, {fmt.format(max(values))}]"


def print_table(results: dict[str, list[Pair]]) -> None:
    columns = (
        ("ΔE mean", lambda p: p.card.colour.delta_e_mean, "{:.2f}"),
        ("ΔE p95", lambda p: p.card.colour.delta_e_p95, "{:.2f}"),
        ("hue °", lambda p: p.card.colour.hue_shift_deg or 0.0, "{:+.1f}"),
        ("sharpness", lambda p: p.card.sharpness.ratio, "{:.3f}"),
        ("SSIM", lambda p: p.card.structure.ssim, "{:.4f}"),
        ("worst LPIPS region", DIMENSIONS["artifacts"][0], "{:.4f}"),
        ("LPIPS", lambda p: p.lpips, "{:.4f}"),
    )
    print(f"\n{'candidate vs bf16':<26} " + " ".join(f"{name + ' mean [min, max]':>30}" for name, _, _ in columns)
          + "  meaning kept")
    for name, pairs in results.items():
        cells = [_cell([get(p) for p in pairs], fmt) for _, get, fmt in columns]
        kept = sum(bool(p.card.meaning and p.card.meaning.agrees) for p in pairs)
        print(f"{name:<26} " + " ".join(f"{c:>30}" for c in cells) + f"  {kept}/{len(pairs)}")


def print_departures(results: dict[str, list[Pair]]) -> None:
    """Mean over pairs of each dimension's departure, in units of honest float8's worst image."""
    honest = results[HONEST]
    unit = {d: max(dep(get(p)) for p in honest) or 1e-9 for d, (get, dep) in DIMENSIONS.items()}
    print("\nDeparture from bf16 in units of honest float8's worst image (mean over pairs; "
          "colour ΔE p95, sharpness |log ratio|, structure 1-SSIM, artifacts worst LPIPS region):")
    print(f"  {'candidate':<26} " + " ".join(f"{d:>10}" for d in DIMENSIONS) + "   moves most")
    for name, pairs in results.items():
        factors = {d: float(np.mean([dep(get(p)) for p in pairs])) / unit[d] for d, (get, dep) in DIMENSIONS.items()}
        top = max(factors, key=factors.__getitem__)
        print(f"  {name:<26} " + " ".join(f"{factors[d]:>10.1f}" for d in DIMENSIONS) + f"   {top}")


def limit_ratios(p: Pair) -> dict[str, float]:
    """Each dimension's departure from bf16 as a share of its limit on the tiny checkpoint (1 =
    at the limit): structure is the worst of LPIPS, 1 - SSIM and PSNR's squared error against
    theirs; colour ΔE p95 against the colour limit; sharpness |log ratio| against the sharpness
    limits (or honest float8's range, SHARPNESS_RANGE, where the checkpoint sets none)."""
    t = EMBEDDED_THRESHOLDS["tiny"]["float8_e4m3fn"].apply(Thresholds.DEFAULT)
    low = t.sharpness_min if t.sharpness_min is not None else SHARPNESS_RANGE[0]
    high = t.sharpness_max if t.sharpness_max is not None else SHARPNESS_RANGE[1]
    r = p.card.sharpness.ratio
    structure = max(p.lpips / t.lpips_max, (1 - p.card.structure.ssim) / (1 - t.ssim_min),
                    10 ** ((t.psnr_min - p.psnr) / 10))
    return {"structure": structure,
            "colour": p.card.colour.delta_e_p95 / (t.colour_delta_e_p95 or 1.0),
            "sharpness": math.log(r) / math.log(low) if r < 1 else math.log(r) / math.log(high)}


def print_limit_ratios(results: dict[str, list[Pair]]) -> None:
    """Per candidate: each dimension's departure as a share of its limit (mean over pairs), and
    over how many images each dimension was the one that moved most."""
    names = ("structure", "colour", "sharpness")
    print("\nDeparture as a share of the tiny checkpoint's limit (1 = at the limit; mean over pairs) and the "
          "dimension that moves most, per image:")
    print(f"  {'candidate':<30} " + " ".join(f"{d:>10}" for d in names) + "   moves most (images)")
    for name, pairs in results.items():
        ratios = [limit_ratios(p) for p in pairs]
        top = Counter(max(r, key=r.__getitem__) for r in ratios)
        print(f"  {name:<30} " + " ".join(f"{np.mean([r[d] for r in ratios]):>10.2f}" for d in names)
              + "   " + ", ".join(f"{d} {top[d]}" for d in names if top[d]))


def propose_limits(results: dict[str, list[Pair]]) -> None:
    honest = results[HONEST]
    shipped = EMBEDDED_THRESHOLDS["tiny"]["float8_e4m3fn"].colour_delta_e_p95
    if shipped is not None:
        above = ", ".join(f"{name.removeprefix('float8 + ')} {sum(p.card.colour.delta_e_p95 > shipped for p in pairs)}/"
                          f"{len(pairs)}" for name, pairs in results.items())
        print(f"\nShipped tiny limit colour_delta_e_p95 {shipped:g}: images above it per candidate: {above}")
    print("\nProposed scorecard limits for the tiny checkpoint (midway on a log scale between the worst "
          "honest image and the mildest image of the matching damage):")
    colour = next((v for k, v in results.items() if k.startswith(f"float8 + {MATCHING['colour'].value}")), None)
    if colour:
        worst = max(p.card.colour.delta_e_p95 for p in honest)
        mild = min(p.card.colour.delta_e_p95 for p in colour)
        caught = sum(p.card.colour.delta_e_p95 > math.sqrt(worst * mild) for p in colour)
        limit = math.sqrt(worst * mild)
        print(f"  colour_delta_e_p95 max {limit:.2f}  (worst honest {worst:.2f}, mildest "
              f"colour-shift {mild:.2f}; separation x{mild / worst:.1f}; colour-shift images above it {caught}/"
              f"{len(colour)})")
        above = ", ".join(f"{name.removeprefix('float8 + ')} {sum(p.card.colour.delta_e_p95 > limit for p in pairs)}/"
                          f"{len(pairs)}" for name, pairs in results.items())
        print(f"    images above it per candidate: {above}")
    soft = next((v for k, v in results.items() if k.startswith(f"float8 + {MATCHING['sharpness'].value}")), None)
    if soft:
        worst = min(p.card.sharpness.ratio for p in honest)
        mild = max(p.card.sharpness.ratio for p in soft)
        median = float(np.median([p.card.sharpness.ratio for p in soft]))
        if mild < worst:
            limit = math.sqrt(worst * mild)
            print(f"  sharpness_min {limit:.3f}  (worst honest {worst:.3f}, mildest soften {mild:.3f}; "
                  f"separation x{worst / mild:.2f})")
        else:
            below = sum(p.card.sharpness.ratio < worst for p in soft)
            print(f"  sharpness_min: none proposed: soften is not separated per image (worst honest {worst:.3f}, "
                  f"mildest soften {mild:.3f}, median soften {median:.3f}; soften images below the worst honest "
                  f"{below}/{len(soft)})")


def print_cost(size: int, repeats: int = 3) -> None:
    """What the scorecard adds to the gate's comparison at ``size`` x ``size`` (fastest of
    ``repeats``): the gate computes LPIPS/SSIM/PSNR with their maps (``compare_with_maps``) and
    the scorecard reuses them."""
    from scipy.ndimage import gaussian_filter

    from quant_guard.metrics import compare_images, compare_with_maps

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
    p.add_argument("--kinds", default=",".join(k.value for k in Degradation),
                   help="comma-separated damage kinds (default: all)")
    p.add_argument("--cost", type=int, metavar="SIZE", default=0,
                   help="only time the scorecard at SIZE x SIZE (e.g. 1024) and exit")
    p.add_argument("--strengths", default="",
                   help="comma-separated strengths, each kind rendered at each (default: the kind's own)")
    args = p.parse_args(argv)
    if args.cost:
        print_cost(args.cost)
        return 0
    kinds = [Degradation(k) for k in args.kinds.split(",") if k]
    t0 = time.perf_counter()
    pairs = ds.benchmark_pairs(args.seeds, seed=args.pairs_seed)
    print(f"tiny checkpoint, {len(pairs)} (caption, seed) pairs, {args.steps} steps, 64x64; "
          f"damage kinds: {', '.join(k.value for k in kinds)}")
    strengths: list[float | None] = [float(x) for x in args.strengths.split(",") if x] or [None]
    results = measure(pairs, args.steps, kinds, strengths)
    print_table(results)
    print_departures(results)
    print_limit_ratios(results)
    propose_limits(results)
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
