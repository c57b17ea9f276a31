"""Write the embedded tiny Z-Image checkpoint as files, the component layout of the real
``Tongyi-MAI/Z-Image-Turbo`` (DiT, Qwen3 text encoder, VAE as safetensors, plus a tokenizer
folder): DiT and text encoder from seeded random weights in bf16, the VAE the tiny FLUX.1's file
(Z-Image decodes with the FLUX.1 VAE). Deterministic; ``ensure_tiny_z_image`` builds into the cache
once and reuses it (``quant_guard.model.tiny.build.build_once``)."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from quant_guard.store.paths import cache_dir

# Bump when the architecture, tokenizer or file layout change: it names the cache folder.
FORMAT_VERSION = 1
MANIFEST = "quant_guard_tiny.json"
SEED = 0


@dataclass(frozen=True)
class TinyZImageFiles:
    """Paths of one written tiny Z-Image checkpoint."""

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


def seeded_state_dicts(seed: int = SEED) -> dict[str, dict]:
    """File name -> state dict of the seeded DiT and text encoder."""
    import torch

    from quant_guard.model.tiny_z_image import architecture as arch

    torch.manual_seed(seed)
    return {"dit": arch.build_dit().state_dict(), "text_encoder": arch.TinyZImageTextEncoder().state_dict()}


def write_tiny_z_image(dest: Path, *, seed: int = SEED) -> TinyZImageFiles:
    """Write the checkpoint into ``dest`` (created if missing)."""
    import torch
    from safetensors.torch import save_file

    from quant_guard.model.tiny.build import ensure_tiny_checkpoint
    from quant_guard.model.tiny_z_image.tokenizers import write_tokenizer

    dest.mkdir(parents=True, exist_ok=True)
    files = TinyZImageFiles(dest)
    for name, state in seeded_state_dicts(seed).items():
        # bf16 like the released checkpoint; clone() because safetensors refuses shared storage
        tensors = {k: v.detach().to(torch.bfloat16).contiguous().clone() for k, v in state.items()}
        save_file(tensors, str(dest / f"{name}.safetensors"))
    shutil.copyfile(ensure_tiny_checkpoint().vae, files.vae)
    write_tokenizer(files.tokenizer)
    manifest = {"family": "z-image", "format_version": FORMAT_VERSION, "weights": "seeded", "seed": seed,
                "vae": "tiny FLUX.1 vae.safetensors", "vae_sha256": _sha256(files.vae)[:12]}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return files


def ensure_tiny_z_image(root: Path | None = None) -> TinyZImageFiles:
    """The cached tiny Z-Image checkpoint, built on first use; a new tiny FLUX.1 VAE gets a new
    cache folder."""
    from quant_guard.model.tiny.build import build_once, ensure_tiny_checkpoint

    root = root or cache_dir() / "tiny-z-image"
    vae_tag = _sha256(ensure_tiny_checkpoint().vae)[:12]
    return TinyZImageFiles(build_once(root / f"v{FORMAT_VERSION}-seeded-vae{vae_tag}", MANIFEST, write_tiny_z_image))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
