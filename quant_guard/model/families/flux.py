"""FLUX.1 (DiffSynth's ``FluxImagePipeline``): the first model family, and the embedded tiny
checkpoint's. Every FLUX.1 specific of quant_guard is here (and in ``model/tiny/``, the tiny
checkpoint's own classes)."""

from __future__ import annotations

from quant_guard.model.families.base import (
    DIT,
    IMAGE_CALL_ARGUMENTS,
    Anchor,
    Architecture,
    Component,
    DamageTargets,
    EmbeddedTiny,
    LayerNaming,
    ModelClass,
    ModelFamily,
    Tokenizer,
)

_TINY = "quant_guard.model.tiny.architecture"
_MODELS = "diffsynth.models"
_CLIP = f"{_MODELS}.flux_text_encoder_clip.FluxTextEncoderClip"
_T5_TIE = "diffsynth.utils.state_dict_converters.flux_text_encoder_t5.FluxTextEncoderT5StateDictConverter"


def _classes(dit: str, t5: str, vae_encoder: str, vae_decoder: str,
             clip_kwargs: tuple[tuple[str, int], ...] = ()) -> tuple[ModelClass, ...]:
    """One FLUX.1 size: the DiT, both text encoders (CLIP built with ``clip_kwargs``; () = its
    defaults, FLUX.1's CLIP-L) and one VAE file holding both halves, like FLUX.1's ae.safetensors."""
    return (
        ModelClass(DIT, dit, "flux_dit"),
        ModelClass("text_encoder_clip", _CLIP, "flux_text_encoder_clip", kwargs=clip_kwargs),
        ModelClass("text_encoder_t5", t5, "flux_text_encoder_t5", converter=_T5_TIE),
        ModelClass("vae", vae_encoder, "flux_vae_encoder", prefix="encoder.", untied=False,
                   converter=f"{_TINY}.vae_encoder_converter"),
        ModelClass("vae", vae_decoder, "flux_vae_decoder", prefix="decoder.", untied=False,
                   converter=f"{_TINY}.vae_decoder_converter"),
    )


FLUX_DEV = Architecture(
    "flux.1-dev", "FLUX.1-dev",
    _classes(f"{_MODELS}.flux_dit.FluxDiT", f"{_MODELS}.flux_text_encoder_t5.FluxTextEncoderT5",
             f"{_MODELS}.flux_vae.FluxVAEEncoder", f"{_MODELS}.flux_vae.FluxVAEDecoder"),
    published=(
        Anchor("bf16", False, "36.2 GB peak", "diffusers FLUX.1-dev 1024², H100"),
        Anchor("float8_e4m3fn", False, "28.5 GB peak", "diffusers FLUX.1-dev fp8 layerwise casting, H100"),
        Anchor("float8_e4m3fn", True, "15.6 GB peak", "diffusers FLUX.1-dev fp8 layerwise + CPU offload, H100"),
        Anchor("float8_e4m3fn", True, "9.8 GB at load, 186 s / 20 steps", "source article, float8 DiT + CPU offload, "
                                                                            "RTX 3060 12 GB"),
    ))
# The embedded tiny checkpoint's architecture (quant_guard.model.tiny.architecture.SIZES).
TINY = Architecture(
    "tiny", "tiny",
    _classes(f"{_TINY}.TinyFluxDiT", f"{_TINY}.TinyFluxTextEncoderT5", f"{_TINY}.TinyFluxVAEEncoder",
             f"{_TINY}.TinyFluxVAEDecoder",
             clip_kwargs=(("embed_dim", 64), ("vocab_size", 514), ("max_position_embeddings", 77),
                          ("num_encoder_layers", 2), ("encoder_intermediate_size", 128))),
    t5_sequence_length=16)  # quant_guard.config.tiny_settings.T5_SEQUENCE_LENGTH

