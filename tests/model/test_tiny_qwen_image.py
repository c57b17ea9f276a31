"""The embedded tiny Qwen-Image checkpoint (quant_guard/model/tiny_qwen_image/): DiffSynth
recognises its files as the tiny classes, DiffSynth's own ``QwenImagePipeline`` renders it on a
CPU, its DiT can be stored in float8 and quantized by a ``diffsynth.core.quant`` method (and
really is: no silent upcast), and a damaged DiT moves the image far more than float8 does."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from family_support import PROMPT, SIZE, build, damaged_dit, render
from helpers import REAL_CACHE

from quant_guard.config.schemes import FLOAT8_E4M3FN, REFERENCE, Quantization, Scheme
from quant_guard.store.paths import CACHE_ENV

INT8 = Scheme("torchao_int8_w8a16", quantization=Quantization("torchao_int8_w8a16"))
BLOCKS = "transformer_blocks"  # the DiT's block list, for degrade
# Measured on this random-weight tiny (3 seeds, 4 steps; FACTS.md): float8 against bf16 LPIPS
# 0.0004-0.0005, PSNR 47.5-48.6 dB; noise x2 on block 0: LPIPS 0.008-0.011, PSNR 34-36 dB.
FLOAT8_LPIPS_MAX = 0.005
FLOAT8_PSNR_MIN = 38.0
DAMAGE_NOISE = 2.0  # degrade's noise fraction: quant-guard degrade's default 0.75 moves this tiny no more than float8
DAMAGE_OVER_FLOAT8 = 5.0  # damaged LPIPS at least this many times float8's


@pytest.fixture(scope="module")
def files() -> Any:
    from quant_guard.model.tiny_qwen_image.architecture import register_with_diffsynth
    from quant_guard.model.tiny_qwen_image.build import ensure_tiny_qwen_image

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(REAL_CACHE))
        register_with_diffsynth()
        return ensure_tiny_qwen_image()


def _pipeline_class() -> Any:
    from diffsynth.pipelines.qwen_image import QwenImagePipeline

    return QwenImagePipeline


@pytest.fixture(scope="module")
def bf16(files: Any) -> tuple[Any, np.ndarray]:
    pipe = build(_pipeline_class(), files, REFERENCE)
    return pipe, render(pipe)


@pytest.fixture(scope="module")
def float8(files: Any) -> tuple[Any, np.ndarray]:
    pipe = build(_pipeline_class(), files, FLOAT8_E4M3FN)
    return pipe, render(pipe)


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_build_is_deterministic_and_in_bf16(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from quant_guard.model.tiny_qwen_image.build import write_tiny_qwen_image

    first, second = write_tiny_qwen_image(tmp_path / "a"), write_tiny_qwen_image(tmp_path / "b")
    assert _digests(first.root) == _digests(second.root)
    for name in ("dit", "text_encoder", "vae"):
        assert {str(t.dtype) for t in load_file(str(getattr(first, name))).values()} == {"torch.bfloat16"}, name
    other = write_tiny_qwen_image(tmp_path / "c", seed=1)
    assert _digests(other.root)["dit.safetensors"] != _digests(first.root)["dit.safetensors"]


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


def test_bf16_renders_an_image(bf16: tuple[Any, np.ndarray]) -> None:
    _, image = bf16
    assert image.shape == (SIZE, SIZE, 3)
    assert image.std() > 2  # not one flat colour (a NaN latent decodes to a constant image)


def test_float8_storage_keeps_every_dit_linear_in_float8(float8: tuple[Any, np.ndarray]) -> None:
    import torch

    pipe, _ = float8
    linears = [(name, m) for name, m in pipe.dit.named_modules() if type(m).__name__ == "AutoWrappedLinear"]
    plain = [name for name, m in pipe.dit.named_modules() if type(m) is torch.nn.Linear]
    assert linears and not plain
    assert {m.weight.dtype for _, m in linears} == {torch.float8_e4m3fn}


def test_float8_differs_from_bf16_but_only_a_little(bf16: tuple[Any, np.ndarray],
                                                    float8: tuple[Any, np.ndarray]) -> None:
    from quant_guard.judge.metrics import compare_images

    metrics = compare_images(bf16[1], float8[1])
    assert not np.array_equal(bf16[1], float8[1])
    assert metrics.lpips < FLOAT8_LPIPS_MAX and metrics.psnr > FLOAT8_PSNR_MIN, metrics


def test_an_int8_quantized_dit_is_quantized_and_close(files: Any, bf16: tuple[Any, np.ndarray]) -> None:
    from quant_guard.judge.metrics import compare_images
    from quant_guard.model.scheme_check import inventory

    pipe = build(_pipeline_class(), files, INT8)  # build() has run quant_guard's scheme check
    formats = inventory(pipe.dit).formats()
    assert formats and all("int8" in fmt.lower() for fmt in formats), formats
    image = render(pipe)
    assert not np.array_equal(bf16[1], image)
    metrics = compare_images(bf16[1], image)
    assert metrics.lpips < FLOAT8_LPIPS_MAX and metrics.psnr > FLOAT8_PSNR_MIN, metrics


def test_a_damaged_dit_moves_the_image_far_more_than_float8(files: Any, bf16: tuple[Any, np.ndarray],
                                                            float8: tuple[Any, np.ndarray], tmp_path: Path) -> None:
    from quant_guard.judge.metrics import compare_images

    dit = damaged_dit(files.dit, tmp_path / "damaged.safetensors", blocks=BLOCKS, strength=DAMAGE_NOISE)
    damaged = render(build(_pipeline_class(), files, REFERENCE, dit=dit))
    honest, broken = compare_images(bf16[1], float8[1]), compare_images(bf16[1], damaged)
    assert broken.lpips > DAMAGE_OVER_FLOAT8 * honest.lpips, (honest, broken)
    assert broken.psnr < honest.psnr - 6, (honest, broken)
