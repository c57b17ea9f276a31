"""Text encoder and VAE schemes on the embedded ``tiny`` checkpoint (issue 29), through the real
DiffSynth FLUX.1 pipeline on CPU: for each candidate, its render of (caption, seed) pairs against
the bf16 render of the same pair, LPIPS / SSIM / PSNR (worst, mean), and whether every image
passes the thresholds a multi-component scheme gets (the package defaults) and the tiny's float8
thresholds (the tightest the tiny ships for a storage scheme).

Candidates: the T5 text encoder in float8_e4m3fn storage and in torchao_int8_w8a16; the CLIP
encoder and the VAE in float8 storage; the DiT in float8 (for scale); and the T5 damaged by
``text-encoder-noise`` (noise of a fraction of each weight's std on one T5 block) at several
strengths, stored in float8 like an honest one: the damage a text-encoder test must catch.

One pipeline, components swapped between candidates as the session does (``swap_components``).

Usage: python benchmarks/tiny_text_encoder.py [--pairs 8] [--steps 8] [--strengths 0.25,0.75]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")

from quant_guard.config.schemes import REFERENCE, ComponentScheme, Quantization, Scheme  # noqa: E402
from quant_guard.config.thresholds import Thresholds, embedded_thresholds, resolve_thresholds  # noqa: E402
from quant_guard.judge import scenes as ds  # noqa: E402
from quant_guard.judge.metrics import ImageMetrics, compare_images  # noqa: E402
from quant_guard.model import pipelines  # noqa: E402
from quant_guard.model.checkpoints import tiny_resolved  # noqa: E402
from quant_guard.model.render import RenderRequest, render  # noqa: E402
from quant_guard.model.tiny.build import ensure_tiny_checkpoint  # noqa: E402
from quant_guard.tools.degrade import Degradation, degrade  # noqa: E402

T5 = "text_encoder_t5"
FLOAT8 = ComponentScheme("float8_e4m3fn")


def candidates(strengths: list[float]) -> list[Scheme]:
    honest = [Scheme("t5-float8", others=((T5, FLOAT8),)),
              Scheme("t5-int8", others=((T5, ComponentScheme(quantization=Quantization("torchao_int8_w8a16"))),)),
              Scheme("clip-float8", others=(("text_encoder_clip", FLOAT8),)),
              Scheme("vae-float8", others=(("vae", FLOAT8),)),
              Scheme("dit-float8", storage_dtype="float8_e4m3fn"),
              Scheme("dit+t5-float8", storage_dtype="float8_e4m3fn", others=((T5, FLOAT8),))]
    damaged = [Scheme(f"t5-noise{s:g}-block{b}", others=((T5, FLOAT8),)) for s in strengths for b in (0, 1)]
    return honest + damaged


def damaged_files(t5: Path, strengths: list[float], folder: Path) -> dict[str, dict[str, Path]]:
    from safetensors.torch import load_file, save_file

    state = load_file(str(t5))
    out = {}
    for s in strengths:
        for block in (0, 1):
            path = folder / f"t5-noise{s:g}-block{block}.safetensors"
            save_file(degrade(state, Degradation.TEXT_ENCODER_NOISE, block=block, strength=s), str(path))
            out[f"t5-noise{s:g}-block{block}"] = {T5: path}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=ds.RECOMMENDED_STEPS)
    parser.add_argument("--strengths", default="0.25,0.75")
    args = parser.parse_args(argv)
    strengths = [float(s) for s in args.strengths.split(",")]
    files = ensure_tiny_checkpoint()
    pairs = ds.benchmark_pairs(args.pairs, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = tiny_resolved(files, scheme_files=damaged_files(files.components()[T5], strengths, Path(tmp)))
        with contextlib.redirect_stdout(io.StringIO()):
            pipe = pipelines.build_pipeline(checkpoint, REFERENCE, "cpu")

        def images() -> list[Any]:
            return [render(pipe, RenderRequest(c, seed, args.steps, ds.IMAGE_SIZE, ds.IMAGE_SIZE,
                                               ds.EMBEDDED_GUIDANCE, ds.T5_SEQUENCE_LENGTH)).image
                    for c, seed in pairs]

        reference, loaded = images(), REFERENCE
        defaults = Thresholds.DEFAULT
        tiny_f8 = resolve_thresholds(defaults, embedded_thresholds("tiny", "float8_e4m3fn"))
        print(f"{len(pairs)} pairs, {args.steps} steps, {ds.IMAGE_SIZE}px; vs the bf16 render of each pair")
        print("each metric as min-max over the pairs (honest: the worst end counts; damaged: the mildest); "
              "passes: images within the package defaults / the tiny's float8 thresholds")
        print(f"{'candidate':24} {'LPIPS':>15} {'SSIM':>15} {'PSNR dB':>13}  {'defaults':>8} {'tiny f8':>7}  stored bytes")
        for scheme in candidates(strengths):
            changed = pipelines.changed_components(checkpoint, loaded, scheme)
            with contextlib.redirect_stdout(io.StringIO()):
                pipelines.swap_components(pipe, checkpoint, scheme, pipelines.default_plan(scheme, "cpu"), changed)
            loaded = scheme
            metrics: list[ImageMetrics] = [compare_images(r, c) for r, c in zip(reference, images())]
            stored = pipelines.check_components(pipe, checkpoint, scheme)

            def passes(t: Thresholds) -> str:
                ok = sum(m.lpips <= t.lpips_max and m.ssim >= t.ssim_min and m.psnr >= t.psnr_min for m in metrics)
                return f"{ok}/{len(metrics)}"

            def span(values: list[float], digits: int) -> str:
                return f"{min(values):.{digits}f}-{max(values):.{digits}f}"

            print(f"{scheme.id:24} {span([m.lpips for m in metrics], 4):>15} {span([m.ssim for m in metrics], 4):>15}"
                  f" {span([min(m.psnr, 99.0) for m in metrics], 1):>13}  {passes(defaults):>8} "
                  f"{passes(tiny_f8):>7}  " + ", ".join(f"{k} {v}" for k, v in stored.items() if k in scheme.targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
