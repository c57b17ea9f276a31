"""Build DiffSynth's ``Flux2ImagePipeline`` from local FLUX.2 files with the DiT in a scheme, the way
``quant_guard.model.pipelines.build_pipeline`` does for FLUX.1: the DiT's ``ModelConfig`` takes the
memory plan's dtype fields (float8 storage) or the scheme's ``QuantizeConfig``; text encoder and
VAE stay bf16; ``scheme_check`` then checks the DiT. What the model-family seam will generalise:
only the pipeline class, the component list and the tokenizer argument differ from FLUX.1."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

from quant_guard.config.schemes import REFERENCE, Scheme

if TYPE_CHECKING:
    from diffsynth.pipelines.flux2_image import Flux2ImagePipeline

    from quant_guard.model.tiny.build import TinyFamilyFiles

DIT_REGISTRY_NAME = "flux2_dit"  # model_pool.fetch_model(...) in Flux2ImagePipeline.from_pretrained


def prepare() -> None:
    """DiffSynth's CPU fixes (``pipelines.prepare_diffsynth``) and the tiny FLUX.2 registration."""
    from quant_guard.model.pipelines import prepare_diffsynth
    from quant_guard.model.tiny_flux2.architecture import register_with_diffsynth

    prepare_diffsynth()
    register_with_diffsynth()


def build_flux2_pipeline(files: TinyFamilyFiles, scheme: Scheme = REFERENCE, *, device: str = "cpu",
                         dit: Path | None = None, check: bool = True) -> Flux2ImagePipeline:
    """The pipeline with every component from ``files`` (the DiT from ``dit`` when given: a damaged
    or pre-quantized file) and the DiT in ``scheme``; DiffSynth's log is kept out of stdout."""
    prepare()
    import torch
    from diffsynth.core import ModelConfig
    from diffsynth.pipelines.flux2_image import Flux2ImagePipeline

    from quant_guard.model.memory_plan import torch_fields
    from quant_guard.model.pipelines import default_plan
    from quant_guard.model.scheme_check import check_scheme_applied

    plan = default_plan(scheme, device)
    quantize = scheme.quantization.build() if scheme.quantization is not None else None
    dit_config = ModelConfig(path=str(dit or files.dit), skip_download=True, quantize=quantize,
                             **torch_fields(plan.components["dit"].model_config_fields()))
    others = [ModelConfig(path=str(p), skip_download=True) for p in (files.text_encoder, files.vae)]
    with contextlib.redirect_stdout(io.StringIO()):
        pipe = Flux2ImagePipeline.from_pretrained(
            torch_dtype=torch.bfloat16, device=device, model_configs=[dit_config, *others],
            tokenizer_config=ModelConfig(path=str(files.tokenizer), skip_download=True))
    missing = [name for name in ("dit", "text_encoder_qwen3", "vae") if getattr(pipe, name) is None]
    if missing:
        raise RuntimeError(f"tiny FLUX.2 checkpoint {files.root}: DiffSynth loaded no {', '.join(missing)}")
    if check:
        check_scheme_applied(pipe.dit, scheme, "tiny-flux2")
    return pipe
