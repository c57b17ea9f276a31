"""FLUX.2 (klein) model classes at small widths, and their registration with DiffSynth.

The tiny checkpoint mirrors FLUX.2-klein-4B, the smallest FLUX.2 DiffSynth ships an example for:
a ``Flux2DiT`` without guidance embedding, a Qwen3 text encoder (DiffSynth's
``ZImageTextEncoder``, which the pipeline fetches as "z_image_text_encoder" and then tokenizes
with a chat template) and the FLUX.2 VAE (32 latent channels, packed 2x2 into 128).

``Flux2DiT`` and ``Flux2VAE`` take every size in their constructors, so DiffSynth's own classes
are registered with small ``extra_kwargs`` (as DiffSynth registers klein itself in
``diffsynth/configs/model_configs.py``) and their VRAM-management entries are DiffSynth's own.
``ZImageTextEncoder`` only knows the 0.6B/4B/8B configurations, so a subclass builds the same
``Qwen3Model`` from a small ``Qwen3Config``; it needs a VRAM-management entry of its own.

Constraints from the FLUX.2 pipeline and forward (``diffsynth/pipelines/flux2_image.py``):
- the noise is (1, 128, H/16, W/16): DiT ``in_channels`` = 128 = 4 x the VAE's 32 latent channels;
- the prompt embedding stacks Qwen3 hidden states 9, 18 and 27, so the text encoder has at least
  27 layers (28 here, so that 27 is an intermediate layer as in the real 36-layer model) and
  ``joint_attention_dim`` = 3 x its width;
- ``sum(axes_dims_rope) == attention_head_dim`` (4 RoPE axes: t, h, w, l).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from diffsynth.models.z_image_text_encoder import ZImageTextEncoder
from transformers import Qwen3Config, Qwen3Model

LATENT_CHANNELS = 32  # Flux2VAE latent channels
PACKED_CHANNELS = LATENT_CHANNELS * 2 * 2  # 2x2 patches: the DiT's in/out channels (the pipeline's noise)
PROMPT_LAYERS = (9, 18, 27)  # Flux2Unit_Qwen3PromptEmbedder.hidden_states_layers
TEXT_SEQUENCE_LENGTH = 512  # fixed by the pipeline (encode_prompt's max_sequence_length default)


@dataclass(frozen=True)
class TinyFlux2Sizes:
    """Widths of every component (see the module docstring for the constraints)."""

    dit_heads: int = 4
    dit_head_dim: int = 32
    rope_axes: tuple[int, int, int, int] = (8, 8, 8, 8)
    double_blocks: int = 2
    single_blocks: int = 2
    text_dim: int = 64  # 3 x 64 = 192 context features: a multiple of NF4's 64-wide blocks on CPU
    text_layers: int = 28
    text_heads: int = 4
    text_kv_heads: int = 2
    text_head_dim: int = 16
    text_ffn: int = 128
    vae_widths: tuple[int, int, int, int] = (16, 32, 48, 64)
    vae_groups: int = 8

    def __post_init__(self) -> None:
        if sum(self.rope_axes) != self.dit_head_dim:
            raise ValueError(f"sum(rope_axes)={sum(self.rope_axes)} must equal dit_head_dim={self.dit_head_dim}")
        if self.text_layers < max(PROMPT_LAYERS):
            raise ValueError(f"text_layers={self.text_layers}: the pipeline reads hidden state {max(PROMPT_LAYERS)}")

    @property
    def dit_dim(self) -> int:
        return self.dit_heads * self.dit_head_dim


SIZES = TinyFlux2Sizes()


def dit_kwargs(sizes: TinyFlux2Sizes = SIZES) -> dict[str, Any]:
    """``Flux2DiT`` constructor arguments (klein: no guidance embedder)."""
    return {
        "patch_size": 1, "in_channels": PACKED_CHANNELS, "num_layers": sizes.double_blocks,
        "num_single_layers": sizes.single_blocks, "attention_head_dim": sizes.dit_head_dim,
        "num_attention_heads": sizes.dit_heads, "joint_attention_dim": len(PROMPT_LAYERS) * sizes.text_dim,
        "axes_dims_rope": sizes.rope_axes, "guidance_embeds": False,
    }


def vae_kwargs(sizes: TinyFlux2Sizes = SIZES) -> dict[str, Any]:
    """``Flux2VAE`` constructor arguments."""
    return {"latent_channels": LATENT_CHANNELS, "block_out_channels": sizes.vae_widths, "layers_per_block": 1,
            "num_groups": sizes.vae_groups}


def text_config(sizes: TinyFlux2Sizes = SIZES, vocab_size: int | None = None) -> Qwen3Config:
    from quant_guard.model.tiny_flux2.tokenizer import VOCAB_SIZE

    return Qwen3Config(
        hidden_size=sizes.text_dim, intermediate_size=sizes.text_ffn, num_hidden_layers=sizes.text_layers,
        num_attention_heads=sizes.text_heads, num_key_value_heads=sizes.text_kv_heads, head_dim=sizes.text_head_dim,
        vocab_size=vocab_size or VOCAB_SIZE, max_position_embeddings=TEXT_SEQUENCE_LENGTH, rms_norm_eps=1e-6,
        rope_theta=1000000, tie_word_embeddings=True, attention_bias=False, attention_dropout=0.0,
        hidden_act="silu", use_cache=False, use_sliding_window=False,
    )


class TinyQwen3TextEncoder(ZImageTextEncoder):
    """``ZImageTextEncoder`` (a ``Qwen3Model`` as ``.model``) with a small ``Qwen3Config``."""

    def __init__(self, sizes: TinyFlux2Sizes = SIZES) -> None:
        torch.nn.Module.__init__(self)
        self.model = Qwen3Model(text_config(sizes))


def new_dit(sizes: TinyFlux2Sizes = SIZES) -> torch.nn.Module:
    from diffsynth.models.flux2_dit import Flux2DiT

    return Flux2DiT(**dit_kwargs(sizes))


def new_vae(sizes: TinyFlux2Sizes = SIZES) -> torch.nn.Module:
    from diffsynth.models.flux2_vae import Flux2VAE

    return Flux2VAE(**vae_kwargs(sizes))


def keys_hash(shapes: dict[str, list[int]]) -> str:
    """DiffSynth's checkpoint identity (``diffsynth.core.loader.file.hash_model_file``) from shapes."""
    from diffsynth.core.loader.file import convert_keys_dict_to_single_str

    return hashlib.md5(convert_keys_dict_to_single_str(shapes).encode("utf-8")).hexdigest()


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


