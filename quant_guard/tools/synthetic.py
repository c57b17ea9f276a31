"""Checkpoints of random weights at a chosen architecture size, written as the files the gate's
own loader reads: FLUX.1-dev's shapes (DiffSynth's own Flux classes at their real widths) for
``quant-guard doctor --full-size``, or the embedded tiny architecture, so that the same code runs
on a CPU in a test. Nothing is downloaded; the weights are drawn on the target device.

The files hold DiffSynth's own tensor names, which its registry does not list for the real
classes (it knows the released files' names and converts them), so ``register`` adds an entry
per file, the way ``quant_guard.model.tiny.architecture`` registers the tiny classes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant_guard.model.checkpoints import ResolvedCheckpoint

if TYPE_CHECKING:
    import torch

_TINY = "quant_guard.model.tiny.architecture"
_CLIP = "diffsynth.models.flux_text_encoder_clip.FluxTextEncoderClip"
_T5_TIE = "diffsynth.utils.state_dict_converters.flux_text_encoder_t5.FluxTextEncoderT5StateDictConverter"


@dataclass(frozen=True)
class Architecture:
    """The component classes of one Flux size (dotted paths, built without arguments except CLIP)."""

    name: str
    dit: str
    t5: str
    vae_encoder: str
    vae_decoder: str
    clip_kwargs: tuple[tuple[str, int], ...] = ()  # () = FluxTextEncoderClip's defaults, FLUX.1's CLIP-L
    t5_sequence_length: int = 512


FLUX_DEV = Architecture(
    "flux.1-dev", dit="diffsynth.models.flux_dit.FluxDiT",
    t5="diffsynth.models.flux_text_encoder_t5.FluxTextEncoderT5",
    vae_encoder="diffsynth.models.flux_vae.FluxVAEEncoder", vae_decoder="diffsynth.models.flux_vae.FluxVAEDecoder")
# The embedded tiny checkpoint's architecture (quant_guard.model.tiny.architecture.SIZES).
TINY = Architecture(
    "tiny", dit=f"{_TINY}.TinyFluxDiT", t5=f"{_TINY}.TinyFluxTextEncoderT5",
    vae_encoder=f"{_TINY}.TinyFluxVAEEncoder", vae_decoder=f"{_TINY}.TinyFluxVAEDecoder",
    clip_kwargs=(("embed_dim", 64), ("vocab_size", 514), ("max_position_embeddings", 77),
                 ("num_encoder_layers", 2), ("encoder_intermediate_size", 128)),
    t5_sequence_length=16)  # quant_guard.judge.scenes.T5_SEQUENCE_LENGTH
ARCHITECTURES = {a.name: a for a in (FLUX_DEV, TINY)}



def _class(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def state_shapes(arch: Architecture) -> dict[str, dict[str, tuple[tuple[int, ...], Any]]]:
    """File -> tensor name -> (shape, dtype) of each weight file, built on the meta device (no memory)."""
    import torch

    with torch.device("meta"):
        modules = {"dit": _class(arch.dit)(), "text_encoder_clip": _class(_CLIP)(**dict(arch.clip_kwargs)),
                   "text_encoder_t5": _class(arch.t5)()}
        encoder, decoder = _class(arch.vae_encoder)(), _class(arch.vae_decoder)()
    out = {name: _untied(m) for name, m in modules.items()}
    # one VAE file with both halves, like FLUX's ae.safetensors
    out["vae"] = {**{f"encoder.{k}": (tuple(v.shape), v.dtype) for k, v in encoder.state_dict().items()},
                  **{f"decoder.{k}": (tuple(v.shape), v.dtype) for k, v in decoder.state_dict().items()}}
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
    """Teach DiffSynth to recognise files with these tensor names (idempotent)."""
    from diffsynth.configs import MODEL_CONFIGS

    from quant_guard.model.tiny.architecture import keys_hash, register_with_diffsynth

    register_with_diffsynth()  # the tiny classes, and their VRAM-management entries
    shapes = {name: {k: list(shape) for k, (shape, _) in tensors.items()}
              for name, tensors in state_shapes(arch).items()}
    entries = [(keys_hash(shapes["dit"]), "flux_dit", arch.dit, {}),
               (keys_hash(shapes["text_encoder_t5"]), "flux_text_encoder_t5", arch.t5,
                {"state_dict_converter": _T5_TIE})]
    entries.append((keys_hash(shapes["text_encoder_clip"]), "flux_text_encoder_clip", _CLIP,
                    {"extra_kwargs": dict(arch.clip_kwargs)} if arch.clip_kwargs else {}))
    vae = keys_hash(shapes["vae"])
    entries += [(vae, "flux_vae_encoder", arch.vae_encoder, {"state_dict_converter": f"{_TINY}.vae_encoder_converter"}),
                (vae, "flux_vae_decoder", arch.vae_decoder, {"state_dict_converter": f"{_TINY}.vae_decoder_converter"})]
    for model_hash, model_name, cls, extra in entries:
        # an entry that already matches would load the model a second time
        if not any(c["model_hash"] == model_hash and c["model_name"] == model_name for c in MODEL_CONFIGS):
            MODEL_CONFIGS.append({"model_hash": model_hash, "model_name": model_name, "model_class": cls, **extra})


def write_random_checkpoint(dest: Path, arch: Architecture, *, device: str, seed: int = 0,
                            shard_bytes: int = 2 * 2**30) -> ResolvedCheckpoint:
    """Write every component of ``arch`` with random bf16 weights drawn on ``device`` into
    ``dest`` (big files in shards of at most ``shard_bytes``, so host memory holds one shard),
    plus the tiny tokenizers (their ids fit any vocabulary). The weights are scaled like a
    freshly initialised network: the renders are noise, the memory and time are real."""
    import torch
    from safetensors.torch import save_file

    from quant_guard.model.tiny.tokenizers import write_tokenizers

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
    files["tokenizer_clip"], files["tokenizer_t5"] = dest / "tokenizer_clip", dest / "tokenizer_t5"
    write_tokenizers(dest / "tokenizer_clip", dest / "tokenizer_t5")
    return ResolvedCheckpoint(f"synthetic-{arch.name}", files, {}, arch.t5_sequence_length)


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


def _random(name: str, shape: tuple[int, ...], dtype: Any, device: str, generator: torch.Generator) -> torch.Tensor:
    import torch

    if not dtype.is_floating_point:
        return torch.zeros(shape, dtype=dtype)
    if len(shape) == 1:  # norm scales 1, biases 0
        fill = 1.0 if name.endswith("weight") else 0.0
        return torch.full(shape, fill, dtype=torch.bfloat16)
    t = torch.empty(shape, dtype=torch.bfloat16, device=device).normal_(0.0, 0.02, generator=generator)
    return t.cpu()
