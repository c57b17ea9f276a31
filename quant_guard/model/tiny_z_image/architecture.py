"""Z-Image model classes at small widths.

- DiT: DiffSynth's ``ZImageDiT`` itself: its constructor takes every width, so DiffSynth builds it
  from the registry entry's ``extra_kwargs`` and wraps it with its own VRAM map (no subclass).
- Text encoder: ``TinyZImageTextEncoder`` subclasses ``ZImageTextEncoder`` (a transformers
  ``Qwen3Model``; the parent picks one of three fixed configs by ``model_size``) with a small
  ``Qwen3Config``; ``forward`` is the parent's.
- VAE: Z-Image decodes with the FLUX.1 VAE (DiffSynth's ``FluxVAEEncoder``/``FluxVAEDecoder``,
  fetched as ``flux_vae_encoder``/``flux_vae_decoder``), so the tiny Z-Image uses the tiny FLUX.1
  VAE file as it is (trained when its weights are shipped; registered by
  ``quant_guard.model.tiny.architecture.register_with_diffsynth``).

``register_with_diffsynth`` tells DiffSynth how to recognise these files (a hash of tensor names
and shapes) and which layers its VRAM management wraps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffsynth.models.z_image_text_encoder import ZImageTextEncoder

from quant_guard.model.tiny.architecture import keys_hash

LATENT_CHANNELS = 16  # the FLUX.1 VAE's


@dataclass(frozen=True)
class TinySizes:
    """Widths of every component. Constraints from the Z-Image forward: ``sum(rope_axes) ==
    dit_dim // dit_heads``; the DiT's caption width == the text encoder's hidden size; the
    pipeline takes the text encoder's second-to-last hidden state, so it needs >= 2 layers."""

    dit_dim: int = 128
    dit_heads: int = 4
    rope_axes: tuple[int, int, int] = (8, 12, 12)
    layers: int = 3
    refiner_layers: int = 1
    text_dim: int = 64
    text_layers: int = 3
    text_heads: int = 4
    text_kv_heads: int = 2

    def __post_init__(self) -> None:
        if sum(self.rope_axes) != self.dit_dim // self.dit_heads:
            raise ValueError(f"sum(rope_axes)={sum(self.rope_axes)} must equal dit_dim // dit_heads")
        if self.text_layers < 2:
            raise ValueError("the pipeline reads hidden_states[-2]: the text encoder needs >= 2 layers")


SIZES = TinySizes()


def dit_kwargs(sizes: TinySizes = SIZES) -> dict:
    """Constructor arguments of DiffSynth's ``ZImageDiT`` for the tiny DiT (Z-Image-Turbo's layout:
    2x2 patches, 16 latent channels, no SigLIP branch)."""
    return {"all_patch_size": [2], "all_f_patch_size": [1], "in_channels": LATENT_CHANNELS, "dim": sizes.dit_dim,
            "n_layers": sizes.layers, "n_refiner_layers": sizes.refiner_layers, "n_heads": sizes.dit_heads,
            "n_kv_heads": sizes.dit_heads, "cap_feat_dim": sizes.text_dim, "axes_dims": list(sizes.rope_axes),
            "axes_lens": [1024, 512, 512]}


def build_dit(sizes: TinySizes = SIZES) -> torch.nn.Module:
    """A ``ZImageDiT`` with every parameter initialised (its pad tokens are ``torch.empty``)."""
    from diffsynth.models.z_image_dit import ZImageDiT

    dit = ZImageDiT(**dit_kwargs(sizes))
    for token in (dit.x_pad_token, dit.cap_pad_token):
        torch.nn.init.normal_(token, std=0.02)
    return dit


def text_encoder_config(vocab_size: int, sizes: TinySizes = SIZES):  # -> Qwen3Config
    """The real encoder's ``Qwen3Config`` (diffsynth/models/z_image_text_encoder.py) at small widths."""
    from transformers import Qwen3Config

    return Qwen3Config(
        hidden_size=sizes.text_dim, intermediate_size=sizes.text_dim * 3, num_hidden_layers=sizes.text_layers,
        num_attention_heads=sizes.text_heads, num_key_value_heads=sizes.text_kv_heads,
        head_dim=sizes.text_dim // sizes.text_heads, hidden_act="silu", rms_norm_eps=1e-6, rope_theta=1000000,
        max_position_embeddings=40960, attention_bias=False, attention_dropout=0.0, use_sliding_window=False,
        sliding_window=None, tie_word_embeddings=True, vocab_size=vocab_size,
        bos_token_id=vocab_size - 14, eos_token_id=vocab_size - 12)  # <|endoftext|>, <|im_end|>


class TinyZImageTextEncoder(ZImageTextEncoder):
    """``ZImageTextEncoder`` with a small ``Qwen3Config``."""

    def __init__(self, sizes: TinySizes = SIZES) -> None:
        from transformers import Qwen3Model

        from quant_guard.model.tiny_qwen_image.tokenizers import vocab_size

        torch.nn.Module.__init__(self)
        self.model = Qwen3Model(text_encoder_config(vocab_size(), sizes))


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


_HERE = __name__  # dotted path DiffSynth imports the classes from
DIT_CLASS = "diffsynth.models.z_image_dit.ZImageDiT"
_TEXT_ENCODER_CLASS = f"{_HERE}.TinyZImageTextEncoder"
_REAL_TEXT_ENCODER = "diffsynth.models.z_image_text_encoder.ZImageTextEncoder"


def register_with_diffsynth() -> None:
    """Add the tiny DiT and text encoder to DiffSynth's model registry and VRAM-management maps
    (and the tiny FLUX.1 components, whose VAE this checkpoint uses). Idempotent."""
    from diffsynth.configs import MODEL_CONFIGS, VRAM_MANAGEMENT_MODULE_MAPS

    from quant_guard.model.tiny.architecture import register_with_diffsynth as register_tiny_flux

    register_tiny_flux()
    if any(c["model_class"] == _TEXT_ENCODER_CLASS for c in MODEL_CONFIGS):
        return
    from diffsynth.models.z_image_dit import ZImageDiT

    with torch.device("meta"):
        dit, text_encoder = ZImageDiT(**dit_kwargs()), TinyZImageTextEncoder()
    MODEL_CONFIGS.extend([
        {"model_hash": keys_hash(_shapes(dit)), "model_name": "z_image_dit", "model_class": DIT_CLASS,
         "extra_kwargs": dit_kwargs()},
        {"model_hash": keys_hash(_shapes(text_encoder)), "model_name": "z_image_text_encoder",
         "model_class": _TEXT_ENCODER_CLASS},
    ])
    # the DiT is DiffSynth's own class, mapped by DiffSynth; the subclassed encoder needs an entry
    VRAM_MANAGEMENT_MODULE_MAPS[_TEXT_ENCODER_CLASS] = VRAM_MANAGEMENT_MODULE_MAPS[_REAL_TEXT_ENCODER]
