"""Support for the tiny Qwen-Image and Z-Image tests (tests/model/test_tiny_qwen_image.py,
test_tiny_z_image.py): build a family's DiffSynth pipeline from the tiny files with the DiT in a
scheme, the way ``quant_guard.model.pipelines`` does it for FLUX.1 (the memory plan's
``ModelConfig`` dtype fields for float8 storage, ``QuantizeConfig`` for a method, then the scheme
check), and render one image."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant_guard.config.schemes import Quantization, Scheme

if TYPE_CHECKING:
    import numpy as np

PROMPT = "a red circle on a blue background at the top left"
INT8 = Scheme("torchao_int8_w8a16", quantization=Quantization("torchao_int8_w8a16"))


@dataclass(frozen=True)
class FamilyLimits:
    """What the shared render tests (``family_render_tests``) need of one tiny family."""

    pipeline_class: Callable[[], Any]  # the DiffSynth pipeline class, imported when called
    blocks: str  # the DiT's block list, for degrade
    float8_lpips_max: float  # float8 (and int8) against bf16, measured on the tiny (FACTS.md)
    float8_psnr_min: float
    damage_noise: float  # degrade's noise fraction on block 0
    damage_over_float8: float  # damaged LPIPS at least this many times float8's
SIZE = 64
STEPS = 3


def dit_model_config(path: Path, scheme: Scheme) -> Any:
    """The DiT's ``ModelConfig`` under ``scheme`` on the CPU: quant_guard's own memory plan fields."""
    from diffsynth.core import ModelConfig

    from quant_guard.model.memory_plan import torch_fields
    from quant_guard.model.pipelines import default_plan

    plan = default_plan(scheme, "cpu")
    quantize = scheme.quantization.build() if scheme.quantization is not None else None
    return ModelConfig(path=str(path), skip_download=True, quantize=quantize,
                       **torch_fields(plan.components["dit"].model_config_fields()))


def build(pipeline_class: Any, files: Any, scheme: Scheme, *, dit: Path | None = None, check: bool = True) -> Any:
    """``pipeline_class.from_pretrained`` from a tiny family's files (``files.dit``, ``.text_encoder``,
    ``.vae``, ``.tokenizer``), the DiT (``dit`` or the checkpoint's) in ``scheme``; with ``check`` the
    DiT is checked against the scheme as quant_guard checks every build."""
    import torch
    from diffsynth.core import ModelConfig

    from quant_guard.model.pipelines import prepare_diffsynth
    from quant_guard.model.scheme_check import check_scheme_applied

    prepare_diffsynth()
    configs = [dit_model_config(dit or files.dit, scheme),
               ModelConfig(path=str(files.text_encoder), skip_download=True),
               ModelConfig(path=str(files.vae), skip_download=True)]
    with contextlib.redirect_stdout(io.StringIO()):  # DiffSynth prints a line per model
        pipe = pipeline_class.from_pretrained(
            torch_dtype=torch.bfloat16, device="cpu", model_configs=configs,
            tokenizer_config=ModelConfig(path=str(files.tokenizer), skip_download=True))
    if check:
        check_scheme_applied(pipe.dit, scheme, files.root.name)
    return pipe


def render(pipe: Any, *, seed: int = 0, steps: int = STEPS, **kwargs: Any) -> np.ndarray:
    """One 64x64 image of ``PROMPT`` as a uint8 HxWx3 array."""
    import numpy as np

    image = pipe(PROMPT, seed=seed, height=SIZE, width=SIZE, num_inference_steps=steps,
                 progress_bar_cmd=lambda steps: steps, **kwargs)
    return np.asarray(image.convert("RGB"))


def damaged_dit(source: Path, dest: Path, *, blocks: str, kind: str = "noise", strength: float | None = None) -> Path:
    """A copy of the DiT file with ``quant-guard degrade``'s ``kind`` applied to block 0."""
    from safetensors.torch import load_file, save_file

    from quant_guard.tools.degrade import degrade

    save_file(degrade(load_file(str(source)), kind, blocks=blocks, strength=strength), str(dest))
    return dest


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    import hashlib

    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
