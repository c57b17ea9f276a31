"""The embedded tiny FLUX.2 (klein) checkpoint: DiffSynth recognises its files, its own
``Flux2ImagePipeline`` renders them on CPU, float8 storage and a ``diffsynth.core.quant`` method
really change the DiT's layers, and a damaged DiT moves the image far more than float8 does.

The weights are seeded random ones: on them only strong damage stands out from float8
(quant_guard/model/tiny_flux2/FACTS.md, "Detection power"), hence noise at 3x the weight std here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from family_support import build, damaged_dit
from safetensors.torch import load_file

from quant_guard.config.schemes import FLOAT8_E4M3FN, REFERENCE, Quantization, Scheme
from quant_guard.judge.metrics import lpips_distance, psnr
from quant_guard.model.checkpoints import CheckpointError
from quant_guard.model.scheme_check import inventory
from quant_guard.model.tiny_flux2 import architecture as arch
from quant_guard.model.tiny.build import TinyFamilyFiles
from quant_guard.model.tiny_flux2.build import MANIFEST, ensure_tiny_flux2_checkpoint, write_tiny_flux2_checkpoint
from quant_guard.model.families import embedded_family
from quant_guard.model.pipelines import prepare_diffsynth

SIZE, STEPS = 64, 3
PAIRS = (("a red circle on a blue background at the top left", 0),
         ("a yellow triangle on a gray background at the bottom right", 2))
INT8 = Scheme("int8", quantization=Quantization("torchao_int8_w8a16"))
EMBEDDED = "tiny-flux2"
STRONG_NOISE = 3.0  # x each weight's std on double block 0; the gate's default 0.75 is lost in float8's error here


@pytest.fixture(scope="module")
def files() -> TinyFamilyFiles:
    return ensure_tiny_flux2_checkpoint()


@pytest.fixture(scope="module")
def reference(files: TinyFamilyFiles) -> list[np.ndarray]:
    return _render_all(build(EMBEDDED, files, REFERENCE))


@pytest.fixture(scope="module")
def float8_pipe(files: TinyFamilyFiles) -> Any:
    return build(EMBEDDED, files, FLOAT8_E4M3FN)  # build_pipeline runs scheme_check.check_scheme_applied


@pytest.fixture(scope="module")
def float8_images(float8_pipe: Any) -> list[np.ndarray]:
    return _render_all(float8_pipe)


def _render(pipe: Any, prompt: str, seed: int) -> np.ndarray:
    image = pipe(prompt, seed=seed, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                 progress_bar_cmd=lambda steps: steps)
    return np.asarray(image)


def _render_all(pipe: Any) -> list[np.ndarray]:
    return [_render(pipe, prompt, seed) for prompt, seed in PAIRS]


def _worst(reference: list[np.ndarray], images: list[np.ndarray]) -> tuple[float, float]:
    """(lowest PSNR, highest LPIPS) over the pairs."""
    return (min(psnr(r, i) for r, i in zip(reference, images)),
            max(lpips_distance(r, i) for r, i in zip(reference, images)))


def test_build_is_deterministic_and_cached(tmp_path: Path, files: TinyFamilyFiles) -> None:
    again = write_tiny_flux2_checkpoint(tmp_path / "again")
    assert (again.root / MANIFEST).is_file()  # written last: build_once reuses only a whole checkpoint
    for name in ("dit", "text_encoder", "vae"):
        assert getattr(again, name).read_bytes() == getattr(files, name).read_bytes(), name
    other = write_tiny_flux2_checkpoint(tmp_path / "other", seed=1)
    assert other.dit.read_bytes() != files.dit.read_bytes()
    assert ensure_tiny_flux2_checkpoint() == files  # the cached copy, not a rebuild
    assert {str(v.dtype) for v in load_file(str(files.dit)).values()} == {"torch.bfloat16"}


def test_diffsynth_recognises_each_file_as_its_flux2_component(files: TinyFamilyFiles) -> None:
    from diffsynth.configs import MODEL_CONFIGS
    from diffsynth.core.loader import hash_model_file

    prepare_diffsynth(embedded_family(EMBEDDED))
    names = {c["model_hash"]: c["model_name"] for c in MODEL_CONFIGS}
    assert names[hash_model_file(str(files.dit))] == "flux2_dit"
    assert names[hash_model_file(str(files.text_encoder))] == "z_image_text_encoder"
    assert names[hash_model_file(str(files.vae))] == "flux2_vae"


def test_tokenizer_loads_offline_and_renders_qwen3s_chat_turn(files: TinyFamilyFiles) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(files.tokenizer))
    text = tok.apply_chat_template([{"role": "user", "content": "a red circle"}], tokenize=False,
                                   add_generation_prompt=True, enable_thinking=False)
    assert text == "<|im_start|>user\na red circle<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    pieces = tok.convert_ids_to_tokens(tok(" red circle")["input_ids"])
    assert pieces == ["Ġred", "Ġcircle"]  # caption words are single tokens
    ids = tok(text, padding="max_length", max_length=arch.TEXT_SEQUENCE_LENGTH)["input_ids"]
    assert len(ids) == arch.TEXT_SEQUENCE_LENGTH and ids[-1] == tok.pad_token_id
    assert max(ids) < arch.text_config().vocab_size


def test_bf16_render_is_finite_seeded_and_depends_on_the_seed(files: TinyFamilyFiles,
                                                               reference: list[np.ndarray]) -> None:
    pipe = build(EMBEDDED, files, REFERENCE)
    assert type(pipe).__name__ == "Flux2ImagePipeline"
    assert isinstance(pipe.text_encoder_qwen3, arch.TinyQwen3TextEncoder)
    image = reference[0]
    assert image.shape == (SIZE, SIZE, 3) and image.std() > 5
    np.testing.assert_array_equal(_render(pipe, *PAIRS[0]), image)  # same process, same seed
    assert psnr(image, _render(pipe, PAIRS[0][0], seed=7)) < 25


def test_float8_storage_keeps_every_dit_linear_in_float8_and_renders_close(
        float8_pipe: Any, float8_images: list[np.ndarray], reference: list[np.ndarray]) -> None:
    import torch

    layers = inventory(float8_pipe.dit).layers
    assert layers and all(layer.format == "float8_e4m3fn" and layer.managed for layer in layers)
    linears = [m for m in float8_pipe.dit.modules() if type(m).__name__ == "AutoWrappedLinear"]
    assert len(linears) == len(layers) and all(m.weight.dtype == torch.float8_e4m3fn for m in linears)
    images = float8_images
    assert all(np.isfinite(i).all() for i in images)
    worst_psnr, worst_lpips = _worst(reference, images)
    assert any(not np.array_equal(r, i) for r, i in zip(reference, images))
    assert worst_psnr > 32 and worst_lpips < 0.01


def test_without_diffsynths_vram_map_entry_the_float8_dit_is_refused(files: TinyFamilyFiles,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The map entry is what makes DiffSynth wrap each Linear (cast per layer); without it the whole
    DiT is one wrapped module and the scheme check must say so."""
    from diffsynth.configs import VRAM_MANAGEMENT_MODULE_MAPS

    prepare_diffsynth(embedded_family(EMBEDDED))
    monkeypatch.delitem(VRAM_MANAGEMENT_MODULE_MAPS, arch.DIT_CLASS)
    with pytest.raises(CheckpointError, match="not stored in float8_e4m3fn"):
        build(EMBEDDED, files, FLOAT8_E4M3FN)


