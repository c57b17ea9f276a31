"""Qwen-Image model classes at small widths.

- DiT: ``TinyQwenImageDiT`` subclasses DiffSynth's ``QwenImageDiT`` (whose constructor hard-codes
  3072 wide / 24 heads / 3584-wide text) and rebuilds the same attributes from DiffSynth's own
  ``QwenImageTransformerBlock``, ``QwenEmbedRope``, ... at small widths. DiffSynth's
  ``model_fn_qwen_image`` reads only those submodules, so the real forward runs unchanged.
- Text encoder: ``TinyQwenImageTextEncoder`` subclasses ``QwenImageTextEncoder`` (a transformers
  ``Qwen2_5_VLModel`` + ``lm_head``) with a small ``Qwen2_5_VLConfig``; its file is written in the
  Hugging Face layout of the real ``text_encoder/model*.safetensors`` and read through DiffSynth's
  own ``QwenImageTextEncoderStateDictConverter``.
- VAE: DiffSynth's ``QwenImageVAE`` itself (its constructor takes its widths), ``base_dim`` small.

``register_with_diffsynth`` tells DiffSynth how to recognise these files (a hash of tensor names
and shapes) and which layers its VRAM management wraps: without a VRAM map entry for the DiT class
a float8 DiT is silently upcast to bf16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffsynth.models.general_modules import AdaLayerNorm, RMSNorm, TimestepEmbeddings
from diffsynth.models.qwen_image_dit import QwenEmbedRope, QwenImageDiT, QwenImageTransformerBlock
from diffsynth.models.qwen_image_text_encoder import QwenImageTextEncoder

from quant_guard.model.tiny.architecture import keys_hash

LATENT_CHANNELS = 16  # fixed by the pipeline: noise is (1, 16, H/8, W/8)
PATCH_FEATURES = LATENT_CHANNELS * 2 * 2  # 2x2 latent patches (model_fn_qwen_image)


@dataclass(frozen=True)
class TinySizes:
    """Widths of every component. Constraints from the Qwen-Image forward: ``sum(rope_axes) ==
    dit_dim // dit_heads`` (the RoPE covers a head), the DiT's text input width == the text
    encoder's hidden size, ``sum(mrope_section) == text_head_dim // 2``."""

    dit_dim: int = 128
    dit_heads: int = 4
    rope_axes: tuple[int, int, int] = (8, 12, 12)
    blocks: int = 3
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    mrope_section: tuple[int, int, int] = (2, 3, 3)
    vision_dim: int = 32
    vae_base_dim: int = 16
    vae_res_blocks: int = 1

    def __post_init__(self) -> None:
        if sum(self.rope_axes) != self.dit_dim // self.dit_heads:
            raise ValueError(f"sum(rope_axes)={sum(self.rope_axes)} must equal dit_dim // dit_heads")
        if 2 * sum(self.mrope_section) != self.text_dim // self.text_heads:
            raise ValueError("2 * sum(mrope_section) must equal the text encoder's head dim")


SIZES = TinySizes()


