"""Write the embedded tiny Qwen-Image checkpoint as files, the component layout of the real
``Qwen/Qwen-Image`` (DiT, Qwen2.5-VL text encoder and VAE as bf16 safetensors, plus a tokenizer
folder), from seeded random weights. Deterministic; ``ensure_tiny_qwen_image`` builds into the
cache once and reuses it (``quant_guard.model.tiny.build.build_once``)."""

from __future__ import annotations

from pathlib import Path

from quant_guard.model.tiny.build import TinyFamilyFiles, build_once, write_family_checkpoint
from quant_guard.store.paths import cache_dir

# Bump when the architecture, tokenizer or file layout change: it names the cache folder.
FORMAT_VERSION = 1
MANIFEST = "quant_guard_tiny.json"
SEED = 0


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


def write_tiny_qwen_image(dest: Path, *, seed: int = SEED) -> TinyFamilyFiles:
    """Write the checkpoint into ``dest`` (created if missing)."""
    from quant_guard.model.tiny_qwen_image.tokenizers import write_tokenizer

    manifest = {"family": "qwen-image", "format_version": FORMAT_VERSION, "weights": "seeded", "seed": seed}
    return write_family_checkpoint(dest, seeded_state_dicts(seed), write_tokenizer, MANIFEST, manifest)


def ensure_tiny_qwen_image(root: Path | None = None) -> TinyFamilyFiles:
    """The cached tiny Qwen-Image checkpoint, built on first use."""
    root = root or cache_dir() / "tiny-qwen-image"
    return TinyFamilyFiles(build_once(root / f"v{FORMAT_VERSION}-seeded", MANIFEST, write_tiny_qwen_image))