def test_int8_weight_only_quantizes_every_dit_linear_and_renders_close(files: TinyFamilyFiles,
                                                                      reference: list[np.ndarray]) -> None:
    pipe = build(EMBEDDED, files, INT8)
    layers = inventory(pipe.dit).layers
    assert layers and all(layer.quantized and "int8" in layer.format.lower() for layer in layers)
    images = _render_all(pipe)
    assert all(np.isfinite(i).all() for i in images)
    worst_psnr, worst_lpips = _worst(reference, images)
    assert any(not np.array_equal(r, i) for r, i in zip(reference, images))
    assert worst_psnr > 32 and worst_lpips < 0.01


def test_a_damaged_dit_moves_the_image_far_more_than_float8(files: TinyFamilyFiles, reference: list[np.ndarray],
                                                           float8_images: list[np.ndarray], tmp_path: Path) -> None:
    float8 = _worst(reference, float8_images)
    noisy = damaged_dit(EMBEDDED, files.dit, tmp_path / "dit.safetensors", strength=STRONG_NOISE)  # double block 0
    damaged = _worst(reference, _render_all(build(EMBEDDED, files, REFERENCE, dit=noisy)))
    assert damaged[0] < float8[0] - 6  # PSNR at least 6 dB lower
    assert damaged[1] > 5 * float8[1]  # LPIPS at least 5x higher
