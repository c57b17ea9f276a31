"""Write the embedded tiny Qwen-Image checkpoint as files, the component layout of the real
``Qwen/Qwen-Image`` (DiT, Qwen2.5-VL text encoder and VAE as bf16 safetensors, plus a tokenizer
folder), from seeded random weights. Deterministic; ``ensure_tiny_qwen_image`` builds into the
cache once and reuses it (``quant_guard.model.tiny.build.build_once``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from quant_guard.store.paths import cache_dir

# Bump when the architecture, tokenizer or file layout change: it names the cache folder.
FORMAT_VERSION = 1
MANIFEST = "quant_guard_tiny.json"
SEED = 0


@dataclass(frozen=True)
class TinyQwenImageFiles:
    """Paths of one written tiny Qwen-Image checkpoint."""

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
    """File name -> state dict as written (the text encoder in the Hugging Face layout)."""
    import torch
    from diffsynth.models.qwen_image_vae import QwenImageVAE

    from quant_guard.model.tiny_qwen_image import architecture as arch

    torch.manual_seed(seed)
    dit = arch.TinyQwenImageDiT()
    text_encoder = arch.TinyQwenImageTextEncoder()
    vae = QwenImageVAE(**arch.vae_kwargs())
    return {"dit": dit.state_dict(), "text_encoder": arch.text_encoder_to_file(text_encoder.state_dict()),
            "vae": vae.state_dict()}


def write_tiny_qwen_image(dest: Path, *, seed: int = SEED) -> TinyQwenImageFiles:
    """Write the checkpoint into ``dest`` (created if missing)."""
    import torch
    from safetensors.torch import save_file

    from quant_guard.model.tiny_qwen_image.tokenizers import write_tokenizer

    dest.mkdir(parents=True, exist_ok=True)
    files = TinyQwenImageFiles(dest)
    for name, state in seeded_state_dicts(seed).items():
        # bf16 like the released checkpoint; clone() because safetensors refuses shared storage
        tensors = {k: v.detach().to(torch.bfloat16).contiguous().clone() for k, v in state.items()}
        save_file(tensors, str(dest / f"{name}.safetensors"))
    write_tokenizer(files.tokenizer)
    manifest = {"family": "qwen-image", "format_version": FORMAT_VERSION, "weights": "seeded", "seed": seed}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return files


def ensure_tiny_qwen_image(root: Path | None = None) -> TinyQwenImageFiles:
    """The cached tiny Qwen-Image checkpoint, built on first use."""
    from quant_guard.model.tiny.build import build_once

    root = root or cache_dir() / "tiny-qwen-image"
    return TinyQwenImageFiles(build_once(root / f"v{FORMAT_VERSION}-seeded", MANIFEST, write_tiny_qwen_image))
