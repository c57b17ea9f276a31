"""Write the embedded ``tiny`` checkpoint as files, the same layout a real Flux checkpoint has:
DiT, CLIP and T5 text encoders and VAE as safetensors, plus two tokenizer folders.

The weights are the trained ones shipped inside the package when present
(``quant_guard/model/tiny/weights/``), else seeded random weights. Building is deterministic, and
``ensure_tiny_checkpoint`` builds into the cache once and reuses it afterwards."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from quant_guard.store.paths import cache_dir

if TYPE_CHECKING:
    from collections.abc import Callable

# Bump when the architecture, tokenizers or file layout change: it names the cache folder.
FORMAT_VERSION = 1
SHIPPED_WEIGHTS = Path(__file__).parent / "weights"
MANIFEST = "quant_guard_tiny.json"


@dataclass(frozen=True)
class TinyCheckpointFiles:
    """Paths of one written tiny checkpoint."""

    root: Path

    @property
    def dit(self) -> Path:
        return self.root / "dit.safetensors"

    @property
    def text_encoder_clip(self) -> Path:
        return self.root / "text_encoder_clip.safetensors"

    @property
    def text_encoder_t5(self) -> Path:
        return self.root / "text_encoder_t5.safetensors"

    @property
    def vae(self) -> Path:
        return self.root / "vae.safetensors"

    @property
    def tokenizer_clip(self) -> Path:
        return self.root / "tokenizer_clip"

    def components(self) -> dict[str, Path]:
        """Every component by the name the configuration gives it (``config.COMPONENTS``)."""
        return {"dit": self.dit, "text_encoder_clip": self.text_encoder_clip, "text_encoder_t5": self.text_encoder_t5,
                "vae": self.vae, "tokenizer_clip": self.tokenizer_clip, "tokenizer_t5": self.tokenizer_t5}

    @property
    def tokenizer_t5(self) -> Path:
        return self.root / "tokenizer_t5"


def _seeded_state_dicts(seed: int) -> dict[str, dict]:  # name -> state dict
    import torch
    from diffsynth.models.flux_text_encoder_clip import FluxTextEncoderClip

    from quant_guard.model.tiny import architecture as arch

    torch.manual_seed(seed)
    encoder, decoder = arch.TinyFluxVAEEncoder(), arch.TinyFluxVAEDecoder()
    vae = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    vae.update({f"decoder.{k}": v for k, v in decoder.state_dict().items()})
    return {
        "dit": arch.TinyFluxDiT().state_dict(),
        "text_encoder_clip": FluxTextEncoderClip(**arch.clip_kwargs()).state_dict(),
        "text_encoder_t5": arch.TinyFluxTextEncoderT5().state_dict(),
        "vae": vae,
    }


def write_tiny_checkpoint(dest: Path, *, seed: int = 0, use_shipped: bool = True) -> TinyCheckpointFiles:
    """Write the tiny checkpoint into ``dest`` (created; must not exist or be empty)."""
    import torch
    from safetensors.torch import save_file

    from quant_guard.model.tiny.tokenizers import write_tokenizers

    dest.mkdir(parents=True, exist_ok=True)
    files = TinyCheckpointFiles(dest)
    shipped = use_shipped and (SHIPPED_WEIGHTS / "dit.safetensors").is_file()
    if shipped:
        for name in ("dit", "text_encoder_clip", "text_encoder_t5", "vae"):
            shutil.copyfile(SHIPPED_WEIGHTS / f"{name}.safetensors", dest / f"{name}.safetensors")
    else:
        for name, state in _seeded_state_dicts(seed).items():
            # bf16 like a released Flux checkpoint; clone() because safetensors refuses shared storage
            tensors = {k: v.detach().to(torch.bfloat16).contiguous().clone() for k, v in state.items()}
            save_file(tensors, str(dest / f"{name}.safetensors"))
    write_tokenizers(files.tokenizer_clip, files.tokenizer_t5)
    manifest = {"format_version": FORMAT_VERSION, "weights": "shipped" if shipped else "seeded",
                "seed": None if shipped else seed}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return files


def ensure_tiny_checkpoint(root: Path | None = None) -> TinyCheckpointFiles:
    """The cached tiny checkpoint, built on first use. Built in a temporary folder and renamed
    into place, so concurrent sessions (xdist workers) never see a half-written checkpoint."""
    root = root or cache_dir() / "tiny"
    return TinyCheckpointFiles(build_once(root / f"v{FORMAT_VERSION}-{_weights_tag()}", MANIFEST, write_tiny_checkpoint))


def build_once(final: Path, manifest: str, write: Callable[[Path], object]) -> Path:
    """``final``, written by ``write(folder)`` unless it already holds ``manifest`` (written last).
    Built in a temporary sibling folder and renamed into place, so concurrent sessions never see a
    half-written checkpoint. Every embedded tiny checkpoint is cached this way."""
    if (final / manifest).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=final.parent))
    try:
        write(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process won the race; its copy is identical
            if not (final / manifest).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


@dataclass(frozen=True)
class TinyFamilyFiles:
    """Paths of a written tiny checkpoint of another family (Qwen-Image, Z-Image, FLUX.2): one DiT,
    one text encoder and one VAE as safetensors, plus a tokenizer folder."""

    root: Path

    @property
    def dit(self) -> Path:
        return self.root / "dit.safetensors"

    @property
    def text_encoder(self) -> Path:
        return self.root / "text_encoder.safetensors"

    @property
    def vae(self) -> Path:
        return self.root / "vae.safetensors"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    def components(self) -> dict[str, Path]:
        return {"dit": self.dit, "text_encoder": self.text_encoder, "vae": self.vae, "tokenizer": self.tokenizer}


def write_family_checkpoint(dest: Path, states: dict[str, dict], write_tokenizer: Callable[[Path], object],
                            manifest_name: str, manifest: dict[str, object],
                            before_manifest: Callable[[TinyFamilyFiles], object] | None = None) -> TinyFamilyFiles:
    """Write a tiny family checkpoint into ``dest`` (created if missing): each state dict as
    ``<name>.safetensors`` in bf16 like a released checkpoint (integer buffers keep their dtype),
    the tokenizer, anything ``before_manifest`` adds, then the manifest (written last: its
    presence means a whole checkpoint, ``build_once``)."""
    import torch
    from safetensors.torch import save_file

    dest.mkdir(parents=True, exist_ok=True)
    files = TinyFamilyFiles(dest)
    for name, state in states.items():
        # clone() because safetensors refuses shared storage (tied embeddings)
        tensors = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).detach().contiguous().clone()
                   for k, v in state.items()}
        save_file(tensors, str(dest / f"{name}.safetensors"))
    write_tokenizer(files.tokenizer)
    if before_manifest is not None:
        before_manifest(files)
    (dest / manifest_name).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return files


def _weights_tag() -> str:
    """Short content tag of the shipped weights ("seeded" without them), so new weights get a
    new cache folder."""
    import hashlib

    marker = SHIPPED_WEIGHTS / "dit.safetensors"
    if not marker.is_file():
        return "seeded"
    return hashlib.sha256(marker.read_bytes()).hexdigest()[:12]
