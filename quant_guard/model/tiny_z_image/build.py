"""Write the embedded tiny Z-Image checkpoint as files, the component layout of the real
``Tongyi-MAI/Z-Image-Turbo`` (DiT, Qwen3 text encoder, VAE as safetensors, plus a tokenizer
folder): DiT and text encoder from seeded random weights in bf16, the VAE the tiny FLUX.1's file
(Z-Image decodes with the FLUX.1 VAE). Deterministic; ``ensure_tiny_z_image`` builds into the cache
once and reuses it (``quant_guard.model.tiny.build.build_once``)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from quant_guard.model.tiny.build import TinyFamilyFiles, build_once, ensure_tiny_checkpoint, write_family_checkpoint
from quant_guard.store.paths import cache_dir

# Bump when the architecture, tokenizer or file layout change: it names the cache folder.
FORMAT_VERSION = 1
MANIFEST = "quant_guard_tiny.json"
SEED = 0


def seeded_state_dicts(seed: int = SEED) -> dict[str, dict]:
    """File name -> state dict of the seeded DiT and text encoder."""
    import torch

    from quant_guard.model.tiny_z_image import architecture as arch

    torch.manual_seed(seed)
    return {"dit": arch.build_dit().state_dict(), "text_encoder": arch.TinyZImageTextEncoder().state_dict()}


def write_tiny_z_image(dest: Path, *, seed: int = SEED) -> TinyFamilyFiles:
    """Write the checkpoint into ``dest`` (created if missing)."""
    from quant_guard.model.tiny_z_image.tokenizers import write_tokenizer

    vae = ensure_tiny_checkpoint().vae
    manifest = {"family": "z-image", "format_version": FORMAT_VERSION, "weights": "seeded", "seed": seed,
                "vae": "tiny FLUX.1 vae.safetensors", "vae_sha256": _sha256(vae)[:12]}
    return write_family_checkpoint(dest, seeded_state_dicts(seed), write_tokenizer, MANIFEST, manifest,
                                   before_manifest=lambda files: shutil.copyfile(vae, files.vae))


def ensure_tiny_z_image(root: Path | None = None) -> TinyFamilyFiles:
    """The cached tiny Z-Image checkpoint, built on first use; a new tiny FLUX.1 VAE gets a new
    cache folder."""
    root = root or cache_dir() / "tiny-z-image"
    vae_tag = _sha256(ensure_tiny_checkpoint().vae)[:12]
    return TinyFamilyFiles(build_once(root / f"v{FORMAT_VERSION}-seeded-vae{vae_tag}", MANIFEST, write_tiny_z_image))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
