"""Wan2.1 text-to-video model classes at small widths.

- DiT: DiffSynth's ``WanModel`` itself (every width is a constructor argument), built by DiffSynth
  from the registry entry's ``extra_kwargs`` and wrapped with DiffSynth's own VRAM map for
  ``WanModel`` (no subclass): the layout of Wan2.1-T2V-1.3B (3D patches 1x2x2, 16 latent channels,
  no image input) at small widths.
- Text encoder: DiffSynth's ``WanTextEncoder`` (umT5-XXL's encoder) itself at small widths; its
  vocabulary is the tiny tokenizer's (``tokenizers.py``).
- VAE: ``TinyWanVideoVAE`` subclasses ``WanVideoVAE`` (whose constructor fixes the causal 3D VAE's
  base width at 96) with a narrow ``VideoVAE_``; the file has the released ``Wan2.1_VAE`` layout
  (no ``model.`` prefix) and loads through DiffSynth's ``WanVideoVAEStateDictConverter``. Same
  compression as the real one: 8x spatial, 4x temporal (``temperal_downsample``), 16 channels.

``register_with_diffsynth`` tells DiffSynth how to recognise these files (a hash of tensor names
and shapes) and which layers its VRAM management wraps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffsynth.models.wan_video_vae import VideoVAE_, WanVideoVAE

from quant_guard.model.tiny.architecture import keys_hash

LATENT_CHANNELS = 16  # Wan2.1's VAE z_dim
# Wan2.1 VAE latent normalisation (diffsynth/models/wan_video_vae.py, WanVideoVAE.__init__), copied
# because the parent builds the full-width VAE before one could reuse them
_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
         0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
        3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


@dataclass(frozen=True)
class TinySizes:
    """Widths of every component. Constraints from the Wan forward: the DiT's 3D RoPE splits
    ``dit_dim // dit_heads`` into time ``d - 2*(d//3)`` and height/width ``d//3`` each, all even
    (complex pairs); the DiT's ``text_dim`` is the text encoder's width."""

    dit_dim: int = 128
    dit_heads: int = 4  # head width 32: RoPE time 12, height 10, width 10
    dit_ffn: int = 256
    dit_freq: int = 64  # sinusoidal timestep embedding width (256 in every released Wan)
    layers: int = 2
    text_dim: int = 64
    text_ffn: int = 128
    text_heads: int = 4
    text_layers: int = 2
    vae_dim: int = 8  # VideoVAE_ base width (96 in Wan2.1's VAE)
    vae_res_blocks: int = 1  # per level (2 in Wan2.1's VAE)

    def __post_init__(self) -> None:
        head = self.dit_dim // self.dit_heads
        if head % 2 or (head // 3) % 2 or (head - 2 * (head // 3)) % 2:
            raise ValueError(f"head width {head}: every RoPE axis (time, height, width) must be even")


SIZES = TinySizes()


def dit_kwargs(sizes: TinySizes = SIZES) -> dict:
    """Constructor arguments of DiffSynth's ``WanModel`` for the tiny DiT (Wan2.1-T2V's layout)."""
    return {"has_image_input": False, "patch_size": [1, 2, 2], "in_dim": LATENT_CHANNELS, "dim": sizes.dit_dim,
            "ffn_dim": sizes.dit_ffn, "freq_dim": sizes.dit_freq, "text_dim": sizes.text_dim,
            "out_dim": LATENT_CHANNELS, "num_heads": sizes.dit_heads, "num_layers": sizes.layers, "eps": 1e-06}


def text_encoder_kwargs(sizes: TinySizes = SIZES) -> dict:
    """Constructor arguments of DiffSynth's ``WanTextEncoder`` (umT5 encoder) for the tiny one."""
    from quant_guard.model.tiny_wan.tokenizers import vocab_size

    return {"vocab": vocab_size(), "dim": sizes.text_dim, "dim_attn": sizes.text_dim, "dim_ffn": sizes.text_ffn,
            "num_heads": sizes.text_heads, "num_layers": sizes.text_layers, "num_buckets": 32, "shared_pos": False,
            "dropout": 0.0}


