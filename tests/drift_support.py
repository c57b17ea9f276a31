"""Goldens "made on another machine": the same PNG/sidecar/expected files with pixels that
differ from this machine's renders, and a consistent sidecar (the PNG's sha256 updated, so the
store trusts them). Used to prove that no test depends on the machine that made the goldens."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from quant_guard.store.golden import encode_clip, encode_png

# Another CPU: an Intel Xeon with AMX, named so that no real machine running the tests matches it.
OTHER_MACHINE = {"device_name": "Intel(R) Xeon(R) Platinum 8480+ (golden machine)",
                 "cpu_features": ["avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8"]}


def drift_like(image: np.ndarray, *, seed: int, fraction: float = 0.035, max_level: int = 4) -> np.ndarray:
    """Cross-CPU bf16 drift as measured (max 4/255 per pixel, PSNR about 54 dB): ``fraction`` of
    the channel values moved by 1..``max_level`` levels, either way."""
    rng = np.random.default_rng(seed)
    moved = rng.random(image.shape) < fraction
    step = rng.integers(1, max_level + 1, image.shape) * rng.choice([-1, 1], image.shape)
    return np.clip(image.astype(np.int16) + moved * step, 0, 255).astype(np.uint8)


def rewrite_golden(png: Path, image: np.ndarray, environment: dict[str, Any] | None = None) -> None:
    """Replace a golden's pixels (and optionally fields of its recorded environment), keeping its
    sidecar consistent; the expected metrics are left as they are."""
    sidecar = png.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    data = encode_png(image) if image.ndim == 3 else encode_clip(image, meta.get("fps") or 0)  # a clip: T x H x W x 3
    png.write_bytes(data)
    meta["image_sha256"] = hashlib.sha256(data).hexdigest()
    if environment:
        meta["environment"] = {**meta.get("environment", {}), **environment}
    sidecar.write_text(json.dumps(meta, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def record_component(png: Path, name: str, path: Path) -> None:
    """Make a golden's sidecar record ``path`` as its component ``name``: the golden then matches a
    checkpoint whose component changed after it was rendered, as when nothing recorded sees the
    change (a file rewritten in place keeping its size and mtime, which the hash cache trusts; a
    component patched in memory)."""
    sidecar = png.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["checkpoint_hashes"][name] = hashlib.sha256(path.read_bytes()).hexdigest()
    sidecar.write_text(json.dumps(meta, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def made_on_this_machine(png: Path) -> bool:
    """Whether the golden's sidecar records this machine's CPU (name and features): its pixels then
    carry no cross-CPU drift of their own."""
    from quant_guard.store.fingerprint import cpu_features, cpu_name

    recorded = json.loads(png.with_suffix(".json").read_text()).get("environment", {})
    return recorded.get("device_name") == cpu_name() and recorded.get("cpu_features") == cpu_features()


def perturb_goldens(folder: Path, *, seed: int = 0, environment: dict[str, Any] | None = None,
                    one_machine_change: bool = False) -> list[Path]:
    """Every golden PNG under ``folder`` re-saved with drift-like noise; returns the PNGs re-saved
    so. ``one_machine_change``: a golden made on another CPU already carries real drift against
    this machine's renders, and noise on top would be two machine changes; it keeps its pixels
    (its ``environment`` is still rewritten)."""
    pngs = sorted(folder.rglob("*.png"))
    perturbed_pngs = []
    for i, png in enumerate(pngs):
        with Image.open(png) as img:  # a clip's golden (an APNG) keeps every frame
            frames = []
            for index in range(getattr(img, "n_frames", 1)):
                img.seek(index)
                frames.append(np.asarray(img.convert("RGB")))
        image = frames[0] if len(frames) == 1 else np.stack(frames)
        if one_machine_change and not made_on_this_machine(png):
            rewrite_golden(png, image, environment)
            continue
        perturbed = drift_like(image, seed=seed + i)
        assert not np.array_equal(perturbed, image)
        rewrite_golden(png, perturbed, environment)
        perturbed_pngs.append(png)
    return perturbed_pngs


def copy_perturbed(source: Path, target: Path, **kwargs: Any) -> Path:
    shutil.copytree(source, target)
    perturb_goldens(target, **kwargs)
    return target
