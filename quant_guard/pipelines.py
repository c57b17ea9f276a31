"""Build DiffSynth ``FluxImagePipeline`` objects for the bf16 reference and the float8 candidate.

The candidate is the source article's scheme in DiffSynth 2.x terms: the DiT's weights are
stored in float8_e4m3fn and cast to bf16 per layer for compute (``ModelConfig`` dtypes, see
``diffsynth/core/vram/layers.py``); text encoders and VAE stay bf16. ``cpu_offload`` keeps the
float8 DiT in host memory and onloads it per layer, like the article's ``enable_cpu_offload``.
A pre-quantized DiT file (float8 tensors) replaces the DiT under the same scheme.
"""

from __future__ import annotations

import contextlib
import io
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant_guard.checkpoints import CheckpointError, ResolvedCheckpoint

if TYPE_CHECKING:
    from diffsynth.pipelines.flux_image import FluxImagePipeline


class Precision(str, Enum):
    BF16 = "bf16"  # the reference that renders goldens
    FLOAT8_E4M3FN = "float8_e4m3fn"  # DiT stored in float8, computed in bf16


def pick_device(requested: str) -> str:
    """"auto" -> "cuda" when available, else "cpu"."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("device 'cuda' requested but torch sees no CUDA device")
    return requested


def _prepare_diffsynth() -> None:
    import torch

    # DiffSynth calls torch.<device>.empty_cache() when VRAM management is on; torch.cpu has none.
    if not hasattr(torch.cpu, "empty_cache"):
        torch.cpu.empty_cache = lambda: None  # type: ignore[attr-defined]
    from quant_guard.tiny.architecture import register_with_diffsynth

    register_with_diffsynth()


def dit_dtype_settings(precision: Precision, device: str, *, cpu_offload: bool) -> dict[str, Any]:
    """The ``ModelConfig`` dtype/device fields for the DiT ({} = DiffSynth's plain bf16 load)."""
    import torch

    if precision is Precision.BF16:
        return {}
    store = torch.float8_e4m3fn
    home = "cpu" if cpu_offload else device
    return {
        "offload_dtype": store, "offload_device": home,
        "onload_dtype": store, "onload_device": home,
        "preparing_dtype": store, "preparing_device": device,
        "computation_dtype": torch.bfloat16, "computation_device": device,
    }


def build_pipeline(checkpoint: ResolvedCheckpoint, precision: Precision, device: str,
                   *, cpu_offload: bool = False) -> FluxImagePipeline:
    """Load every component from local files. Errors name the file that failed."""
    _prepare_diffsynth()
    import torch
    from diffsynth.core import ModelConfig
    from diffsynth.pipelines.flux_image import FluxImagePipeline

    files = checkpoint.files
    dit: Path | list[Path] = files["dit"]
    if precision is not Precision.BF16 and checkpoint.candidate_dit is not None:
        dit = checkpoint.candidate_dit
    # Every path here is local (resolve_checkpoint fetched model_id components already):
    # skip_download makes a forgotten one fail instead of reaching for a hub.
    local = {"skip_download": True}
    configs = [
        ModelConfig(path=_as_str(dit), **local, **dit_dtype_settings(precision, device, cpu_offload=cpu_offload)),
        ModelConfig(path=_as_str(files["text_encoder_clip"]), **local),
        ModelConfig(path=_as_str(files["text_encoder_t5"]), **local),
        ModelConfig(path=_as_str(files["vae"]), **local),
    ]
    log = io.StringIO()  # DiffSynth prints a banner and a line per model; keep it for errors only
    try:
        with contextlib.redirect_stdout(log):
            pipe = FluxImagePipeline.from_pretrained(
                torch_dtype=torch.bfloat16, device=device, model_configs=configs,
                tokenizer_1_config=ModelConfig(path=str(files["tokenizer_clip"]), **local),
                tokenizer_2_config=ModelConfig(path=str(files["tokenizer_t5"]), **local),
            )
    except Exception as exc:
        loaded = [line for line in log.getvalue().splitlines() if line.startswith(("Loading models", "Loaded model"))]
        tail = ("\nDiffSynth's log before the error:\n  " + "\n  ".join(loaded[-6:])) if loaded else ""
        raise CheckpointError(_explain_load_error(exc, checkpoint, dit) + tail) from exc
    given = {"dit": dit, "text_encoder_1": files["text_encoder_clip"], "text_encoder_2": files["text_encoder_t5"],
             "vae_decoder": files["vae"]}
    missing = [name for name in given if getattr(pipe, name) is None]
    if missing:
        which = "; ".join(f"no {name} from {_as_str(given[name])}" for name in missing)
        raise CheckpointError(f"checkpoint {checkpoint.id!r}: DiffSynth loaded {which}: that file was recognised as "
                              "another model or not at all; check that each component path points at the right model")
    if precision is Precision.FLOAT8_E4M3FN:
        assert_dit_stored_in(pipe, torch.float8_e4m3fn, checkpoint.id)
    return pipe


def assert_dit_stored_in(pipe: FluxImagePipeline, dtype: Any, checkpoint_id: str) -> None:
    """DiffSynth silently upcasts a DiT whose class has no VRAM-management entry; refuse that."""
    weights = [m.weight for m in pipe.dit.modules() if type(m).__name__ == "AutoWrappedLinear"]
    if not weights or any(w.dtype != dtype for w in weights):
        found = sorted({str(w.dtype) for w in weights}) or ["no wrapped linear layers"]
        raise CheckpointError(f"checkpoint {checkpoint_id!r}: the candidate DiT's linear weights are {found}, "
                              f"not {dtype}: DiffSynth did not apply float8 storage to this DiT class")


def dit_weight_bytes(pipe: FluxImagePipeline) -> int:
    """Bytes of the DiT's parameters and buffers as they are stored (float8 = 1 byte each)."""
    tensors = list(pipe.dit.parameters()) + list(pipe.dit.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def _as_str(value: Path | list[Path]) -> str | list[str]:
    return [str(p) for p in value] if isinstance(value, list) else str(value)


def _explain_load_error(exc: Exception, checkpoint: ResolvedCheckpoint, dit: Path | list[Path]) -> str:
    text = str(exc)
    if "Cannot detect the model type" in text:
        return (f"checkpoint {checkpoint.id!r}: DiffSynth does not recognise a model file ({text}). "
                "Its tensor names/shapes match no registered architecture: is it the right file for this "
                "component, complete and not truncated?")
    if "header" in text.lower() or "safetensor" in text.lower() or "incomplete" in text.lower():
        return f"checkpoint {checkpoint.id!r}: a safetensors file could not be read ({text}); is it truncated?"
    if "size mismatch" in text or "Missing key" in text or "Unexpected key" in text:
        return f"checkpoint {checkpoint.id!r}: tensors do not fit the architecture: {text}"
    return f"checkpoint {checkpoint.id!r}: loading failed ({type(exc).__name__}: {text}); DiT: {_as_str(dit)}"
