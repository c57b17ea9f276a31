"""Z-Image (DiffSynth's ``ZImagePipeline``): a single-stream DiT with an image refiner and a text
refiner before its main layers, a Qwen3 text encoder, and FLUX.1's VAE. Every answer here is read
from DiffSynth 2.1.12's sources and examples; ``quant_guard/model/tiny_z_image/FACTS.md`` cites each one."""

from __future__ import annotations

from quant_guard.model.families.base import (
    CFG_CALL_ARGUMENTS,
    DIFFUSERS_NAMES_AS_THEY_ARE,
    DIT,
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

_TINY = "quant_guard.model.tiny_z_image.architecture"
_TINY_FLUX = "quant_guard.model.tiny.architecture"  # its VAE converters: one file, encoder. and decoder.
_MODELS = "diffsynth.models"
_FLUX_VAE = (("use_conv_attention", False),)  # as DiffSynth registers Z-Image's VAE (z_image_series)


def _classes(dit: str, text_encoder: str, vae_encoder: str, vae_decoder: str, *, dit_kwargs: str | None = None,
             vae_kwargs: tuple[tuple[str, bool], ...] = ()) -> tuple[ModelClass, ...]:
    """One Z-Image size: the DiT, the Qwen3 text encoder and one FLUX.1 VAE file holding both halves."""
    return (
        ModelClass(DIT, dit, "z_image_dit", kwargs_factory=dit_kwargs),
        ModelClass("text_encoder", text_encoder, "z_image_text_encoder"),
        ModelClass("vae", vae_encoder, "flux_vae_encoder", kwargs=vae_kwargs, prefix="encoder.", untied=False,
                   converter=f"{_TINY_FLUX}.vae_encoder_converter"),
        ModelClass("vae", vae_decoder, "flux_vae_decoder", kwargs=vae_kwargs, prefix="decoder.", untied=False,
                   converter=f"{_TINY_FLUX}.vae_decoder_converter"),
    )


# Tongyi-MAI/Z-Image-Turbo at DiffSynth's default constructors (tiny_z_image/FACTS.md, "Full-size shapes")
Z_IMAGE = Architecture(
    "z-image", "Z-Image",
    _classes(f"{_MODELS}.z_image_dit.ZImageDiT", f"{_MODELS}.z_image_text_encoder.ZImageTextEncoder",
             f"{_MODELS}.flux_vae.FluxVAEEncoder", f"{_MODELS}.flux_vae.FluxVAEDecoder", vae_kwargs=_FLUX_VAE),
    published=(
        Anchor("bf16", True, "minimum 8 GB VRAM (DiffSynth's claim)",
               "DiffSynth docs/en/Model_Details/Z-Image.md: every component bf16 offloaded to the CPU, "
               "vram_limit = GPU total - 0.5 GiB"),
    ))
# The embedded tiny checkpoint's architecture (quant_guard.model.tiny_z_image.architecture.SIZES; the
# tiny FLUX.1's VAE)
TINY = Architecture(
    "tiny", "tiny",
    _classes(f"{_MODELS}.z_image_dit.ZImageDiT", f"{_TINY}.TinyZImageTextEncoder", f"{_TINY_FLUX}.TinyFluxVAEEncoder",
             f"{_TINY_FLUX}.TinyFluxVAEDecoder", dit_kwargs=f"{_TINY}.dit_kwargs"))

FAMILY = ModelFamily(
    name="z-image",
    label="Z-Image",
    pipeline_class="diffsynth.pipelines.z_image.ZImagePipeline",
    components=(
        # the names ZImagePipeline.from_pretrained fetches (diffsynth/pipelines/z_image.py)
        Component(DIT, "dit", disk_offload=True, models=(("dit", "z_image_dit"),)),
        Component("text_encoder", "text_encoder", disk_offload=True, models=(("text_encoder", "z_image_text_encoder"),)),
        # one FLUX.1 VAE file holding both halves; text-to-image decodes only (the encoder half is
        # for image-to-image)
        Component("vae", "vae_decoder", models=(("vae_decoder", "flux_vae_decoder"), ("vae_encoder", "flux_vae_encoder"))),
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
    architectures=(Z_IMAGE, TINY),
    tokenizer_writer="quant_guard.model.tiny_z_image.tokenizers.write_tokenizer",
    tiny=EmbeddedTiny("tiny-z-image", ensure="quant_guard.model.tiny_z_image.build.ensure_tiny_z_image",
                      register="quant_guard.model.tiny_z_image.architecture.register_with_diffsynth"),
)