_HERE = __name__
DIT_CLASS = "diffsynth.models.flux2_dit.Flux2DiT"
VAE_CLASS = "diffsynth.models.flux2_vae.Flux2VAE"
TEXT_ENCODER_CLASS = f"{_HERE}.TinyQwen3TextEncoder"
_REAL_TEXT_ENCODER_CLASS = "diffsynth.models.z_image_text_encoder.ZImageTextEncoder"


def model_hashes() -> dict[str, str]:
    """DiffSynth model name -> hash of the tiny component's tensor names and shapes (meta device)."""
    with torch.device("meta"):
        dit, text, vae = new_dit(), TinyQwen3TextEncoder(), new_vae()
    return {"flux2_dit": keys_hash(_shapes(dit)), "z_image_text_encoder": keys_hash(_shapes(text)),
            "flux2_vae": keys_hash(_shapes(vae))}


def register_with_diffsynth() -> None:
    """Add the tiny components to DiffSynth's model registry, and the tiny text encoder's class to
    its VRAM-management maps (the DiT and VAE are DiffSynth's own classes, already mapped).
    Idempotent."""
    from diffsynth.configs import MODEL_CONFIGS, VRAM_MANAGEMENT_MODULE_MAPS

    hashes = model_hashes()
    if any(c["model_hash"] == hashes["flux2_dit"] for c in MODEL_CONFIGS):
        return
    MODEL_CONFIGS.extend([
        {"model_hash": hashes["flux2_dit"], "model_name": "flux2_dit", "model_class": DIT_CLASS,
         "extra_kwargs": dit_kwargs()},
        {"model_hash": hashes["z_image_text_encoder"], "model_name": "z_image_text_encoder",
         "model_class": TEXT_ENCODER_CLASS},
        {"model_hash": hashes["flux2_vae"], "model_name": "flux2_vae", "model_class": VAE_CLASS,
         "extra_kwargs": vae_kwargs()},
    ])
    VRAM_MANAGEMENT_MODULE_MAPS[TEXT_ENCODER_CLASS] = VRAM_MANAGEMENT_MODULE_MAPS[_REAL_TEXT_ENCODER_CLASS]
