"""Flux-architecture model classes at small widths.

Each class subclasses DiffSynth's own Flux class and rebuilds the same attributes at small
sizes. DiffSynth's Flux forward (``model_fn_flux_image`` for the DiT, the classes' own
``forward`` for the rest) reads only those submodules, so the real code runs unchanged.
``register_with_diffsynth`` tells DiffSynth how to recognise these checkpoints (it identifies
a file by a hash of its tensor names and shapes) and which layers its VRAM management wraps
(without that entry a float8 DiT is silently upcast to bf16).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from diffsynth.models.flux_dit import (
    AdaLayerNormContinuous,
    FluxDiT,
    FluxJointTransformerBlock,
    FluxSingleTransformerBlock,
    RoPEEmbedding,
)
from diffsynth.models.flux_text_encoder_t5 import FluxTextEncoderT5
from diffsynth.models.flux_vae import (
    DownSampler,
    FluxVAEDecoder,
    FluxVAEEncoder,
    ResnetBlock,
    UpSampler,
    VAEAttentionBlock,
)
from diffsynth.models.general_modules import TimestepEmbeddings
from transformers import T5Config, T5EncoderModel

LATENT_CHANNELS = 16  # fixed by the Flux pipeline: noise is (1, 16, H/8, W/8)
PATCH_FEATURES = LATENT_CHANNELS * 2 * 2  # 2x2 latent patches


@dataclass(frozen=True)
class TinySizes:
    """Widths of every component. The constraints come from the Flux forward:
    ``sum(rope_axes) == dit_dim // dit_heads``; pooled width == CLIP width; context width ==
    T5 width."""

    dit_dim: int = 128
    dit_heads: int = 4
    rope_axes: tuple[int, int, int] = (8, 12, 12)
    joint_blocks: int = 2
    single_blocks: int = 2
    clip_dim: int = 64
    clip_layers: int = 2  # >= 2 because the pipeline uses clip_skip=2
    clip_vocab: int = 514
    t5_dim: int = 64
    t5_layers: int = 2
    t5_heads: int = 4
    t5_vocab: int = 256
    vae_widths: tuple[int, int, int, int] = (64, 48, 32, 16)
    vae_groups: int = 8

    def __post_init__(self) -> None:
        if sum(self.rope_axes) != self.dit_dim // self.dit_heads:
            raise ValueError(f"sum(rope_axes)={sum(self.rope_axes)} must equal dit_dim // dit_heads")


SIZES = TinySizes()


class TinyFluxDiT(FluxDiT):
    """``FluxDiT`` with every width a parameter (the parent hard-codes 3072 / 24 heads / 38 single blocks)."""

    def __init__(self, sizes: TinySizes = SIZES) -> None:
        torch.nn.Module.__init__(self)
        dim = sizes.dit_dim
        self.pos_embedder = RoPEEmbedding(dim, 10000, list(sizes.rope_axes))
        self.time_embedder = TimestepEmbeddings(256, dim)
        self.guidance_embedder = TimestepEmbeddings(256, dim)
        self.pooled_text_embedder = torch.nn.Sequential(
            torch.nn.Linear(sizes.clip_dim, dim), torch.nn.SiLU(), torch.nn.Linear(dim, dim)
        )
        self.context_embedder = torch.nn.Linear(sizes.t5_dim, dim)
        self.x_embedder = torch.nn.Linear(PATCH_FEATURES, dim)
        self.blocks = torch.nn.ModuleList(
            [FluxJointTransformerBlock(dim, sizes.dit_heads) for _ in range(sizes.joint_blocks)]
        )
        self.single_blocks = torch.nn.ModuleList(
            [FluxSingleTransformerBlock(dim, sizes.dit_heads) for _ in range(sizes.single_blocks)]
        )
        self.final_norm_out = AdaLayerNormContinuous(dim)
        self.final_proj_out = torch.nn.Linear(dim, PATCH_FEATURES)
        self.input_dim = PATCH_FEATURES


class TinyFluxTextEncoderT5(FluxTextEncoderT5):
    """``FluxTextEncoderT5`` (a transformers ``T5EncoderModel``) with a small ``T5Config``."""

    def __init__(self, sizes: TinySizes = SIZES) -> None:
        config = T5Config(
            d_model=sizes.t5_dim,
            d_kv=sizes.t5_dim // sizes.t5_heads,
            d_ff=sizes.t5_dim * 2,
            num_layers=sizes.t5_layers,
            num_decoder_layers=sizes.t5_layers,
            num_heads=sizes.t5_heads,
            vocab_size=sizes.t5_vocab,
            feed_forward_proj="gated-gelu",
            dense_act_fn="gelu_new",
            is_gated_act=True,
            dropout_rate=0.0,
            layer_norm_epsilon=1e-6,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
            tie_word_embeddings=False,
            is_encoder_decoder=True,
            use_cache=False,
        )
        T5EncoderModel.__init__(self, config)


class TinyFluxVAEDecoder(FluxVAEDecoder):
    """Flux VAE decoder (16 latent channels in, three 2x upsamplers) at small widths."""

    def __init__(self, sizes: TinySizes = SIZES) -> None:
        torch.nn.Module.__init__(self)
        self.scaling_factor = 0.3611
        self.shift_factor = 0.1159
        w0, w1, w2, w3 = sizes.vae_widths
        g = sizes.vae_groups
        self.conv_in = torch.nn.Conv2d(LATENT_CHANNELS, w0, kernel_size=3, padding=1)
        self.blocks = torch.nn.ModuleList([
            ResnetBlock(w0, w0, groups=g, eps=1e-6),
            VAEAttentionBlock(1, w0, w0, 1, norm_num_groups=g, eps=1e-6),
            ResnetBlock(w0, w0, groups=g, eps=1e-6),
            ResnetBlock(w0, w0, groups=g, eps=1e-6),
            UpSampler(w0),
            ResnetBlock(w0, w1, groups=g, eps=1e-6),
            UpSampler(w1),
            ResnetBlock(w1, w2, groups=g, eps=1e-6),
            UpSampler(w2),
            ResnetBlock(w2, w3, groups=g, eps=1e-6),
        ])
        self.conv_norm_out = torch.nn.GroupNorm(num_channels=w3, num_groups=g, eps=1e-6)
        self.conv_act = torch.nn.SiLU()
        self.conv_out = torch.nn.Conv2d(w3, 3, kernel_size=3, padding=1)


class TinyFluxVAEEncoder(FluxVAEEncoder):
    """Flux VAE encoder (three stride-2 downsamplers, 2 x 16 channels out) at small widths."""

    def __init__(self, sizes: TinySizes = SIZES) -> None:
        torch.nn.Module.__init__(self)
        self.scaling_factor = 0.3611
        self.shift_factor = 0.1159
        w0, w1, w2, w3 = sizes.vae_widths
        g = sizes.vae_groups
        self.conv_in = torch.nn.Conv2d(3, w3, kernel_size=3, padding=1)
        self.blocks = torch.nn.ModuleList([
            ResnetBlock(w3, w3, groups=g, eps=1e-6),
            DownSampler(w3, padding=0, extra_padding=True),
            ResnetBlock(w3, w2, groups=g, eps=1e-6),
            DownSampler(w2, padding=0, extra_padding=True),
            ResnetBlock(w2, w1, groups=g, eps=1e-6),
            DownSampler(w1, padding=0, extra_padding=True),
            ResnetBlock(w1, w0, groups=g, eps=1e-6),
            VAEAttentionBlock(1, w0, w0, 1, norm_num_groups=g, eps=1e-6),
            ResnetBlock(w0, w0, groups=g, eps=1e-6),
        ])
        self.conv_norm_out = torch.nn.GroupNorm(num_channels=w0, num_groups=g, eps=1e-6)
        self.conv_act = torch.nn.SiLU()
        self.conv_out = torch.nn.Conv2d(w0, 2 * LATENT_CHANNELS, kernel_size=3, padding=1)


def clip_kwargs(sizes: TinySizes = SIZES) -> dict[str, int]:
    """Constructor arguments of DiffSynth's ``FluxTextEncoderClip`` for the tiny CLIP (its
    constructor takes sizes; 77 positions are fixed by the pipeline's tokenizer call)."""
    return {
        "embed_dim": sizes.clip_dim,
        "vocab_size": sizes.clip_vocab,
        "max_position_embeddings": 77,
        "num_encoder_layers": sizes.clip_layers,
        "encoder_intermediate_size": sizes.clip_dim * 2,
    }


