"""Build DiffSynth pipelines for the bf16 reference and each candidate scheme, and swap the
components of a built pipeline from one scheme to another. What differs between pipelines (the
class, its components and tokenizers, each component's registry names) is the checkpoint's model
family's (``families/``).

The components a scheme targets (``schemes.py``: the DiT alone unless it names others) are built
in its storage: a storage scheme keeps its linear weights in float8 and casts them to bf16 per
layer (``ModelConfig`` dtypes, ``diffsynth/core/vram/layers.py``); a quantization method is
DiffSynth's own ``ModelConfig(quantize=QuantizeConfig(...))``; the other components stay bf16.
Where each component lives (host or device) and the ``vram_limit`` come from the checkpoint's
memory plan (``memory_plan.py``). After loading, ``scheme_check.py`` checks that each targeted
component's layers are what the scheme says and that the others are bf16. Running out of memory while loading raises
``LoadOutOfMemory``, never a ``CheckpointError``: the files are fine, the device is too small.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant_guard.model.checkpoints import CheckpointError, ResolvedCheckpoint
from quant_guard.model.host_memory import HostMemoryShortfall, HostPlan, check_host_memory, host_plan, measured_build
from quant_guard.model.families import default_family, family_of
from quant_guard.model.families.base import DIT, importable
from quant_guard.model.memory_plan import MemoryPlan, plan_memory, torch_fields
from quant_guard.model.scheme_check import check_scheme_applied, check_untargeted
from quant_guard.config.families import SECOND_DIT
from quant_guard.config.schemes import Scheme

if TYPE_CHECKING:
    from diffsynth.diffusion.base_pipeline import BasePipeline

    from quant_guard.model.families.base import ModelFamily


def pick_device(requested: str) -> str:
    """"auto" -> "cuda" when available, else "cpu"."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("device 'cuda' requested but torch sees no CUDA device")
    return requested


def prepare_diffsynth(family: ModelFamily | None = None) -> None:
    """Import torch and DiffSynth for the life of the process, patch what DiffSynth needs on the CPU,
    and register the embedded tiny checkpoint of ``family`` (default: the default family's) with
    DiffSynth's model registry."""
    from quant_guard.model.long_lived import frozen_after

    with frozen_after():  # what torch and DiffSynth create on import lives as long as the process
        import torch

        family = family or default_family()
        if family.tiny is not None:
            family.tiny.register_with_diffsynth()
        repair_vram_maps(family)

    # DiffSynth calls torch.<device>.empty_cache() when VRAM management is on; torch.cpu has none.
    if not hasattr(torch.cpu, "empty_cache"):
        torch.cpu.empty_cache = lambda: None  # type: ignore[attr-defined]


def repair_vram_maps(family: ModelFamily) -> None:
    """Rename, in DiffSynth's VRAM-management maps, each class path of ``family.module_renames``
    that the installed transformers no longer has to the name it has now. DiffSynth imports every
    class a map names when it enables VRAM management (any offload or ``vram_limit``), so a stale
    name fails the build."""
    from diffsynth.configs import VRAM_MANAGEMENT_MODULE_MAPS

    for old, new in family.module_renames:
        if importable(old) or not importable(new):
            continue
        for entry in VRAM_MANAGEMENT_MODULE_MAPS.values():
            if old in entry:
                entry[new] = entry.pop(old)



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


def default_plan(scheme: Scheme, device: str, family: ModelFamily | None = None) -> MemoryPlan:
    """Every component on ``device`` (no offload): what a direct caller without a checkpoint spec gets."""
    return plan_memory(cpu_offload=False, vram_limit_bytes=None, scheme=scheme, device=device,
                       device_total_bytes=None, family=family)


def dit_file(checkpoint: ResolvedCheckpoint, scheme: Scheme) -> Path | list[Path]:
    """The scheme's pre-quantized DiT file, else the checkpoint's bf16 DiT."""
    own = checkpoint.scheme_dit(scheme.id)
    return checkpoint.files[DIT] if own is None else own


def component_file(checkpoint: ResolvedCheckpoint, scheme: Scheme, name: str) -> Path | list[Path]:
    """The file ``scheme`` loads component ``name`` from: the scheme's own file of it (pre-quantized
    or damaged), else the checkpoint's bf16 one."""
    if name == DIT:
        return dit_file(checkpoint, scheme)
    own = checkpoint.scheme_file(scheme.id, name)
    return checkpoint.files[name] if own is None else own


def planned_host_memory(checkpoint: ResolvedCheckpoint, scheme: Scheme, plan: MemoryPlan) -> HostPlan:
    """The host RAM of this pipeline under ``plan`` (``host_memory.py``), from its files' sizes.
    A scheme's own file of a component is read as stored (a float8 file, checked by the gate, or a
    pre-quantized one) unless a method quantizes it on load."""
    names = family_of(checkpoint).model_components
    sizes = {name: _bytes_on_disk(component_file(checkpoint, scheme, name)) for name in names}

    def as_stored(name: str) -> bool:
        quantization = scheme.component(name).quantization
        own = checkpoint.scheme_file(scheme.id, name) is not None
        return own and (quantization is None or quantization.load_prequantized)

    return host_plan(plan, sizes, prequantized=[name for name in names if as_stored(name)])


