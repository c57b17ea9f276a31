"""Checkpoints of random weights at a chosen architecture size, written as the files the gate's
own loader reads: a model family's full size (DiffSynth's own classes at their real widths, e.g.
FLUX.1-dev's or Qwen-Image's) for ``quant-guard doctor --full-size``, or the family's embedded tiny
architecture, so that the same code runs on a CPU in a test. Nothing is downloaded; the weights are
drawn on the target device. The sizes and their classes are the family's
(``ModelFamily.architectures``); an architecture knows nothing else, ``architecture_family`` finds
the family it belongs to (its pipeline, tokenizers and memory plan).

The files hold DiffSynth's own tensor names (or the released file's layout, ``ModelClass.to_file``),
which its registry may not list for the real classes (it knows the released files' names and
converts them), so ``register`` adds an entry per class where none matches, the way each tiny
package's ``register_with_diffsynth`` registers its classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant_guard.model.checkpoints import ResolvedCheckpoint
from quant_guard.model.families import default_family, families
from quant_guard.model.families.base import Architecture, ModelFamily, import_dotted

if TYPE_CHECKING:
    import torch

# Every architecture of the default family by its --shapes name (``architectures(family)`` for another)
ARCHITECTURES = {a.name: a for a in default_family().architectures}
FULL_SIZE = default_family().full_size


def architectures(family: ModelFamily) -> dict[str, Architecture]:
    """The family's sizes by their ``--shapes`` name, the full size first."""
    return {a.name: a for a in family.architectures}


def architecture_family(arch: Architecture) -> ModelFamily:
    """The family whose sizes include ``arch``."""
    for family in families().values():
        if any(a is arch or a == arch for a in family.architectures):
            # without the optional components it writes no file of (Wan's second DiT)
            return family.having({c.component for c in arch.classes})
    raise ValueError(f"architecture {arch.name!r} belongs to no model family")


def state_shapes(arch: Architecture) -> dict[str, dict[str, tuple[tuple[int, ...], Any]]]:
    """File -> tensor name -> (shape, dtype) of each weight file, built on the meta device (no memory).
    Classes sharing a file (a VAE's encoder and decoder) put their tensors under their prefixes."""
    import torch

    out: dict[str, dict[str, tuple[tuple[int, ...], Any]]] = {}
    with torch.device("meta"):
        modules = [(c, import_dotted(c.model_class)(**c.constructor_kwargs())) for c in arch.classes]
    for c, module in modules:
        tensors = _untied(module) if c.untied else {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}
        if c.to_file is not None:  # the released file's layout (a converter maps it back on load)
            tensors = import_dotted(c.to_file)(tensors)
        out.setdefault(c.component, {}).update({f"{c.prefix}{k}": v for k, v in tensors.items()})
    return out


def _untied(module: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Tensor name -> (shape, dtype), each tied tensor once (T5's encoder.embed_tokens is its
    shared table: a released T5 file stores it once, and DiffSynth's T5 converter ties it back)."""
    seen: set[int] = set()
    out = {}
    for name, tensor in module.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out[name] = (tuple(tensor.shape), tensor.dtype)
    return out


def file_bytes(arch: Architecture) -> dict[str, int]:
    """Bytes of each weight file in bf16 (what a released checkpoint of this size takes on disk)."""
    out = {}
    for name, tensors in state_shapes(arch).items():
        out[name] = sum(2 * _numel(shape) for shape, _ in tensors.values())
    return out


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def register(arch: Architecture) -> None:
    """Teach DiffSynth to recognise files with these tensor names (idempotent): a file whose
    names and shapes are a released file's is recognised by DiffSynth's own entry."""
    from diffsynth.configs import MODEL_CONFIGS

    from quant_guard.model.tiny.architecture import keys_hash

    family = architecture_family(arch)
    if family.tiny is not None:
        family.tiny.register_with_diffsynth()  # the tiny classes, and their VRAM-management entries
    hashes = {name: keys_hash({k: list(shape) for k, (shape, _) in tensors.items()})
              for name, tensors in state_shapes(arch).items()}
    for c in arch.classes:
        kwargs = c.constructor_kwargs()
        extra: dict[str, Any] = {"extra_kwargs": kwargs} if kwargs else {}
        if c.converter is not None:
            extra["state_dict_converter"] = c.converter
        model_hash = hashes[c.component]
        # an entry that already matches would load the model a second time
        if not any(e["model_hash"] == model_hash and e["model_name"] == c.registry_name for e in MODEL_CONFIGS):
            MODEL_CONFIGS.append({"model_hash": model_hash, "model_name": c.registry_name,
                                  "model_class": c.model_class, **extra})


def write_random_checkpoint(dest: Path, arch: Architecture, *, device: str, seed: int = 0,
                            shard_bytes: int = 2 * 2**30) -> ResolvedCheckpoint:
    """Write every component of ``arch`` with random bf16 weights drawn on ``device`` into
    ``dest`` (big files in shards of at most ``shard_bytes``, so host memory holds one shard),
    plus the family's synthetic tokenizers (their ids fit any vocabulary of the family). The weights
    are scaled like a freshly initialised network: the renders are noise, the memory and time are
    real. The checkpoint names its family, so the gate builds that family's pipeline."""
    import torch
    from safetensors.torch import save_file

    dest.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator(device=device).manual_seed(seed)
    files: dict[str, Path | list[Path]] = {}
    for name, tensors in state_shapes(arch).items():
        shards: list[Path] = []
        for i, group in enumerate(_shards(tensors, shard_bytes)):
            path = dest / f"{name}-{i + 1:05d}.safetensors"
            weights = {k: _random(k, shape, dtype, device, generator) for k, (shape, dtype) in group.items()}
            save_file(weights, str(path))
            shards.append(path)
        files[name] = shards if len(shards) > 1 else shards[0]
    family = architecture_family(arch)
    if not family.tokenizer_writer:
        raise ValueError(f"model family {family.name!r} has no tokenizer_writer: it cannot write a synthetic checkpoint")
    folders = {t.name: dest / t.name for t in family.tokenizers}
    import_dotted(family.tokenizer_writer)(*folders.values())
    files.update(folders)
    return ResolvedCheckpoint(f"synthetic-{arch.name}", files, {}, arch.t5_sequence_length, family=family.name)


def _shards(tensors: dict[str, tuple[tuple[int, ...], Any]],
            limit: int) -> list[dict[str, tuple[tuple[int, ...], Any]]]:
    groups: list[dict[str, tuple[tuple[int, ...], Any]]] = [{}]
    size = 0
    for name, (shape, dtype) in tensors.items():
        nbytes = 2 * _numel(shape)
        if groups[-1] and size + nbytes > limit:
            groups.append({})
            size = 0
        groups[-1][name] = (shape, dtype)
        size += nbytes
    return groups


_UNIT_FILLED = ("weight", "running_var")


def _random(name: str, shape: tuple[int, ...], dtype: Any, device: str, generator: torch.Generator) -> torch.Tensor:
    import torch

    if not dtype.is_floating_point:
        return torch.zeros(shape, dtype=dtype)
    if len(shape) == 1:  # norm scales (and a batch norm's variance: FLUX.2's latent statistics) 1, biases 0
        fill = 1.0 if name.endswith(_UNIT_FILLED) else 0.0
        return torch.full(shape, fill, dtype=torch.bfloat16)
    t = torch.empty(shape, dtype=torch.bfloat16, device=device).normal_(0.0, 0.02, generator=generator)
    return t.cpu()
