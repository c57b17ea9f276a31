"""Thresholds of the random-weight tiny Qwen-Image, Z-Image and FLUX.2 checkpoints, measured the way
the tiny FLUX.1's were (benchmarks/tiny_quality.py), through quant_guard's own path
(``build_pipeline`` + ``swap_dit`` + ``render``, the family's embedded render settings).

For each family, over ``--seeds`` seeds of each prompt: the bf16 render, then each honest scheme
(float8_e4m3fn storage, torchao int8 weight-only) and each damage kind of ``quant_guard.tools.degrade``
(applied to block 0 of the bf16 DiT, the family's damage targets) against the bf16 render of the same
seed: LPIPS, SSIM, PSNR. Prints, per family, the worst honest image per scheme, every damage kind's
mildest image, the thresholds the family's checkpoint ships with (``EMBEDDED_THRESHOLDS``) and, for
each damage kind, whether all its images fail them: the family's detection power.

Usage: python benchmarks/family_thresholds.py [--family tiny-z-image] [--seeds 4] [--grid docs/tiny_families_grid.png]
The numbers in config/thresholds.py and README ("Model families") and the picture
docs/tiny_families_grid.png come from ``--seeds 4 --grid docs/tiny_families_grid.png``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")

PROMPTS = ("a red circle on a blue background at the top left",
           "赛博朋克风格的未来城市街道，雨夜，蓝色和粉色的霓虹灯光反射在湿漉漉的地面上，头顶有飞行汽车，高科技氛围，细节丰富，电影感宽幅画面。")
# (label, degrade kind, strength): degrade's defaults and stronger noise / coarser rounding
DAMAGE = (("noise x0.75", "noise", None), ("noise x2", "noise", 2.0), ("noise x3", "noise", 3.0),
          ("round 16", "round", 16.0), ("round 3", "round", 3.0), ("scale x2", "scale", None),
          ("zero attn out", "zero-attn-out", None), ("drop text", "drop-text", None))


@dataclass(frozen=True)
class Row:
    label: str
    lpips: float
    ssim: float
    psnr: float
    image: np.ndarray  # the candidate's render


# the grid's columns after bf16: (scheme, candidate label)
GRID = (("float8_e4m3fn", "float8_e4m3fn"), ("torchao_int8_w8a16", "torchao_int8_w8a16"),
        ("float8_e4m3fn", "noise x2"), ("float8_e4m3fn", "round 3"), ("float8_e4m3fn", "drop text"))


def measure(embedded: str, seeds: int) -> tuple[list[np.ndarray], dict[str, dict[str, list[Row]]]]:
    """The bf16 renders, and scheme -> candidate label (the scheme itself, or a damage kind under
    it) -> one row per image."""
    from safetensors.torch import load_file, save_file

    from quant_guard.config.families import EMBEDDED
    from quant_guard.config.schemes import REFERENCE, Quantization, Scheme
    from quant_guard.judge.metrics import compare_images
    from quant_guard.model.checkpoints import tiny_resolved
    from quant_guard.model.families import embedded_family
    from quant_guard.model.pipelines import build_pipeline, default_plan, swap_dit
    from quant_guard.model.render import RenderRequest, render
    from quant_guard.tools.degrade import degrade

    family = embedded_family(embedded)
    assert family.tiny is not None
    files = family.tiny.built()
    settings = EMBEDDED[embedded].render
    requests = [RenderRequest(p, s, settings.steps, settings.width, settings.height, settings.guidance, 512)
                for p in PROMPTS for s in range(seeds)]
    schemes = {"float8_e4m3fn": Scheme("float8_e4m3fn", storage_dtype="float8_e4m3fn"),
               "torchao_int8_w8a16": Scheme("torchao_int8_w8a16", quantization=Quantization("torchao_int8_w8a16"))}
    out: dict[str, dict[str, list[Row]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        damaged: dict[str, Path] = {}
        state = load_file(str(files.dit))
        for label, kind, strength in DAMAGE:
            path = Path(tmp) / f"{kind}-{strength}.safetensors"
            save_file(degrade(state, kind, strength=strength, family=family), str(path))
            damaged[label] = path
        # each honest scheme alone, and applied to each damaged DiT (the damage before the scheme quantizes)
        candidates: dict[tuple[str, str], tuple[Scheme, Path | None]] = {}
        for name, honest in schemes.items():
            candidates[(name, name)] = (honest, None)
            for i, (label, path) in enumerate(damaged.items()):
                candidates[(name, label)] = (replace(honest, id=f"{name}-damaged-{i}"), path)
        checkpoint = tiny_resolved(files, {s.id: p for s, p in candidates.values() if p is not None},
                                   embedded=embedded)
        pipe = build_pipeline(checkpoint, REFERENCE, "cpu")
        golden = [render(pipe, r).image for r in requests]
        for (name, label), (scheme, _) in candidates.items():
            swap_dit(pipe, checkpoint, scheme, default_plan(scheme, "cpu", family))
            rows = []
            for request, reference in zip(requests, golden):
                image = render(pipe, request).image
                m = compare_images(reference, image)
                rows.append(Row(label, m.lpips, m.ssim, m.psnr, image))
            out.setdefault(name, {})[label] = rows
    return golden, out


def write_grid(path: Path, measured: dict[str, tuple[list[np.ndarray], dict[str, dict[str, list[Row]]]]],
               seeds: int) -> None:
    """Per family, rows of (prompt, seed) for the first two seeds of each prompt; columns bf16 then GRID."""
    from PIL import Image, ImageDraw

    scale, label_h, head_w = 2, 14, 110
    rows: list[tuple[str, list[np.ndarray]]] = []
    for embedded, (golden, candidates) in measured.items():
        for index in [p * seeds + s for p in range(len(PROMPTS)) for s in range(min(2, seeds))]:
            cells = [golden[index]] + [candidates[scheme][label][index].image for scheme, label in GRID]
            rows.append((f"{embedded}\np{index // seeds} s{index % seeds}", cells))
    size = rows[0][1][0].shape[0] * scale
    sheet = Image.new("RGB", (head_w + size * (1 + len(GRID)), label_h + size * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for col, title in enumerate(["bf16"] + [label if scheme == label or label.startswith("float8") else
                                            f"{label} (f8)" for scheme, label in GRID]):
        draw.text((head_w + col * size + 2, 1), title.replace("torchao_int8_w8a16", "int8 w8a16"), fill="black")
    for r, (title, cells) in enumerate(rows):
        draw.text((2, label_h + r * size + 4), title, fill="black")
        for col, cell in enumerate(cells):
            tile = Image.fromarray(cell).resize((size, size), Image.NEAREST)
            sheet.paste(tile, (head_w + col * size, label_h + r * size))
    sheet.save(path)
    print(f"wrote {path}")


def report(embedded: str, measured: dict[str, dict[str, list[Row]]]) -> None:
    from quant_guard.config.thresholds import embedded_thresholds

    for scheme, rows in measured.items():
        print(f"\n== {embedded}, {scheme}: {len(rows[scheme])} images per candidate (LPIPS / SSIM / PSNR dB)")
        for label, values in rows.items():
            honest = label == scheme
            pick = (max, min, min) if honest else (min, max, max)
            shown = tuple(f(getattr(r, m) for r in values) for f, m in zip(pick, ("lpips", "ssim", "psnr")))
            print(f"  {label:20s} {'worst' if honest else 'mildest':8s} {shown[0]:.4f} / {shown[1]:.4f} / {shown[2]:.1f}")
        limits = embedded_thresholds(embedded, scheme)
        if limits.lpips is None:
            print("  no thresholds shipped")
            continue
        passes = all(_passes(r, limits) for r in rows[scheme])
        caught = [label for label in rows if label != scheme and not any(_passes(r, limits) for r in rows[label])]
        missed = [label for label in rows if label != scheme and label not in caught]
        print(f"  shipped: LPIPS <= {limits.lpips}, SSIM >= {limits.ssim}, PSNR >= {limits.psnr}: honest "
              f"{'passes' if passes else 'FAILS'}; every image fails: {', '.join(caught) or 'none'}; "
              f"not every image: {', '.join(missed) or 'none'}")


def _passes(row: Row, limits: object) -> bool:
    return row.lpips <= limits.lpips and row.ssim >= limits.ssim and row.psnr >= limits.psnr  # type: ignore[attr-defined]


def main() -> None:
    import torch

    from quant_guard.config.families import EMBEDDED

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", action="append", choices=[e for e in EMBEDDED if e != "tiny"], default=[],
                   help="an embedded tiny (default: all but the trained FLUX.1 tiny)")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--grid", type=Path, default=None, help="also write the families' renders as one image here")
    args = p.parse_args()
    torch.set_num_threads(1)
    measured = {}
    for embedded in args.family or [e for e in EMBEDDED if e != "tiny"]:
        measured[embedded] = measure(embedded, args.seeds)
        report(embedded, measured[embedded][1])
    if args.grid:
        write_grid(args.grid, measured, args.seeds)


if __name__ == "__main__":
    main()