# The VAE is one file (like FLUX's ae.safetensors) holding "encoder.*" and "decoder.*" tensors;
# DiffSynth loads both models from it, each through its converter.
def vae_encoder_converter(state_dict) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    return {k[len("encoder."):]: state_dict[k] for k in state_dict if k.startswith("encoder.")}


def vae_decoder_converter(state_dict) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    return {k[len("decoder."):]: state_dict[k] for k in state_dict if k.startswith("decoder.")}


def keys_hash(shapes: dict[str, list[int]]) -> str:
    """DiffSynth's checkpoint identity: md5 over sorted "name:shape" and "name" entries
    (``diffsynth.core.loader.file.hash_model_file``), computed from shapes without a file."""
    from diffsynth.core.loader.file import convert_keys_dict_to_single_str

    return hashlib.md5(convert_keys_dict_to_single_str(shapes).encode("utf-8")).hexdigest()


def _shapes(module: torch.nn.Module, prefix: str = "") -> dict[str, list[int]]:
    return {prefix + k: list(v.shape) for k, v in module.state_dict().items()}


_HERE = __name__  # dotted path DiffSynth imports the classes from


def register_with_diffsynth() -> None:
    """Add the tiny components to DiffSynth's model registry and VRAM-management maps.

    Idempotent. The hashes are computed from the architecture (on the meta device, no weights),
    so a file of other shapes is still "a model DiffSynth does not recognise"."""
    from diffsynth.configs import MODEL_CONFIGS, VRAM_MANAGEMENT_MODULE_MAPS
    from diffsynth.configs.vram_management_module_maps import flux_general_vram_config
    from diffsynth.models.flux_text_encoder_clip import FluxTextEncoderClip

    if any(c["model_class"].startswith(_HERE) for c in MODEL_CONFIGS):
        return
    with torch.device("meta"):
        dit, clip, t5 = TinyFluxDiT(), FluxTextEncoderClip(**clip_kwargs()), TinyFluxTextEncoderT5()
        encoder, decoder = TinyFluxVAEEncoder(), TinyFluxVAEDecoder()
    vae_hash = keys_hash({**_shapes(encoder, "encoder."), **_shapes(decoder, "decoder.")})
    MODEL_CONFIGS.extend([
        {"model_hash": keys_hash(_shapes(dit)), "model_name": "flux_dit",
         "model_class": f"{_HERE}.TinyFluxDiT"},
        {"model_hash": keys_hash(_shapes(clip)), "model_name": "flux_text_encoder_clip",
         "model_class": "diffsynth.models.flux_text_encoder_clip.FluxTextEncoderClip",
         "extra_kwargs": clip_kwargs()},
        {"model_hash": keys_hash(_shapes(t5)), "model_name": "flux_text_encoder_t5",
         "model_class": f"{_HERE}.TinyFluxTextEncoderT5"},
        {"model_hash": vae_hash, "model_name": "flux_vae_encoder",
         "model_class": f"{_HERE}.TinyFluxVAEEncoder",
         "state_dict_converter": f"{_HERE}.vae_encoder_converter"},
        {"model_hash": vae_hash, "model_name": "flux_vae_decoder",
         "model_class": f"{_HERE}.TinyFluxVAEDecoder",
         "state_dict_converter": f"{_HERE}.vae_decoder_converter"},
    ])
    VRAM_MANAGEMENT_MODULE_MAPS[f"{_HERE}.TinyFluxDiT"] = VRAM_MANAGEMENT_MODULE_MAPS["diffsynth.models.flux_dit.FluxDiT"]
    VRAM_MANAGEMENT_MODULE_MAPS[f"{_HERE}.TinyFluxTextEncoderT5"] = VRAM_MANAGEMENT_MODULE_MAPS[
        "diffsynth.models.flux_text_encoder_t5.FluxTextEncoderT5"]
    VRAM_MANAGEMENT_MODULE_MAPS[f"{_HERE}.TinyFluxVAEEncoder"] = flux_general_vram_config
    VRAM_MANAGEMENT_MODULE_MAPS[f"{_HERE}.TinyFluxVAEDecoder"] = flux_general_vram_config
