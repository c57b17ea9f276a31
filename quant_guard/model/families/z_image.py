"""Z-Image (DiffSynth's ``ZImagePipeline``): a single-stream DiT with an image refiner and a text
refiner before its main layers, a Qwen3 text encoder, and FLUX.1's VAE. Every answer here is read
from DiffSynth 2.1.12's sources and examples; ``quant_guard/model/tiny_z_image/FACTS.md`` cites each one."""

from __future__ import annotations

from quant_guard.model.families.base import (
    CFG_CALL_ARGUMENTS,
    DIFFUSERS_NAMES_AS_THEY_ARE,
    DIT,
    Component,
    DamageTargets,
    EmbeddedTiny,
    LayerNaming,
    ModelFamily,
    Tokenizer,
)

FAMILY = ModelFamily(
    name="z-image",
    label="Z-Image",
    pipeline_class="diffsynth.pipelines.z_image.ZImagePipeline",
    components=(
        Component(DIT, "dit", disk_offload=True),
        Component("text_encoder", "text_encoder", disk_offload=True),
        # one FLUX.1 VAE file; text-to-image decodes only (the encoder half is for image-to-image)
        Component("vae", "vae_decoder"),
    ),
    tokenizers=(Tokenizer("tokenizer", "tokenizer_config", 2**24),),
    dit_registry_name="z_image_dit",
    # Turbo is distilled: cfg_scale 1 is one DiT pass per step; no embedded guidance, no T5
    call_arguments=CFG_CALL_ARGUMENTS,
    scheduler_name="FlowMatchScheduler:Z-Image",
    # DiffSynth's Z-Image DiT has diffusers' ZImageTransformer2DModel module names (no converter)
    layer_naming=LayerNaming(
        block_lists=(("layers", "block"), ("noise_refiner", "image refiner"), ("context_refiner", "text refiner")),
        diffusers_class="ZImageTransformer2DModel",
        diffusers_blocks=(("layers", "layers"), ("noise_refiner", "noise_refiner"),
                          ("context_refiner", "context_refiner")),
        diffusers_names=DIFFUSERS_NAMES_AS_THEY_ARE,
        # single stream: one MLP for image and text tokens (the refiners are block lists of their own)
        block_roles=((r"attention", "attn"), (r"feed_forward", "mlp"), (r"adaLN_modulation", "modulation")),
        outside_groups=((r"all_final_layer\.[^.]+\.adaLN_modulation", "final layer", "final", "final/modulation"),
                        (r"all_final_layer", "final layer", "final", "final/proj"),
                        (r"([^.]*embedder)", "embedders", "embedders", r"\1")),
    ),
    damage=DamageTargets(
        block="layers.{block}.", attention_out=("attention.to_out.0.weight",),
        feed_forward_in="feed_forward.w1.weight", text_embedders=("cap_embedder.",),
        # unpatchify reads the output features as (pf, ph, pw, channel)
        final_bias="all_final_layer.2-1.linear.bias", patch_positions=4, channel_last=True,
        decoder_out_bias="decoder.conv_out.bias"),
    tiny=EmbeddedTiny("tiny-z-image", ensure="quant_guard.model.tiny_z_image.build.ensure_tiny_z_image",
                      register="quant_guard.model.tiny_z_image.architecture.register_with_diffsynth"),
)