# DiffSynth FLUX.1 DiT linear layer -> diffusers FluxTransformer2DModel module(s); the same table
# as DiffSynth's diffusers converters (diffsynth/utils/lora/flux.py), fused layers as alternations.
_DIFFUSERS_NAMES = (
    (r"blocks\.(\d+)\.norm1_a\.linear", r"transformer_blocks.\1.norm1.linear"),
    (r"blocks\.(\d+)\.norm1_b\.linear", r"transformer_blocks.\1.norm1_context.linear"),
    (r"blocks\.(\d+)\.attn\.a_to_qkv", r"transformer_blocks.\1.attn.(to_q|to_k|to_v)"),
    (r"blocks\.(\d+)\.attn\.b_to_qkv", r"transformer_blocks.\1.attn.(add_q_proj|add_k_proj|add_v_proj)"),
    (r"blocks\.(\d+)\.attn\.a_to_out", r"transformer_blocks.\1.attn.to_out.0"),
    (r"blocks\.(\d+)\.attn\.b_to_out", r"transformer_blocks.\1.attn.to_add_out"),
    (r"blocks\.(\d+)\.ff_a\.0", r"transformer_blocks.\1.ff.net.0.proj"),
    (r"blocks\.(\d+)\.ff_a\.2", r"transformer_blocks.\1.ff.net.2"),
    (r"blocks\.(\d+)\.ff_b\.0", r"transformer_blocks.\1.ff_context.net.0.proj"),
    (r"blocks\.(\d+)\.ff_b\.2", r"transformer_blocks.\1.ff_context.net.2"),
    (r"single_blocks\.(\d+)\.norm\.linear", r"single_transformer_blocks.\1.norm.linear"),
    (r"single_blocks\.(\d+)\.to_qkv_mlp", r"single_transformer_blocks.\1.(attn.to_q|attn.to_k|attn.to_v|proj_mlp)"),
    (r"single_blocks\.(\d+)\.proj_out", r"single_transformer_blocks.\1.proj_out"),
    (r"time_embedder\.timestep_embedder\.0", "time_text_embed.timestep_embedder.linear_1"),
    (r"time_embedder\.timestep_embedder\.2", "time_text_embed.timestep_embedder.linear_2"),
    (r"guidance_embedder\.timestep_embedder\.0", "time_text_embed.guidance_embedder.linear_1"),
    (r"guidance_embedder\.timestep_embedder\.2", "time_text_embed.guidance_embedder.linear_2"),
    (r"pooled_text_embedder\.0", "time_text_embed.text_embedder.linear_1"),
    (r"pooled_text_embedder\.2", "time_text_embed.text_embedder.linear_2"),
    (r"context_embedder", "context_embedder"),
    (r"x_embedder", "x_embedder"),
    (r"final_norm_out\.linear", "norm_out.linear"),
    (r"final_proj_out", "proj_out"),
)

FAMILY = ModelFamily(
    name="flux",
    label="FLUX.1",
    pipeline_class="diffsynth.pipelines.flux_image.FluxImagePipeline",
    components=(
        Component(DIT, "dit", disk_offload=True, models=(("dit", "flux_dit"),)),
        Component("text_encoder_clip", "text_encoder_1", models=(("text_encoder_1", "flux_text_encoder_clip"),)),
        Component("text_encoder_t5", "text_encoder_2", disk_offload=True,
                  models=(("text_encoder_2", "flux_text_encoder_t5"),)),
        # FLUX.1's ae.safetensors holds both halves
        Component("vae", "vae_decoder", models=(("vae_decoder", "flux_vae_decoder"), ("vae_encoder", "flux_vae_encoder"))),
    ),
    tokenizers=(Tokenizer("tokenizer_clip", "tokenizer_1_config", 2**20),
                Tokenizer("tokenizer_t5", "tokenizer_2_config", 2**21)),
    dit_registry_name="flux_dit",
    tokenizer_writer="quant_guard.model.tiny.tokenizers.write_tokenizers",
    call_arguments=IMAGE_CALL_ARGUMENTS + (("guidance", "embedded_guidance"), ("t5_sequence_length", "t5_sequence_length")),
    scheduler_name="FlowMatchScheduler:FLUX.1",  # what FluxImagePipeline always uses
    layer_naming=LayerNaming(
        block_lists=(("blocks", "joint block"), ("single_blocks", "single block")),
        diffusers_class="FluxTransformer2DModel",
        diffusers_blocks=(("blocks", "transformer_blocks"), ("single_blocks", "single_transformer_blocks")),
        diffusers_names=_DIFFUSERS_NAMES,
        block_roles=((r"norm1_[ab]\.linear|norm\.linear", "modulation"),  # AdaLayerNorm: shift, scale, gate
                     (r"attn\.[ab]_to_qkv", "attn-qkv"), (r"attn\.[ab]_to_out", "attn-out"), (r"ff_[ab]", "ff"),
                     (r"to_qkv_mlp", "qkv-mlp"), (r"proj_out", "out")),  # a single block's fused layers
        outside_groups=((r"final[^.]*norm[^.]*", "final layer", "final", "final/modulation"),
                        (r"final[^.]*", "final layer", "final", "final/proj"),
                        (r"([^.]*embedder[^.]*)", "embedders", "embedders", r"\1")),
    ),
    damage=DamageTargets(
        block="blocks.{block}.", attention_out=("attn.a_to_out.weight", "attn.a_to_out.bias"),
        feed_forward_in="ff_a.0.weight", text_embedders=("context_embedder.", "pooled_text_embedder."),
        final_bias="final_proj_out.bias", patch_positions=4, decoder_out_bias="decoder.conv_out.bias",
        text_encoder=("text_encoder_t5", "encoder.block.{block}.")),
    architectures=(FLUX_DEV, TINY),
    default=True,  # a checkpoint that names no family is FLUX.1
    tiny=EmbeddedTiny("tiny", ensure="quant_guard.model.tiny.build.ensure_tiny_checkpoint",
                      register="quant_guard.model.tiny.architecture.register_with_diffsynth"),
)