class TinyQwenImageDiT(QwenImageDiT):
    """``QwenImageDiT`` with every width a parameter (the parent hard-codes them)."""

    def __init__(self, sizes: TinySizes = SIZES) -> None:
        torch.nn.Module.__init__(self)
        dim, heads = sizes.dit_dim, sizes.dit_heads
        self.pos_embed = QwenEmbedRope(theta=10000, axes_dim=list(sizes.rope_axes), scale_rope=True)
        self.time_text_embed = TimestepEmbeddings(256, dim, diffusers_compatible_format=True, scale=1000,
                                                  align_dtype_to_timestep=False, use_additional_t_cond=False)
        self.txt_norm = RMSNorm(sizes.text_dim, eps=1e-6)
        self.img_in = torch.nn.Linear(PATCH_FEATURES, dim)
        self.txt_in = torch.nn.Linear(sizes.text_dim, dim)
        self.transformer_blocks = torch.nn.ModuleList(
            [QwenImageTransformerBlock(dim=dim, num_attention_heads=heads, attention_head_dim=dim // heads)
             for _ in range(sizes.blocks)])
        self.norm_out = AdaLayerNorm(dim, single=True)
        self.proj_out = torch.nn.Linear(dim, PATCH_FEATURES)


def text_encoder_config(vocab_size: int, sizes: TinySizes = SIZES):  # -> Qwen2_5_VLConfig
    """The real encoder's ``Qwen2_5_VLConfig`` (diffsynth/models/qwen_image_text_encoder.py) at
    small widths, vision tower included (the edit pipelines feed it images; text-to-image does not)."""
    from transformers import Qwen2_5_VLConfig

    text = {
        "hidden_size": sizes.text_dim, "intermediate_size": sizes.text_dim * 2,
        "num_hidden_layers": sizes.text_layers, "num_attention_heads": sizes.text_heads,
        "num_key_value_heads": sizes.text_kv_heads, "hidden_act": "silu", "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "max_position_embeddings": 128000, "attention_dropout": 0.0,
        "rope_scaling": {"mrope_section": list(sizes.mrope_section), "rope_type": "default", "type": "default"},
        "use_sliding_window": False, "sliding_window": None, "vocab_size": vocab_size,
        "bos_token_id": vocab_size - 14, "eos_token_id": vocab_size - 12,  # <|endoftext|>, <|im_end|>
    }
    special = {"image_token_id": vocab_size - 2, "video_token_id": vocab_size - 1,
               "vision_start_token_id": vocab_size - 5, "vision_end_token_id": vocab_size - 4,
               "vision_token_id": vocab_size - 3}
    vision = {"depth": 1, "hidden_size": sizes.vision_dim, "intermediate_size": sizes.vision_dim * 2, "num_heads": 2,
              "out_hidden_size": sizes.text_dim, "patch_size": 14, "spatial_patch_size": 14, "spatial_merge_size": 2,
              "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [0], "in_channels": 3,
              "in_chans": 3, "hidden_act": "silu", "tokens_per_second": 2}
    return Qwen2_5_VLConfig(text_config={"model_type": "qwen2_5_vl_text", **text}, vision_config=vision,
                            tie_word_embeddings=False, **special, **text)


class TinyQwenImageTextEncoder(QwenImageTextEncoder):
    """``QwenImageTextEncoder`` with a small config; its ``forward`` is the parent's."""

    def __init__(self, sizes: TinySizes = SIZES) -> None:
        from transformers import Qwen2_5_VLModel

        from quant_guard.model.tiny_qwen_image.tokenizers import vocab_size

        torch.nn.Module.__init__(self)
        config = text_encoder_config(vocab_size(), sizes)
        self.model = Qwen2_5_VLModel(config)
        self.lm_head = torch.nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.config = config


def vae_kwargs(sizes: TinySizes = SIZES) -> dict:
    """Constructor arguments of DiffSynth's ``QwenImageVAE`` for the tiny VAE: the real layout
    (16 latent channels, x8 down, 3D causal convolutions) with narrow channels."""
    return {"base_dim": sizes.vae_base_dim, "z_dim": LATENT_CHANNELS, "dim_mult": [1, 2, 4, 4],
            "num_res_blocks": sizes.vae_res_blocks, "attn_scales": [], "temperal_downsample": [False, True, True]}


def text_encoder_to_file(state_dict: dict) -> dict:
    """DiffSynth's module names -> the Hugging Face layout of the real text encoder file (the
    inverse of ``QwenImageTextEncoderStateDictConverter``)."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith("model.visual."):
            out[k[len("model."):]] = v
        elif k.startswith("model.language_model."):
            out["model." + k[len("model.language_model."):]] = v
        else:
            out[k] = v
    return out


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


_HERE = __name__  # dotted path DiffSynth imports the classes from
_REAL_TEXT_ENCODER = "diffsynth.models.qwen_image_text_encoder.QwenImageTextEncoder"
_TEXT_CONVERTER = "diffsynth.utils.state_dict_converters.qwen_image_text_encoder.QwenImageTextEncoderStateDictConverter"
DIT_CLASS = f"{_HERE}.TinyQwenImageDiT"
REAL_DIT_CLASS = "diffsynth.models.qwen_image_dit.QwenImageDiT"


def register_with_diffsynth() -> None:
    """Add the tiny components to DiffSynth's model registry and VRAM-management maps.

    Idempotent. The hashes come from the architecture on the meta device (no weights)."""
    from diffsynth.configs import MODEL_CONFIGS, VERSION_CHECKER_MAPS, VRAM_MANAGEMENT_MODULE_MAPS
    from diffsynth.models.qwen_image_vae import QwenImageVAE

    if any(c["model_class"].startswith(_HERE) for c in MODEL_CONFIGS):
        return
    with torch.device("meta"):
        dit, text_encoder, vae = TinyQwenImageDiT(), TinyQwenImageTextEncoder(), QwenImageVAE(**vae_kwargs())
    MODEL_CONFIGS.extend([
        {"model_hash": keys_hash(_shapes(dit)), "model_name": "qwen_image_dit", "model_class": DIT_CLASS},
        {"model_hash": keys_hash(text_encoder_to_file(_shapes(text_encoder))), "model_name": "qwen_image_text_encoder",
         "model_class": f"{_HERE}.TinyQwenImageTextEncoder", "state_dict_converter": _TEXT_CONVERTER},
        {"model_hash": keys_hash(_shapes(vae)), "model_name": "qwen_image_vae",
         "model_class": "diffsynth.models.qwen_image_vae.QwenImageVAE", "extra_kwargs": vae_kwargs()},
    ])
    # DiffSynth keys its VRAM maps by the class path it imports, so the subclasses need entries of
    # their own: the real classes' maps (the text encoder's as DiffSynth's version checker
    # rewrites it for the installed transformers).
    VRAM_MANAGEMENT_MODULE_MAPS[DIT_CLASS] = VRAM_MANAGEMENT_MODULE_MAPS[REAL_DIT_CLASS]
    text_map = VERSION_CHECKER_MAPS[_REAL_TEXT_ENCODER]() if _REAL_TEXT_ENCODER in VERSION_CHECKER_MAPS \
        else VRAM_MANAGEMENT_MODULE_MAPS[_REAL_TEXT_ENCODER]
    VRAM_MANAGEMENT_MODULE_MAPS[f"{_HERE}.TinyQwenImageTextEncoder"] = text_map
