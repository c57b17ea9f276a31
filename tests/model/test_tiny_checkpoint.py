"""The shipped tiny checkpoint: its files are the ones its README names, it draws what the caption
asks for through quant_guard's own pipeline, and the training script writes files of the same
layout (a few steps here; the full run and its timing are in quant_guard/model/tiny/weights/README.md)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.torch import load_file

from quant_guard.model.checkpoints import resolve_checkpoint
from quant_guard.config.project import CheckpointSpec, RenderDefaults
from quant_guard.config.schemes import REFERENCE
from quant_guard.model.pipelines import build_pipeline
from quant_guard.model.render import RenderRequest, render
from quant_guard.judge import scenes as ds
from quant_guard.model.tiny.build import SHIPPED_WEIGHTS

WEIGHT_FILES = ("dit", "text_encoder_clip", "text_encoder_t5", "vae")


@pytest.fixture(scope="module")
def bf16_pipe() -> Any:
    spec = CheckpointSpec(id="tiny", embedded="tiny", components={}, device="cpu",
                          render=RenderDefaults(steps=ds.RECOMMENDED_STEPS, width=64, height=64))
    return build_pipeline(resolve_checkpoint(spec), REFERENCE, "cpu")


def _draw(pipe: Any, caption: str, seed: int) -> np.ndarray:
    request = RenderRequest(prompt=caption, seed=seed, steps=ds.RECOMMENDED_STEPS, width=ds.IMAGE_SIZE,
                            height=ds.IMAGE_SIZE, guidance=ds.EMBEDDED_GUIDANCE,
                            t5_sequence_length=ds.T5_SEQUENCE_LENGTH)
    return render(pipe, request).image


def test_shipped_files_are_the_ones_the_readme_names() -> None:
    readme = (SHIPPED_WEIGHTS / "README.md").read_text(encoding="utf-8")
    for name in WEIGHT_FILES:
        digest = hashlib.sha256((SHIPPED_WEIGHTS / f"{name}.safetensors").read_bytes()).hexdigest()
        assert f"| {name}.safetensors | {digest} |" in readme, name


def test_shipped_weights_draw_the_colours_of_the_caption(bf16_pipe: Any) -> None:
    pairs = ds.benchmark_pairs(12, seed=5)
    misses = [(caption, seed, ds.read_colours(image)) for caption, seed in pairs
              if not all(ds.caption_matches(image := _draw(bf16_pipe, caption, seed), caption))]
    assert not misses


def test_the_shape_goes_where_the_caption_says(bf16_pipe: Any) -> None:
    for phrase, (cx, cy) in ds.POSITIONS.items():
        image = _draw(bf16_pipe, f"a red square on a black background {phrase}", seed=3).astype(int)
        ys, xs = np.nonzero(np.abs(image - ds.BACKGROUNDS["black"]).sum(-1) > 120)
        assert len(xs) > 50, phrase
        assert abs(xs.mean() - cx) <= 4 and abs(ys.mean() - cy) <= 4, (phrase, xs.mean(), ys.mean())


def _layout(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), str(v.dtype)) for k, v in load_file(str(path)).items()}


@pytest.mark.slow
def test_training_script_writes_files_with_the_shipped_layout(tmp_path: Path) -> None:
    import torch

    from quant_guard.model.tiny.train import main

    few = ["--seed", "0", "--per-scene", "1", "--vae-steps", "2", "--vae-batch", "4",
           "--dit-steps", "2", "--dit-batch", "4"]
    threads = torch.get_num_threads()
    try:
        assert main(["--out", str(tmp_path / "a"), *few]) == 0
        # stage 2 alone, on the VAE of the first run: the VAE file is carried over unchanged
        assert main(["--out", str(tmp_path / "b"), "--vae-from", str(tmp_path / "a"), *few]) == 0
    finally:
        torch.set_num_threads(threads)
    for name in WEIGHT_FILES:
        assert _layout(tmp_path / "a" / f"{name}.safetensors") == _layout(SHIPPED_WEIGHTS / f"{name}.safetensors"), name
    assert (tmp_path / "a" / "vae.safetensors").read_bytes() == (tmp_path / "b" / "vae.safetensors").read_bytes()
    dit = load_file(str(tmp_path / "a" / "dit.safetensors"))
    qk_norms = [k for k in dit if ".norm_q_" in k or ".norm_k_" in k]
    assert qk_norms and all(bool((dit[k] == 1).all()) for k in qk_norms)  # frozen: float8 stores 1.0 exactly
    report = json.loads((tmp_path / "a" / "training.json").read_text(encoding="utf-8"))
    assert report["seed"] == 0 and report["args"]["dit_steps"] == "2"
    for key in ("vae_final_reconstruction_loss", "dit_final_flow_matching_mse", "vae_held_out_psnr_db"):
        assert math.isfinite(report[key]), key
