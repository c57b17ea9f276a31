"""Does the random-weight tiny Qwen-Image / Z-Image / FLUX.2 tell honest quantization from damage?

For ``--seeds`` seeds of one prompt, through the family's real DiffSynth pipeline on CPU: the bf16
render, then float8_e4m3fn storage and torchao int8 weight-only (honest), and the bf16 DiT with
``quant_guard.tools.degrade`` kinds applied to block 0 (noise at degrade's default 0.75 and at 2.0,
ROUND to 3 and to 16 levels over every weight matrix), each against the bf16 render of the same
seed: LPIPS and PSNR. Also build and per-step time (1 thread) and parameter counts.

Usage: python benchmarks/family_tiny_sensitivity.py --family qwen-image [--seeds 6] [--steps 4]
                                                  [--grid docs/tiny_qwen_image_grid.png]
The numbers in quant_guard/model/tiny_<family>/FACTS.md come from ``--seeds 6 --steps 4``; the
grids in docs/ from ``--seeds 3 --steps 4 --grid ...``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import family_support as fs  # noqa: E402  (the tests' pipeline builder, one source)

from quant_guard.config.schemes import FLOAT8_E4M3FN, REFERENCE, Quantization, Scheme  # noqa: E402
from quant_guard.judge.metrics import compare_images  # noqa: E402

INT8 = Scheme("torchao_int8_w8a16", quantization=Quantization("torchao_int8_w8a16"))
DAMAGE = (("noise x0.75", "noise", None), ("noise x2", "noise", 2.0), ("round 3 levels", "round", 3.0),
          ("round 16 levels", "round", 16.0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", choices=("qwen-image", "z-image", "flux2"), required=True)
    p.add_argument("--seeds", type=int, default=6)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--grid", type=Path, default=None, help="also write a seeds x candidates image grid here")
    args = p.parse_args()
    torch.set_num_threads(1)
    from quant_guard.model.families import family
    from quant_guard.model.families.base import import_dotted

    tiny = family(args.family).tiny
    assert tiny is not None
    tmp = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    files = import_dotted(tiny.ensure)(tmp / "checkpoint")
    print(f"build (fresh, into {tmp}): {time.perf_counter() - t0:.2f} s")
    from safetensors.torch import load_file

    for name in ("dit", "text_encoder", "vae"):
        tensors = load_file(str(getattr(files, name)))
        print(f"{name}: {sum(t.numel() for t in tensors.values()):,} parameters")
    seeds = range(args.seeds)

    def renders(pipe) -> list:  # type: ignore[no-untyped-def]
        return [fs.render(pipe, seed=s, steps=args.steps) for s in seeds]

    bf16 = fs.build(tiny.name, files, REFERENCE)
    renders(bf16)  # warm-up
    t0 = time.perf_counter()
    golden = renders(bf16)
    print(f"bf16 render: {(time.perf_counter() - t0) / (args.seeds * args.steps):.3f} s/step (1 thread, incl. "
          "text encoding and decode)")
    candidates = [("float8_e4m3fn", FLOAT8_E4M3FN, None), ("torchao int8 w8a16", INT8, None)]
    candidates += [(label, REFERENCE, fs.damaged_dit(tiny.name, files.dit, tmp / f"{kind}-{strength}.safetensors",
                                                     kind=kind, strength=strength)) for label, kind, strength in DAMAGE]
    print(f"{'candidate':22s} {'LPIPS min..max':>18s} {'PSNR dB min..max':>18s}")
    columns = {"bf16": golden}
    for label, scheme, dit in candidates:
        columns[label] = renders(fs.build(tiny.name, files, scheme, dit=dit))
        metrics = [compare_images(g, c) for g, c in zip(golden, columns[label])]
        lp, ps = [m.lpips for m in metrics], [m.psnr for m in metrics]
        print(f"{label:22s} {min(lp):8.4f}..{max(lp):.4f} {min(ps):8.1f}..{max(ps):.1f}")
    if args.grid:
        write_grid(args.grid, f"tiny {args.family}: {fs.PROMPT!r}, {args.steps} steps", columns)


def write_grid(out: Path, title: str, columns: dict[str, list]) -> None:
    """Rows: seeds; columns: bf16 and each candidate; x2 nearest-neighbour cells."""
    from PIL import Image, ImageDraw, ImageFont

    cell, left, top = fs.SIZE * 2, 60, 44
    rows = len(next(iter(columns.values())))
    grid = Image.new("RGB", (left + cell * len(columns), top + cell * rows), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=11)
    draw.text((4, 4), title, fill="black", font=font)
    for j, label in enumerate(columns):
        draw.text((left + j * cell + 2, 24), label, fill="black", font=font)
        for i, image in enumerate(columns[label]):
            grid.paste(Image.fromarray(image).resize((cell, cell), Image.Resampling.NEAREST), (left + j * cell, top + i * cell))
    for i in range(rows):
        draw.text((4, top + i * cell + cell // 2 - 6), f"seed {i}", fill="black", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out, optimize=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
