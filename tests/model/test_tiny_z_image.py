"""The embedded tiny Z-Image checkpoint (quant_guard/model/tiny_z_image/): DiffSynth recognises
its files as the tiny classes, DiffSynth's own ``ZImagePipeline`` renders it on a CPU, its DiT can be stored in float8 and quantized by a ``diffsynth.core.quant`` method (and
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
BLOCKS = "layers"  # the DiT's block list, for degrade
# Measured on this tiny (random DiT and text encoder, trained FLUX.1 VAE; 3 seeds, 4 steps; FACTS.md):
# float8 against bf16 LPIPS 0.0003-0.0005, PSNR 43.5-45.2 dB; noise x2 on layer 0: LPIPS
# 0.010-0.021, PSNR 28-30 dB (degrade's default x0.75: LPIPS 0.005-0.006, PSNR 32-35 dB).
FLOAT8_LPIPS_MAX = 0.005
FLOAT8_PSNR_MIN = 36.0
DAMAGE_NOISE = 2.0  # degrade's noise fraction, as for the tiny Qwen-Image
DAMAGE_OVER_FLOAT8 = 5.0  # damaged LPIPS at least this many times float8's


@pytest.fixture(scope="module")
def files() -> Any:
    from quant_guard.model.tiny_z_image.architecture import register_with_diffsynth
    from quant_guard.model.tiny_z_image.build import ensure_tiny_z_image

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(REAL_CACHE))
        register_with_diffsynth()
        return ensure_tiny_z_image()


def _pipeline_class() -> Any:
    from diffsynth.pipelines.z_image import ZImagePipeline

    return ZImagePipeline


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

    from quant_guard.model.tiny_z_image.build import write_tiny_z_image

    first, second = write_tiny_z_image(tmp_path / "a"), write_tiny_z_image(tmp_path / "b")
    assert _digests(first.root) == _digests(second.root)
    for name in ("dit", "text_encoder"):
        assert {str(t.dtype) for t in load_file(str(getattr(first, name))).values()} == {"torch.bfloat16"}, name
    other = write_tiny_z_image(tmp_path / "c", seed=1)
    assert _digests(other.root)["dit.safetensors"] != _digests(first.root)["dit.safetensors"]


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
