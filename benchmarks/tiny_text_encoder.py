"""Text encoder and VAE schemes on the embedded ``tiny`` checkpoint (issue 29), through the real
DiffSynth FLUX.1 pipeline on CPU: for each candidate, its render of (caption, seed) pairs against
the bf16 render of the same pair, LPIPS / SSIM / PSNR (min-max over the pairs), and how many
images pass the package defaults and the thresholds the gate gives the candidate's scheme kind.

Candidates:

- honest, one component alone: the T5 text encoder in float8_e4m3fn storage and in
  torchao_int8_w8a16, the CLIP encoder and the VAE in float8 storage, the DiT in float8;
- honest combinations: DiT + T5 in float8, DiT in float8 + T5 in int8 (no thresholds of their
  own: the gate holds them to the loosest of their parts', ``embedded_thresholds``);
- damaged: the T5 damaged by ``text-encoder-noise`` (noise of a fraction of each weight's std on
  one T5 block) at several strengths, loaded under each honest T5 scheme (the bf16 file damaged,
  then stored in float8 or quantized to int8, as a broken quantizer's output would be), and at
  the default strength under the DiT + T5 combinations; the VAE with a colour cast
  (``colour-cast``) in float8.

Then, per component kind, the suggested thresholds: each limit midway on a log scale between
the kind's worst honest image and the mildest text encoder damaged at the degrade default
strength (``TEXT_ENCODER_NOISE_FRACTION``; its own T5 kind's damage for the T5 kinds, the mildest of
either for CLIP and the VAE), as the tiny's DiT thresholds were chosen (benchmarks/tiny_quality.py);
and "separation: met" when every honest image passes the shipped thresholds and every image
damaged at the default strength fails them.

One pipeline, components swapped between candidates as the session does (``swap_components``).

Usage: python benchmarks/tiny_text_encoder.py [--pairs 16] [--steps 8] [--strengths 0.25,0.5,0.75]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")

from quant_guard.config.schemes import REFERENCE, ComponentScheme, Quantization, Scheme  # noqa: E402
from quant_guard.config.thresholds import Thresholds, embedded_thresholds, resolve_thresholds  # noqa: E402
from quant_guard.judge import scenes as ds  # noqa: E402
from quant_guard.judge.metrics import ImageMetrics, compare_images  # noqa: E402
from quant_guard.model import pipelines  # noqa: E402
from quant_guard.model.checkpoints import ResolvedCheckpoint, tiny_resolved  # noqa: E402
from quant_guard.model.render import RenderRequest, render  # noqa: E402
from quant_guard.model.tiny.build import ensure_tiny_checkpoint  # noqa: E402
from quant_guard.tools.degrade import TEXT_ENCODER_NOISE_FRACTION, Degradation, degrade  # noqa: E402

T5, CLIP, VAE = "text_encoder_t5", "text_encoder_clip", "vae"
FLOAT8 = ComponentScheme("float8_e4m3fn")
INT8 = ComponentScheme(quantization=Quantization("torchao_int8_w8a16"))
T5_SCHEMES = {"t5-float8": Scheme("t5-float8", others=((T5, FLOAT8),)),
              "t5-int8": Scheme("t5-int8", others=((T5, INT8),))}
COMBINATIONS = {"dit+t5-float8": Scheme("dit+t5-float8", storage_dtype="float8_e4m3fn", others=((T5, FLOAT8),)),
                "dit-float8+t5-int8": Scheme("dit-float8+t5-int8", storage_dtype="float8_e4m3fn", others=((T5, INT8),))}
HONEST = [*T5_SCHEMES.values(), Scheme("clip-float8", others=((CLIP, FLOAT8),)),
          Scheme("vae-float8", others=((VAE, FLOAT8),)), Scheme("dit-float8", storage_dtype="float8_e4m3fn"),
          *COMBINATIONS.values()]


@dataclass(frozen=True)
class Candidate:
    name: str
    scheme: Scheme
    files: dict[str, Path]  # component -> the (damaged) bf16 file it loads instead of the checkpoint's
    damage: float | None = None  # the text encoder noise's strength; None: honest (or the VAE's cast)


def candidates(t5: Path, vae: Path, strengths: list[float], folder: Path) -> list[Candidate]:
    from safetensors.torch import load_file, save_file

    state = load_file(str(t5))
    out = [Candidate(s.id, s, {}) for s in HONEST]
    for strength in strengths:
        for block in (0, 1):
            path = folder / f"t5-noise{strength:g}-block{block}.safetensors"
            save_file(degrade(state, Degradation.TEXT_ENCODER_NOISE, block=block, strength=strength), str(path))
            default = math.isclose(strength, TEXT_ENCODER_NOISE_FRACTION)
            for name, scheme in {**T5_SCHEMES, **(COMBINATIONS if default else {})}.items():
                out.append(Candidate(f"{name} noise{strength:g} b{block}", scheme, {T5: path}, strength))
    cast = folder / "vae-colour-cast.safetensors"
    save_file(degrade(load_file(str(vae)), Degradation.COLOUR_CAST), str(cast))
    out.append(Candidate("vae-float8 colour-cast", HONEST[3], {VAE: cast}))
    return out


def with_files(checkpoint: ResolvedCheckpoint, files: dict[str, Path]) -> ResolvedCheckpoint:
    return dataclasses.replace(checkpoint, files={**checkpoint.files, **files})


def changed(old: tuple[ResolvedCheckpoint, Scheme], new: tuple[ResolvedCheckpoint, Scheme]) -> tuple[str, ...]:
    """The components to reload: stored otherwise or read from another file."""
    return tuple(name for name in pipelines.family_of(new[0]).model_components
                 if old[1].component(name) != new[1].component(name)
                 or pipelines.component_file(*old, name) != pipelines.component_file(*new, name))


def gate_thresholds(scheme: Scheme) -> Thresholds:
    """What the gate holds the scheme to on the tiny checkpoint (package defaults < measured)."""
    return resolve_thresholds(Thresholds.DEFAULT, embedded_thresholds("tiny", scheme.kind, scheme.threshold_parts))


def passes(metrics: list[ImageMetrics], t: Thresholds) -> int:
    return sum(m.lpips <= t.lpips_max and m.ssim >= t.ssim_min and m.psnr >= t.psnr_min for m in metrics)


def suggest(kind: str, honest: list[ImageMetrics], damaged: list[ImageMetrics]) -> str:
    """Each limit midway on a log scale between the worst honest and the mildest damaged image."""
    worst = (max(m.lpips for m in honest), min(m.ssim for m in honest), min(m.psnr for m in honest))
    mild = (min(m.lpips for m in damaged), max(m.ssim for m in damaged), max(m.psnr for m in damaged))
    lpips = math.sqrt(worst[0] * mild[0])
    ssim = 1 - math.sqrt((1 - worst[1]) * (1 - mild[1]))
    psnr = (worst[2] + mild[2]) / 2
    return (f"{kind:38} worst honest ({worst[0]:.4f}, {worst[1]:.4f}, {worst[2]:.1f})  mildest damage "
            f"({mild[0]:.4f}, {mild[1]:.4f}, {mild[2]:.1f})  ->  max LPIPS {lpips:.3g}, min SSIM {ssim:.4g}, "
            f"min PSNR {psnr:.1f} dB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=ds.RECOMMENDED_STEPS)
    parser.add_argument("--strengths", default="0.25,0.5,0.75")
    args = parser.parse_args(argv)
    strengths = [float(s) for s in args.strengths.split(",")]
    if not any(math.isclose(s, TEXT_ENCODER_NOISE_FRACTION) for s in strengths):
        strengths.append(TEXT_ENCODER_NOISE_FRACTION)
    files = ensure_tiny_checkpoint()
    pairs = ds.benchmark_pairs(args.pairs, seed=3)
    results: dict[str, list[ImageMetrics]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = tiny_resolved(files)
        components = files.components()
        with contextlib.redirect_stdout(io.StringIO()):
            pipe = pipelines.build_pipeline(base, REFERENCE, "cpu")

        def images() -> list[Any]:
            return [render(pipe, RenderRequest(c, seed, args.steps, ds.IMAGE_SIZE, ds.IMAGE_SIZE,
                                               ds.EMBEDDED_GUIDANCE, ds.T5_SEQUENCE_LENGTH)).image
                    for c, seed in pairs]

        reference, loaded = images(), (base, REFERENCE)
        print(f"{len(pairs)} pairs, {args.steps} steps, {ds.IMAGE_SIZE}px; vs the bf16 render of each pair; "
              "min-max over the pairs; passes: images within the package defaults / the thresholds the gate "
              "gives the scheme's kind on the tiny checkpoint")
        print(f"{'candidate':30} {'LPIPS':>15} {'SSIM':>15} {'PSNR dB':>11}  {'defaults':>8} {'gate':>5}  stored bytes")
        for c in candidates(components[T5], components[VAE], strengths, Path(tmp)):
            target = (with_files(base, c.files), c.scheme)
            with contextlib.redirect_stdout(io.StringIO()):
                pipelines.swap_components(pipe, target[0], c.scheme, pipelines.default_plan(c.scheme, "cpu"),
                                          changed(loaded, target))
            loaded = target
            metrics = results[c.name] = [compare_images(r, i) for r, i in zip(reference, images())]
            stored = pipelines.check_components(pipe, target[0], c.scheme)

            def span(values: list[float], digits: int) -> str:
                return f"{min(values):.{digits}f}-{max(values):.{digits}f}"

            print(f"{c.name:30} {span([m.lpips for m in metrics], 4):>15} {span([m.ssim for m in metrics], 4):>15}"
                  f" {span([min(m.psnr, 99.0) for m in metrics], 1):>11}  "
                  f"{passes(metrics, Thresholds.DEFAULT)}/{len(metrics):<6} "
                  f"{passes(metrics, gate_thresholds(c.scheme))}/{len(metrics):<3}  "
                  + ", ".join(f"{k} {v}" for k, v in stored.items() if k in c.scheme.targets), flush=True)

    default = f"noise{TEXT_ENCODER_NOISE_FRACTION:g} "
    by_scheme = {name: [m for k, v in results.items() if k.startswith(f"{name} {default}") for m in v]
                 for name in [*T5_SCHEMES, *COMBINATIONS]}
    any_t5 = [m for name in T5_SCHEMES for m in by_scheme[name]]
    print(f"\nSuggested thresholds per component kind (worst honest / mildest damage at the default strength "
          f"{TEXT_ENCODER_NOISE_FRACTION:g}: (LPIPS, SSIM, PSNR dB)):")
    for scheme in HONEST[:4]:
        damaged = by_scheme.get(scheme.id, any_t5)
        print("  " + suggest(scheme.kind, results[scheme.id], damaged))
    ok = True
    for scheme in HONEST:
        limits = gate_thresholds(scheme)
        damaged = by_scheme.get(scheme.id, [])
        met = passes(results[scheme.id], limits) == len(results[scheme.id]) and passes(damaged, limits) == 0
        ok &= met
        print(f"  {scheme.id:20} held to max LPIPS {limits.lpips_max:g}, min SSIM {limits.ssim_min:g}, min PSNR "
              f"{limits.psnr_min:g} dB: honest {passes(results[scheme.id], limits)}/{len(results[scheme.id])} pass"
              + (f", default damage {passes(damaged, limits)}/{len(damaged)} pass" if damaged else "")
              + f"; separation: {'met' if met else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