def _require_host_memory(needed: int, what: str, breakdown: str) -> None:
    """Stop before DiffSynth reads a byte when the host cannot hold the load: an out-of-memory
    verdict naming the figure, not the kernel's OOM killer."""
    try:
        check_host_memory(needed, what, breakdown)
    except HostMemoryShortfall as exc:
        raise LoadOutOfMemory(what, exc) from None


def _bytes_on_disk(value: Path | list[Path]) -> int:
    paths = value if isinstance(value, list) else [value]
    return sum(p.stat().st_size for p in paths if p.is_file())


def _config(path: Path | list[Path], plan: MemoryPlan, component: str, quantize: Any = None) -> Any:
    from diffsynth.core import ModelConfig

    # Every path here is local (resolve_checkpoint fetched model_id components already):
    # skip_download makes a forgotten one fail instead of reaching for a hub.
    return ModelConfig(path=_as_str(path), skip_download=True, quantize=quantize,
                       **torch_fields(plan.components[component].model_config_fields()))


def _component_config(checkpoint: ResolvedCheckpoint, scheme: Scheme, plan: MemoryPlan, name: str) -> Any:
    """A component's ``ModelConfig``: stored as the plan says, quantized on load by the scheme's
    method for it, or, for a pre-quantized file, registered with DiffSynth (which then applies the
    registered quantization itself)."""
    path, quantization = component_file(checkpoint, scheme, name), scheme.component(name).quantization
    if quantization is None:
        return _config(path, plan, name)
    if quantization.load_prequantized and checkpoint.scheme_file(scheme.id, name) is None:
        raise CheckpointError(f"checkpoint {checkpoint.id!r}, scheme {scheme.id!r}: loads a pre-quantized file, but "
                              f"gives none for {name} (only its bf16 file {_as_str(path)})")
    if quantization.load_prequantized:
        register_prequantized(path, checkpoint.files[name], scheme.only(name))
        return _config(path, plan, name)
    return _config(path, plan, name, quantize=quantization.build())


def register_prequantized(path: Path | list[Path], reference_dit: Path | list[Path], scheme: Scheme) -> None:
    """DiffSynth recognises a model file by a hash of its tensor names and shapes, and knows a
    pre-quantized file by a registry entry carrying its ``quant_config`` (what
    ``diffsynth.utils.quant.serialization.save_quantized_model`` returns the hash for). Register
    the scheme's file as the reference DiT's architecture with the scheme's quantization."""
    from diffsynth.configs import MODEL_CONFIGS
    from diffsynth.core.loader import hash_model_file

    assert scheme.quantization is not None
    file_hash = hash_model_file(_as_str(path))
    if any(c["model_hash"] == file_hash for c in MODEL_CONFIGS):
        return
    reference_hash = hash_model_file(_as_str(reference_dit))
    # every model the reference file provides (FLUX.1's VAE file: the encoder and the decoder)
    bases = [c for c in MODEL_CONFIGS if c["model_hash"] == reference_hash]
    if not bases:
        raise CheckpointError(f"DiffSynth does not recognise the reference file {_as_str(reference_dit)}, so the "
                              f"pre-quantized file {_as_str(path)} of scheme {scheme.id!r} cannot be mapped to it")
    MODEL_CONFIGS.extend({**base, "model_hash": file_hash, "quant_config": scheme.quantization.as_dict()}
                         for base in bases)


def build_pipeline(checkpoint: ResolvedCheckpoint, scheme: Scheme, device: str,
                   *, plan: MemoryPlan | None = None) -> BasePipeline:
    """Load every component of the checkpoint's model family from local files under ``plan``
    (default: all on ``device``), the DiT in ``scheme``. Errors name the file that failed."""
    family = family_of(checkpoint)
    prepare_diffsynth(family)
    import torch
    from diffsynth.core import ModelConfig

    plan = plan or default_plan(scheme, device, family)
    if plan.device != device or plan.scheme != scheme:
        raise ValueError(f"memory plan for {plan.scheme.id} on {plan.device}, asked {scheme.id} on {device}")
    files = checkpoint.files
    dit = dit_file(checkpoint, scheme)
    host = planned_host_memory(checkpoint, scheme, plan)
    what = f"loading the {scheme.id} pipeline of {checkpoint.id!r}"
    _require_host_memory(host.build_bytes, what, host.describe())
    log = io.StringIO()  # DiffSynth prints a banner and a line per model; keep it for errors only
    try:
        with contextlib.redirect_stdout(log), measured_build() as build_memory:
            configs = [_component_config(checkpoint, scheme, plan, name) for name in family.model_components]
            tokenizers = {t.argument: ModelConfig(path=str(files[t.name]), skip_download=True)
                          for t in family.tokenizers}
            pipe = family.pipeline_type().from_pretrained(
                torch_dtype=torch.bfloat16, device=device, model_configs=configs, vram_limit=plan.vram_limit_gib,
                **tokenizers)
    except Exception as exc:
        raise _load_error(exc, checkpoint, dit, log, what) from exc
    pipe.qg_build_memory = build_memory  # the measured peak RSS of this build (host_memory.BuildMemory)
    given = {c.attribute: dit if c.name == DIT else files[c.name] for c in family.components}
    missing = [name for name in given if getattr(pipe, name) is None]
    if missing:
        which = "; ".join(f"no {name} from {_as_str(given[name])}" for name in missing)
        raise CheckpointError(f"checkpoint {checkpoint.id!r}: DiffSynth loaded {which}: that file was recognised as "
                              "another model or not at all; check that each component path points at the right model")
    check_components(pipe, checkpoint, scheme)
    return pipe


