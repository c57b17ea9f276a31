"""Write the embedded tiny FLUX.2 checkpoint as files, in the layout of FLUX.2-klein's: DiT, text
encoder and VAE as bf16 safetensors, plus a tokenizer folder.

The weights are seeded random ones (no trained weights ship yet: see FACTS.md, "Training").
Building is deterministic for a seed, and ``ensure_tiny_flux2_checkpoint`` builds into the cache
once and reuses it afterwards, like ``quant_guard.model.tiny.build``."""

from __future__ import annotations

from pathlib import Path

from quant_guard.model.tiny.build import TinyFamilyFiles, build_once, write_family_checkpoint
from quant_guard.store.paths import cache_dir

# Bump when the architecture, tokenizer or file layout change: it names the cache folder.
FORMAT_VERSION = 1
MANIFEST = "quant_guard_tiny_flux2.json"


def seeded_state_dicts(seed: int) -> dict[str, dict]:  # component name -> state dict (float32)
    import torch

    from quant_guard.model.tiny_flux2 import architecture as arch

    torch.manual_seed(seed)
    return {"dit": arch.new_dit().state_dict(), "text_encoder": arch.TinyQwen3TextEncoder().state_dict(),
            "vae": arch.new_vae().state_dict()}


def write_tiny_flux2_checkpoint(dest: Path, *, seed: int = 0) -> TinyFamilyFiles:
    """Write the tiny FLUX.2 checkpoint into ``dest`` (created if missing)."""
    from quant_guard.model.tiny_flux2.tokenizer import write_tokenizer

    manifest = {"format_version": FORMAT_VERSION, "family": "flux2", "variant": "FLUX.2-klein-4B (tiny)",
                "weights": "seeded", "seed": seed}
    return write_family_checkpoint(dest, seeded_state_dicts(seed), write_tokenizer, MANIFEST, manifest)


def format_tag() -> str:
    """Short tag of the architecture (DiffSynth's hashes of the three files' tensor shapes) and
    the tokenizer, so that a change to either gets a new cache folder even without a version bump."""
    import hashlib

    from quant_guard.model.tiny_flux2.architecture import model_hashes
    from quant_guard.model.tiny_flux2.tokenizer import CHAT_TEMPLATE, vocab_and_merges

    text = repr((sorted(model_hashes().items()), vocab_and_merges(), CHAT_TEMPLATE))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def ensure_tiny_flux2_checkpoint(root: Path | None = None, *, seed: int = 0) -> TinyFamilyFiles:
    """The cached tiny FLUX.2 checkpoint, built on first use (``build_once``: concurrent sessions
    never see a half-written one)."""
    root = root or cache_dir() / "tiny_flux2"
    final = root / f"v{FORMAT_VERSION}-{format_tag()}-seed{seed}"
    return TinyFamilyFiles(build_once(final, MANIFEST, lambda folder: write_tiny_flux2_checkpoint(folder, seed=seed)))
