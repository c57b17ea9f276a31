"""The embedded tiny Z-Image checkpoint (quant_guard/model/tiny_z_image/): DiffSynth recognises
its files as the tiny classes, DiffSynth's own ``ZImagePipeline`` renders it on a CPU, its DiT can be stored in float8 and quantized by a ``diffsynth.core.quant`` method (and
really is: no silent upcast), and a damaged DiT moves the image far more than float8 does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from family_render_tests import (  # noqa: F401 - the shared render tests and their fixtures, collected here
    bf16,
    float8,
    test_a_damaged_dit_moves_the_image_far_more_than_float8,
    test_an_int8_quantized_dit_is_quantized_and_close,
    test_bf16_renders_an_image,
    test_float8_differs_from_bf16_but_only_a_little,
    test_float8_storage_keeps_every_dit_linear_in_float8,
)
from family_support import PROMPT, FamilyLimits, digests
from helpers import REAL_CACHE

from quant_guard.store.paths import CACHE_ENV

EMBEDDED = "tiny-z-image"  # its family, files and damage targets
# Measured on this tiny (random DiT and text encoder, trained FLUX.1 VAE; 3 seeds, 4 steps; FACTS.md):
# float8 against bf16 LPIPS 0.0003-0.0005, PSNR 43.5-45.2 dB; noise x2 on layer 0: LPIPS
# 0.010-0.021, PSNR 28-30 dB (degrade's default x0.75: LPIPS 0.005-0.006, PSNR 32-35 dB).
FLOAT8_LPIPS_MAX = 0.005
FLOAT8_PSNR_MIN = 36.0
DAMAGE_NOISE = 2.0  # degrade's noise fraction, as for the tiny Qwen-Image
DAMAGE_OVER_FLOAT8 = 5.0  # damaged LPIPS at least this many times float8's


@pytest.fixture(scope="module")
def family() -> FamilyLimits:
    return FamilyLimits(EMBEDDED, float8_lpips_max=FLOAT8_LPIPS_MAX, float8_psnr_min=FLOAT8_PSNR_MIN,
                        damage_noise=DAMAGE_NOISE, damage_over_float8=DAMAGE_OVER_FLOAT8)


@pytest.fixture(scope="module")
def files() -> Any:
    from quant_guard.model.tiny_z_image.build import ensure_tiny_z_image

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(REAL_CACHE))
        return ensure_tiny_z_image()


def test_the_build_is_deterministic_and_in_bf16(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from quant_guard.model.tiny_z_image.build import write_tiny_z_image

    first, second = write_tiny_z_image(tmp_path / "a"), write_tiny_z_image(tmp_path / "b")
    assert digests(first.root) == digests(second.root)
    for name in ("dit", "text_encoder"):
        assert {str(t.dtype) for t in load_file(str(getattr(first, name))).values()} == {"torch.bfloat16"}, name
    other = write_tiny_z_image(tmp_path / "c", seed=1)
    assert digests(other.root)["dit.safetensors"] != digests(first.root)["dit.safetensors"]


def test_the_chat_template_frames_the_prompt_as_qwen3_does(files: Any) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(files.tokenizer))
    messages = [{"role": "user", "content": PROMPT}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert text == f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n"
    no_think = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                             enable_thinking=False)
    assert no_think == text + "<think>\n\n</think>\n\n"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids)[:3] == ["<|im_start|>", "user", "\u010a"]  # \n is byte-level "Ċ"
    padded = tokenizer(text, padding="max_length", max_length=512)  # how the pipeline calls it
    assert len(padded["input_ids"]) == 512 and sum(padded["attention_mask"]) == len(ids)


def test_diffsynth_loads_the_files_as_the_tiny_classes(bf16: tuple[Any, np.ndarray]) -> None:
    from quant_guard.model.tiny_z_image.architecture import SIZES

    pipe, _ = bf16
    assert type(pipe.dit).__name__ == "ZImageDiT"
    assert pipe.dit.dim == SIZES.dit_dim and len(pipe.dit.layers) == SIZES.layers
    assert type(pipe.text_encoder).__name__ == "TinyZImageTextEncoder"
    assert type(pipe.vae_decoder).__name__ == "TinyFluxVAEDecoder"  # Z-Image decodes with the FLUX.1 VAE


