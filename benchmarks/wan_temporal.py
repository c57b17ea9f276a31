"""Do temporal metrics see what per-frame metrics miss, on the random-weight tiny Wan?

Through DiffSynth's real ``WanVideoPipeline`` on CPU (``quant_guard.model.tiny_wan``), for each seed:
the bf16 clip (the golden), then float8_e4m3fn storage and torchao int8 weight-only (honest), the
bf16 DiT with ``quant_guard.tools.degrade``'s noise on block 0 (frame damage), and two damages
that only break temporal coherence (``tiny_wan.damage``: jitter of each latent frame's position on
the temporal RoPE axis; a random offset per latent frame on the DiT's prediction), each against the
golden: per-frame LPIPS / SSIM / PSNR (mean and worst frame), tLP, flicker and exposure flicker
(``quant_guard.judge.temporal``). Also the tiny's build time (write + load) and per-step time.

Each clip renders the gate's way (``quant_guard.model.render.render``: the pipeline's own VAE
tiling, cfg 1). The summary at the end gives each candidate's range over the seeds of what the
gate's limits hold (worst frame LPIPS / SSIM / PSNR, flicker, exposure flicker, tLP): the tiny-wan
thresholds in ``quant_guard/config/families.py`` lie between honest float8/int8 and the damages.

Usage: python benchmarks/wan_temporal.py [--seeds 3] [--frames 9] [--steps 3]
The numbers in quant_guard/model/tiny_wan/FACTS.md ("Measured") come from the defaults; the
tiny-wan thresholds from --seeds 4 --frames 5 (the embedded checkpoint's render settings).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from quant_guard.config.schemes import FLOAT8_E4M3FN, REFERENCE, Quantization, Scheme
from quant_guard.judge.temporal import ClipMetrics, compare_clips
from quant_guard.model.render import RenderRequest
from quant_guard.model.render import render as gate_render
from quant_guard.model.tiny_wan import clip, damage
from quant_guard.model.tiny_wan.build import write_tiny_wan
from quant_guard.model.families.wan import FAMILY

INT8 = Scheme("torchao_int8_w8a16", quantization=Quantization("torchao_int8_w8a16"))
NOISE = 2.0  # degrade's noise fraction on block 0, as the tests'
ROPE_JITTER = 4.0  # latent frame positions moved by 4 x N(0, 1) (frames are 1 apart)
FRAME_OFFSET = 0.1  # per latent frame and channel, on the DiT's prediction, every step


def damaged_dit(source: Path, dest: Path) -> Path:
    from safetensors.torch import load_file, save_file

    from quant_guard.tools.degrade import degrade

    save_file(degrade(load_file(str(source)), "noise", strength=NOISE, family=FAMILY), str(dest))
    return dest


def row(name: str, m: ClipMetrics) -> str:
    return (f"{name:24s} {m.mean_lpips:7.4f} {m.worst_lpips[0]:7.4f}@{m.worst_lpips[1]} {m.mean_ssim:7.4f} "
            f"{m.worst_ssim[0]:7.4f} {m.mean_psnr:6.1f} {m.worst_psnr[0]:6.1f} {m.tlp:7.4f} {m.flicker:6.2f} "
            f"{m.exposure_flicker:6.2f}")


def span(label: str, fmt: str, values: list[float]) -> str:
    return f"{label} {fmt % min(values)}-{fmt % max(values)}"


HEADER = (f"{'candidate':24s} {'LPIPS':>7s} {'worst':>9s} {'SSIM':>7s} {'worst':>7s} {'PSNR':>6s} {'worst':>6s} "
          f"{'tLP':>7s} {'flick':>6s} {'expo':>6s}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--frames", type=int, default=9)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        files = write_tiny_wan(Path(tmp) / "tiny-wan")
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        pipes = {"bf16": clip.build(files, REFERENCE)}
        load_s = time.perf_counter() - start
        pipes["float8_e4m3fn"] = clip.build(files, FLOAT8_E4M3FN)
        pipes["int8 w8a16"] = clip.build(files, INT8)
        pipes["noise x2 block 0"] = clip.build(files, REFERENCE, dit=damaged_dit(files.dit, Path(tmp) / "damaged.safetensors"))
        print(f"tiny Wan: write {write_s:.1f} s, bf16 pipeline load {load_s:.1f} s; DiT "
              f"{sum(t.numel() for t in pipes['bf16'].dit.state_dict().values())} parameters")
        f8 = pipes["float8_e4m3fn"].dit
        temporal: dict[str, Callable[[], Any]] = {
            f"rope time jitter x{ROPE_JITTER:g}": lambda: damage.time_position_jitter(f8, ROPE_JITTER),
            f"frame offset {FRAME_OFFSET:g}": lambda: damage.latent_frame_offset(f8, FRAME_OFFSET),
        }
        steps: dict[str, list[float]] = {}
        seen: dict[str, list[ClipMetrics]] = {}
        for seed in range(args.seeds):
            request = RenderRequest(clip.PROMPT, seed, args.steps, clip.SIZE, clip.SIZE, 1.0, 512, frames=args.frames)

            def render(name: str, pipe: Any, context: Callable[[], Any] = contextlib.nullcontext) -> Any:
                with context():
                    out = gate_render(pipe, request)
                steps.setdefault(name, []).extend(out.step_times_s[1:])  # the first step warms up
                return out.frames

            def measured(name: str, metrics: ClipMetrics) -> None:
                print(row(name, metrics))
                seen.setdefault(name, []).append(metrics)

            golden = render("bf16", pipes["bf16"])
            print(f"\nseed {seed}: {args.frames} frames {clip.SIZE}x{clip.SIZE}, {args.steps} steps, cfg 1\n{HEADER}")
            for name, pipe in pipes.items():
                if name != "bf16":
                    measured(name, compare_clips(golden, render(name, pipe)))
            for name, context in temporal.items():
                measured(name + " (f8)", compare_clips(golden, render(name, pipes["float8_e4m3fn"], context)))
        print("\nper-step time (median over seeds, steps after the first, 1 thread):")
        for name, times in steps.items():
            print(f"  {name:28s} {statistics.median(times) * 1000:7.1f} ms")
        print(f"\nranges over {args.seeds} seeds (what the gate's limits hold):")
        for name, runs in seen.items():
            print(f"  {name:28s} " + "  ".join(span(label, fmt, values) for label, fmt, values in (
                ("LPIPS worst", "%.4f", [m.worst.lpips for m in runs]),
                ("SSIM worst", "%.4f", [m.worst.ssim for m in runs]),
                ("PSNR worst", "%.1f", [m.worst.psnr for m in runs]), ("flicker", "%.2f", [m.flicker for m in runs]),
                ("exposure", "%.3f", [m.exposure_flicker for m in runs]), ("tLP", "%.4f", [m.tlp for m in runs]))))


if __name__ == "__main__":
    sys.exit(main())
