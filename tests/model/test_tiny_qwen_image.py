"""The embedded tiny Qwen-Image checkpoint (quant_guard/model/tiny_qwen_image/): DiffSynth
recognises its files as the tiny classes, DiffSynth's own ``QwenImagePipeline`` renders it on a
CPU, its DiT can be stored in float8 and quantized by a ``diffsynth.core.quant`` method (and
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

EMBEDDED = "tiny-qwen-image"  # its family, files and damage targets
# Measured on this random-weight tiny (3 seeds, 4 steps; FACTS.md): float8 against bf16 LPIPS
# 0.0004-0.0005, PSNR 47.5-48.6 dB; noise x2 on block 0: LPIPS 0.008-0.011, PSNR 34-36 dB.
FLOAT8_LPIPS_MAX = 0.005
FLOAT8_PSNR_MIN = 38.0
DAMAGE_NOISE = 2.0  # degrade's noise fraction: quant-guard degrade's default 0.75 moves this tiny no more than float8
DAMAGE_OVER_FLOAT8 = 5.0  # damaged LPIPS at least this many times float8's


@pytest.fixture(scope="module")
def family() -> FamilyLimits:
    return FamilyLimits(EMBEDDED, float8_lpips_max=FLOAT8_LPIPS_MAX, float8_psnr_min=FLOAT8_PSNR_MIN,
                        damage_noise=DAMAGE_NOISE, damage_over_float8=DAMAGE_OVER_FLOAT8)


@pytest.fixture(scope="module")
def files() -> Any:
    from quant_guard.model.tiny_qwen_image.build import ensure_tiny_qwen_image

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(REAL_CACHE))
        return ensure_tiny_qwen_image()


def test_the_build_is_deterministic_and_in_bf16(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from quant_guard.model.tiny_qwen_image.build import write_tiny_qwen_image

    first, second = write_tiny_qwen_image(tmp_path / "a"), write_tiny_qwen_image(tmp_path / "b")
    assert digests(first.root) == digests(second.root)
    for name in ("dit", "text_encoder", "vae"):
        assert {str(t.dtype) for t in load_file(str(getattr(first, name))).values()} == {"torch.bfloat16"}, name
    other = write_tiny_qwen_image(tmp_path / "c", seed=1)
    assert digests(other.root)["dit.safetensors"] != digests(first.root)["dit.safetensors"]


def test_the_system_prompt_is_the_34_tokens_diffsynth_drops(files: Any) -> None:
    from transformers import Qwen2Tokenizer

    from quant_guard.model.tiny_qwen_image.tokenizers import QWEN_IMAGE_DROP_IDX, QWEN_IMAGE_TEMPLATE_PREFIX

    tokenizer = Qwen2Tokenizer.from_pretrained(str(files.tokenizer))
    prefix = tokenizer(QWEN_IMAGE_TEMPLATE_PREFIX)["input_ids"]
    assert len(prefix) == QWEN_IMAGE_DROP_IDX
    full = tokenizer(QWEN_IMAGE_TEMPLATE_PREFIX + PROMPT + "<|im_end|>\n")["input_ids"]
    assert full[:QWEN_IMAGE_DROP_IDX] == prefix  # the prompt starts right after the dropped part
    assert tokenizer.decode(full[QWEN_IMAGE_DROP_IDX:]) == PROMPT + "<|im_end|>\n"


def test_diffsynth_loads_the_files_as_the_tiny_classes(bf16: tuple[Any, np.ndarray]) -> None:
    from quant_guard.model.tiny_qwen_image.architecture import SIZES

    pipe, _ = bf16
    assert type(pipe.dit).__name__ == "TinyQwenImageDiT"
    assert len(pipe.dit.transformer_blocks) == SIZES.blocks
    assert type(pipe.text_encoder).__name__ == "TinyQwenImageTextEncoder"
    assert type(pipe.vae).__name__ == "QwenImageVAE"


