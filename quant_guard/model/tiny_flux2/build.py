"""Write the embedded tiny FLUX.2 checkpoint as files, in the layout of FLUX.2-klein's: DiT, text
encoder and VAE as bf16 safetensors, plus a tokenizer folder.

The weights are seeded random ones (no trained weights ship yet: see FACTS.md, "Training").
Building is deterministic for a seed, and ``ensure_tiny_flux2_checkpoint`` builds into the cache
once and reuses it afterwards, like ``quant_guard.model.tiny.build``."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from quant_guard.store.paths import cache_dir

# Bump when the architecture, tokenizer or file layout change: it names the cache folder.
FORMAT_VERSION = 1
MANIFEST = "quant_guard_tiny_flux2.json"
COMPONENTS = ("dit", "text_encoder", "vae")


@dataclass(frozen=True)
class TinyFlux2Files:
    """Paths of one written tiny FLUX.2 checkpoint."""

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
        """Every component by name (the seam's component names for this family)."""
        return {"dit": self.dit, "text_encoder": self.text_encoder, "vae": self.vae, "tokenizer": self.tokenizer}


def seeded_state_dicts(seed: int) -> dict[str, dict]:  # component name -> state dict (float32)
    import torch

    from quant_guard.model.tiny_flux2 import architecture as arch

    torch.manual_seed(seed)
    return {"dit": arch.new_dit().state_dict(), "text_encoder": arch.TinyQwen3TextEncoder().state_dict(),
            "vae": arch.new_vae().state_dict()}


def write_tiny_flux2_checkpoint(dest: Path, *, seed: int = 0) -> TinyFlux2Files:
    """Write the tiny FLUX.2 checkpoint into ``dest`` (created; must not exist or be empty)."""
    import torch
    from safetensors.torch import save_file

    from quant_guard.model.tiny_flux2.tokenizer import write_tokenizer

    dest.mkdir(parents=True, exist_ok=True)
    files = TinyFlux2Files(dest)
    for name, state in seeded_state_dicts(seed).items():
        # bf16 like a released checkpoint (integer buffers such as the VAE's num_batches_tracked
        # keep their dtype); clone() because safetensors refuses shared storage (tied embeddings)
        tensors = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).detach().contiguous().clone()
                   for k, v in state.items()}
        save_file(tensors, str(dest / f"{name}.safetensors"))
    write_tokenizer(files.tokenizer)
    manifest = {"format_version": FORMAT_VERSION, "family": "flux2", "variant": "FLUX.2-klein-4B (tiny)",
                "weights": "seeded", "seed": seed}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return files


def format_tag() -> str:
    """Short tag of the architecture (DiffSynth's hashes of the three files' tensor shapes) and
    the tokenizer, so that a change to either gets a new cache folder even without a version bump."""
    import hashlib

    from quant_guard.model.tiny_flux2.architecture import model_hashes
    from quant_guard.model.tiny_flux2.tokenizer import CHAT_TEMPLATE, vocab_and_merges

    text = repr((sorted(model_hashes().items()), vocab_and_merges(), CHAT_TEMPLATE))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def ensure_tiny_flux2_checkpoint(root: Path | None = None, *, seed: int = 0) -> TinyFlux2Files:
    """The cached tiny FLUX.2 checkpoint, built on first use in a temporary folder and renamed into
    place, so concurrent sessions (xdist workers) never see a half-written checkpoint."""
    root = root or cache_dir() / "tiny_flux2"
    final = root / f"v{FORMAT_VERSION}-{format_tag()}-seed{seed}"
    if (final / MANIFEST).is_file():
        return TinyFlux2Files(final)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        write_tiny_flux2_checkpoint(tmp, seed=seed)
        try:
            os.rename(tmp, final)
        except OSError:  # another process won the race; its copy is identical
            if not (final / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return TinyFlux2Files(final)