class TinyWanVideoVAE(WanVideoVAE):
    """``WanVideoVAE`` around a narrow ``VideoVAE_`` (same 8x spatial / 4x temporal compression)."""

    def __init__(self, z_dim: int = LATENT_CHANNELS, sizes: TinySizes = SIZES) -> None:
        torch.nn.Module.__init__(self)
        self.mean, self.std = torch.tensor(_MEAN), torch.tensor(_STD)
        self.scale = [self.mean, 1.0 / self.std]
        self.model = VideoVAE_(dim=sizes.vae_dim, z_dim=z_dim, num_res_blocks=sizes.vae_res_blocks).eval()
        self.model.requires_grad_(False)
        self.upsampling_factor = 8
        self.z_dim = z_dim


def build_dit(sizes: TinySizes = SIZES) -> torch.nn.Module:
    from diffsynth.models.wan_video_dit import WanModel

    return WanModel(**dit_kwargs(sizes))


def build_text_encoder(sizes: TinySizes = SIZES) -> torch.nn.Module:
    from diffsynth.models.wan_video_text_encoder import WanTextEncoder

    return WanTextEncoder(**text_encoder_kwargs(sizes))


def vae_file_state(vae: WanVideoVAE) -> dict[str, torch.Tensor]:
    """The VAE's tensors as the released ``Wan2.1_VAE`` file stores them: ``VideoVAE_``'s own names
    (DiffSynth's ``WanVideoVAEStateDictConverter`` adds the ``model.`` prefix on load)."""
    return dict(vae.model.state_dict())


def vae_to_file(tensors: dict[str, Any]) -> dict[str, Any]:
    """A ``WanVideoVAE`` state dict (any values) renamed to the released file's layout: without the
    ``model.`` prefix (``ModelClass.to_file`` of synthetic checkpoints)."""
    return {name.removeprefix("model."): value for name, value in tensors.items()}


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in state.items()}


_HERE = __name__  # dotted path DiffSynth imports the classes from
DIT_CLASS = "diffsynth.models.wan_video_dit.WanModel"
TEXT_ENCODER_CLASS = "diffsynth.models.wan_video_text_encoder.WanTextEncoder"
VAE_CLASS = f"{_HERE}.TinyWanVideoVAE"
_REAL_VAE = "diffsynth.models.wan_video_vae.WanVideoVAE"
VAE_CONVERTER = "diffsynth.utils.state_dict_converters.wan_video_vae.WanVideoVAEStateDictConverter"


def registry_entries() -> list[dict]:
    """DiffSynth ``MODEL_CONFIGS`` entries recognising the tiny DiT, text encoder and VAE files."""
    with torch.device("meta"):
        dit, text_encoder, vae = build_dit(), build_text_encoder(), TinyWanVideoVAE()
    return [
        {"model_hash": keys_hash(_shapes(dit.state_dict())), "model_name": "wan_video_dit", "model_class": DIT_CLASS,
         "extra_kwargs": dit_kwargs()},
        {"model_hash": keys_hash(_shapes(text_encoder.state_dict())), "model_name": "wan_video_text_encoder",
         "model_class": TEXT_ENCODER_CLASS, "extra_kwargs": text_encoder_kwargs()},
        {"model_hash": keys_hash(_shapes(vae_file_state(vae))), "model_name": "wan_video_vae",
         "model_class": VAE_CLASS, "state_dict_converter": VAE_CONVERTER},
    ]


def register_with_diffsynth() -> None:
    """Add the tiny DiT, text encoder and VAE to DiffSynth's model registry and VRAM-management
    maps. Idempotent."""
    from diffsynth.configs import MODEL_CONFIGS, VRAM_MANAGEMENT_MODULE_MAPS

    if any(c["model_class"] == VAE_CLASS for c in MODEL_CONFIGS):
        return
    MODEL_CONFIGS.extend(registry_entries())
    # DiT and text encoder are DiffSynth's own classes, mapped by DiffSynth; the VAE subclass needs an entry
    VRAM_MANAGEMENT_MODULE_MAPS[VAE_CLASS] = VRAM_MANAGEMENT_MODULE_MAPS[_REAL_VAE]
