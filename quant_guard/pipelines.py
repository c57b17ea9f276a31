"""Build DiffSynth ``FluxImagePipeline`` objects for the bf16 reference and the float8 candidate,
and swap the DiT of a built pipeline from one precision to the other.

The candidate is the source article's scheme in DiffSynth 2.x terms: the DiT's weights are
stored in float8_e4m3fn and cast to bf16 per layer for compute (``ModelConfig`` dtypes, see
``diffsynth/core/vram/layers.py``); text encoders and VAE stay bf16. Where each component lives
(host or device) and the ``vram_limit`` come from the checkpoint's memory plan
(``memory_plan.py``). A pre-quantized DiT file (float8 tensors) replaces the DiT under the same
scheme. Running out of memory while loading raises ``LoadOutOfMemory``, never a
``CheckpointError``: the files are fine, the device is too small for the plan.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant_guard.checkpoints import CheckpointError, ResolvedCheckpoint
from quant_guard.memory_plan import MemoryPlan, Precision, plan_memory, torch_fields

if TYPE_CHECKING:
    from diffsynth.pipelines.flux_image import FluxImagePipeline


def pick_device(requested: str) -> str:
    """"auto" -> "cuda" when available, else "cpu"."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("device 'cuda' requested but torch sees no CUDA device")
    return requested


def _prepare_diffsynth() -> None:
    from quant_guard.long_lived import frozen_after

    with frozen_after():  # what torch and DiffSynth create on import lives as long as the process
        import torch

        from quant_guard.tiny.architecture import register_with_diffsynth

    # DiffSynth calls torch.<device>.empty_cache() when VRAM management is on; torch.cpu has none.
    if not hasattr(torch.cpu, "empty_cache"):
        torch.cpu.empty_cache = lambda: None  # type: ignore[attr-defined]
    register_with_diffsynth()


class LoadOutOfMemory(Exception):
    """Loading a pipeline (or swapping its DiT) ran out of device or host memory."""

    def __init__(self, what: str, error: BaseException) -> None:
        super().__init__(f"out of memory while {what}: {type(error).__name__}: {error}")
        self.what, self.error = what, error


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    # some CUDA allocations (cuBLAS handles, a failed cudaMalloc in an extension) raise a plain
    # RuntimeError saying so instead of torch.OutOfMemoryError
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()


def default_plan(precision: Precision, device: str) -> MemoryPlan:
    """Every component on ``device`` (no offload): what a direct caller without a checkpoint spec gets."""
    return plan_memory(cpu_offload=False, vram_limit_bytes=None, precision=precision, device=device,
                       device_total_bytes=None)


def _dit_file(checkpoint: ResolvedCheckpoint, precision: Precision) -> Path | list[Path]:
    if precision is not Precision.BF16 and checkpoint.candidate_dit is not None:
        return checkpoint.candidate_dit
    return checkpoint.files["dit"]


def _config(path: Path | list[Path], plan: MemoryPlan, component: str) -> Any:
    from diffsynth.core import ModelConfig

    # Every path here is local (resolve_checkpoint fetched model_id components already):
    # skip_download makes a forgotten one fail instead of reaching for a hub.
    return ModelConfig(path=_as_str(path), skip_download=True,
                       **torch_fields(plan.components[component].model_config_fields()))


def build_pipeline(checkpoint: ResolvedCheckpoint, precision: Precision, device: str,
                   *, plan: MemoryPlan | None = None) -> FluxImagePipeline:
    """Load every component from local files under ``plan`` (default: all on ``device``).
    Errors name the file that failed."""
    _prepare_diffsynth()
    import torch
    from diffsynth.core import ModelConfig
    from diffsynth.pipelines.flux_image import FluxImagePipeline

    plan = plan or default_plan(precision, device)
    if plan.device != device or plan.precision is not precision:
        raise ValueError(f"memory plan for {plan.precision.value} on {plan.device}, "
                         f"asked {precision.value} on {device}")
    files = checkpoint.files
    dit = _dit_file(checkpoint, precision)
    configs = [_config(dit, plan, "dit"), _config(files["text_encoder_clip"], plan, "text_encoder_clip"),
               _config(files["text_encoder_t5"], plan, "text_encoder_t5"), _config(files["vae"], plan, "vae")]
    log = io.StringIO()  # DiffSynth prints a banner and a line per model; keep it for errors only
    try:
        with contextlib.redirect_stdout(log):
            pipe = FluxImagePipeline.from_pretrained(
                torch_dtype=torch.bfloat16, device=device, model_configs=configs, vram_limit=plan.vram_limit_gib,
                tokenizer_1_config=ModelConfig(path=str(files["tokenizer_clip"]), skip_download=True),
                tokenizer_2_config=ModelConfig(path=str(files["tokenizer_t5"]), skip_download=True),
            )
    except Exception as exc:
        raise _load_error(exc, checkpoint, dit, log, f"loading the {precision.value} pipeline of {checkpoint.id!r}") \
            from exc
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


def swap_dit(pipe: FluxImagePipeline, checkpoint: ResolvedCheckpoint, precision: Precision,
             plan: MemoryPlan) -> None:
    """Replace the pipeline's DiT by the one of ``precision``, loaded under ``plan`` by DiffSynth's
    own loader (``download_and_load_models``). The old DiT is dropped and its memory returned
    before the new one is read, so the device never holds two DiTs."""
    import torch

    pipe.dit = None
    release_memory()
    dit = _dit_file(checkpoint, precision)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            pool = pipe.download_and_load_models([_config(dit, plan, "dit")], plan.vram_limit_gib)
            pipe.dit = pool.fetch_model("flux_dit")
    except Exception as exc:
        raise _load_error(exc, checkpoint, dit, log, f"loading the {precision.value} DiT of {checkpoint.id!r}") from exc
    if pipe.dit is None:
        raise CheckpointError(f"checkpoint {checkpoint.id!r}: DiffSynth loaded no dit from {_as_str(dit)}: that file "
                              "was recognised as another model or not at all")
    pipe.vram_management_enabled = pipe.check_vram_management_state()
    if precision is Precision.FLOAT8_E4M3FN:
        assert_dit_stored_in(pipe, torch.float8_e4m3fn, checkpoint.id)


def release_memory() -> None:
    """Collect dropped modules and hand cached device blocks back, so that what the allocator
    reports afterwards is what is still referenced."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def _load_error(exc: Exception, checkpoint: ResolvedCheckpoint, dit: Path | list[Path], log: io.StringIO,
                what: str) -> Exception:
    if is_out_of_memory(exc):
        return LoadOutOfMemory(what, exc)
    loaded = [line for line in log.getvalue().splitlines() if line.startswith(("Loading models", "Loaded model"))]
    tail = ("\nDiffSynth's log before the error:\n  " + "\n  ".join(loaded[-6:])) if loaded else ""
    return CheckpointError(_explain_load_error(exc, checkpoint, dit) + tail)


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
