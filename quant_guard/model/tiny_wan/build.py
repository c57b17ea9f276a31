"""Write the embedded tiny Wan checkpoint as files, the component layout of the real
``Wan-AI/Wan2.1-T2V-1.3B`` (DiT, umT5 text encoder, VAE as safetensors, plus a tokenizer folder)
from seeded random weights in bf16. Deterministic; ``ensure_tiny_wan`` builds into the cache once
and reuses it (``quant_guard.model.tiny.build.build_once``)."""

from __future__ import annotations

from pathlib import Path

from quant_guard.model.tiny.build import TinyFamilyFiles, build_once, write_family_checkpoint
from quant_guard.store.paths import cache_dir

# Bump when the architecture, tokenizer or file layout change: it names the cache folder.
FORMAT_VERSION = 1
MANIFEST = "quant_guard_tiny.json"
SEED = 0


def seeded_state_dicts(seed: int = SEED) -> dict[str, dict]:
    """File name -> state dict of the seeded DiT, text encoder and VAE (the VAE in the released
    file's layout)."""
    import torch

    from quant_guard.model.tiny_wan import architecture as arch

    torch.manual_seed(seed)
    return {"dit": arch.build_dit().state_dict(), "text_encoder": arch.build_text_encoder().state_dict(),
            "vae": arch.vae_file_state(arch.TinyWanVideoVAE())}


def write_tiny_wan(dest: Path, *, seed: int = SEED) -> TinyFamilyFiles:
    """Write the checkpoint into ``dest`` (created if missing)."""
    from quant_guard.model.tiny_wan.tokenizers import write_tokenizer

    manifest = {"family": "wan", "format_version": FORMAT_VERSION, "weights": "seeded", "seed": seed}
    return write_family_checkpoint(dest, seeded_state_dicts(seed), write_tokenizer, MANIFEST, manifest)


def ensure_tiny_wan(root: Path | None = None) -> TinyFamilyFiles:
    """The cached tiny Wan checkpoint, built on first use."""
    root = root or cache_dir() / "tiny-wan"
    return TinyFamilyFiles(build_once(root / f"v{FORMAT_VERSION}-seeded", MANIFEST, write_tiny_wan))