def check_components(pipe: BasePipeline, checkpoint: ResolvedCheckpoint, scheme: Scheme,
                     names: tuple[str, ...] | None = None) -> dict[str, int]:
    """Check each model of the components ``names`` (default: all) against ``scheme``: a targeted
    one against its own storage, the others as their files store them (the DiT: as the
    reference's). Returns the bytes each component stores."""
    family = family_of(checkpoint)
    out: dict[str, int] = {}
    for name in names or family.model_components:
        c = family.component(name)
        models = c.models or ((c.attribute, ""),)
        out[name] = 0
        for attribute, _ in models:
            module, what = getattr(pipe, attribute), name if len(models) == 1 else f"{name} ({attribute})"
            if name == DIT:
                found = check_scheme_applied(module, scheme, checkpoint.id, family.vram_layers)
            elif name == SECOND_DIT:  # the DiT's scheme: two DiTs quantized alike, or the check fails
                found = check_scheme_applied(module, scheme.only(name), checkpoint.id, family.vram_layers,
                                             component=f"second DiT ({name})")
            elif name in scheme.targets:
                found = check_scheme_applied(module, scheme.only(name), checkpoint.id, family.vram_layers,
                                             component=what, linear_required=False)  # a VAE: convolutions
            else:
                found = check_untargeted(module, scheme, checkpoint.id, what, family.vram_layers)
            out[name] += found.stored_bytes
    return out


def changed_components(checkpoint: ResolvedCheckpoint, loaded: Scheme, scheme: Scheme) -> tuple[str, ...]:
    """The model components a pipeline built for ``loaded`` must reload to be ``scheme``'s: those
    whose storage or file differs."""
    return tuple(name for name in family_of(checkpoint).model_components
                 if loaded.component(name) != scheme.component(name)
                 or component_file(checkpoint, loaded, name) != component_file(checkpoint, scheme, name))


def swap_dit(pipe: BasePipeline, checkpoint: ResolvedCheckpoint, scheme: Scheme,
             plan: MemoryPlan) -> None:
    """Replace the pipeline's DiT by the one of ``scheme`` (``swap_components``)."""
    swap_components(pipe, checkpoint, scheme, plan, (DIT,))


def swap_components(pipe: BasePipeline, checkpoint: ResolvedCheckpoint, scheme: Scheme, plan: MemoryPlan,
                    names: tuple[str, ...]) -> None:
    """Replace the pipeline's components ``names`` by those of ``scheme``, loaded under ``plan`` by
    DiffSynth's own loader (``download_and_load_models``) and fetched by their registry names
    (``Component.models``). Each old component is dropped and its memory returned before the new
    one is read, so the device never holds two of one."""
    family = family_of(checkpoint)
    models = {name: family.loaded_models(name) for name in names}  # a component it cannot fetch fails first
    memory = None
    for name in names:
        memory = _swap_one(pipe, checkpoint, scheme, plan, name, models[name])
    if memory is not None:
        pipe.qg_build_memory = memory
    pipe.vram_management_enabled = pipe.check_vram_management_state()
    check_components(pipe, checkpoint, scheme, names)


def _swap_one(pipe: BasePipeline, checkpoint: ResolvedCheckpoint, scheme: Scheme, plan: MemoryPlan, name: str,
              models: tuple[tuple[str, str], ...]) -> Any:
    """Reload one component; its measured build memory (``host_memory.BuildMemory``)."""
    for attribute, _ in models:
        setattr(pipe, attribute, None)
    release_memory()
    path = component_file(checkpoint, scheme, name)
    host = planned_host_memory(checkpoint, scheme, plan).component(name)
    what = f"loading the {scheme.id} {'DiT' if name == DIT else name} of {checkpoint.id!r}"
    _require_host_memory(host.load_bytes, what, f"{name} {host.how}")
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), measured_build() as build_memory:
            pool = pipe.download_and_load_models([_component_config(checkpoint, scheme, plan, name)],
                                                 plan.vram_limit_gib)
            for attribute, registry_name in models:
                setattr(pipe, attribute, pool.fetch_model(registry_name))
    except Exception as exc:
        raise _load_error(exc, checkpoint, path, log, what) from exc
    missing = [attribute for attribute, _ in models if getattr(pipe, attribute) is None]
    if missing:
        raise CheckpointError(f"checkpoint {checkpoint.id!r}: DiffSynth loaded no {', '.join(missing)} from "
                              f"{_as_str(path)}: that file was recognised as another model or not at all")
    return build_memory


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
