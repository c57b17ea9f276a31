"""FLUX.2 (DiffSynth's ``Flux2ImagePipeline``), in the layout of FLUX.2-klein: a double- and
single-stream DiT without biases, a Qwen3 text encoder read at three depths, and FLUX.2's VAE.
Every answer here is read from DiffSynth 2.1.12's sources and examples;
``quant_guard/model/tiny_flux2/FACTS.md`` cites each one."""

from __future__ import annotations

from quant_guard.model.families.base import (
    CFG_CALL_ARGUMENTS,
    DIFFUSERS_NAMES_AS_THEY_ARE,
    DIT,
    Architecture,
    Component,
    DamageTargets,
    EmbeddedTiny,
    LayerNaming,
    ModelClass,
    ModelFamily,
    Tokenizer,
)

_TINY = "quant_guard.model.tiny_flux2.architecture"
_MODELS = "diffsynth.models"
_QWEN3 = f"{_MODELS}.z_image_text_encoder.ZImageTextEncoder"  # klein's text encoder is Z-Image's class


def _classes(dit_kwargs: tuple[tuple[str, object], ...] = (), text_encoder: str = _QWEN3,
             text_kwargs: tuple[tuple[str, str], ...] = (), *, dit_factory: str | None = None,
             vae_factory: str | None = None) -> tuple[ModelClass, ...]:
    """One FLUX.2-klein size: DiffSynth's ``Flux2DiT`` (its sizes as the registry's ``extra_kwargs``),
    the Qwen3 text encoder (fetched as "z_image_text_encoder") and the FLUX.2 VAE."""
    return (
        ModelClass(DIT, f"{_MODELS}.flux2_dit.Flux2DiT", "flux2_dit", kwargs=dit_kwargs, kwargs_factory=dit_factory),
        ModelClass("text_encoder", text_encoder, "z_image_text_encoder", kwargs=text_kwargs),
        ModelClass("vae", f"{_MODELS}.flux2_vae.Flux2VAE", "flux2_vae", kwargs_factory=vae_factory),
    )


# black-forest-labs/FLUX.2-klein-4B and -9B: the DiT sizes of DiffSynth's registry entries
# (diffsynth/configs/model_configs.py, flux2_series), Qwen3-4B / Qwen3-8B (tiny_flux2/FACTS.md)
KLEIN_4B = Architecture("flux.2-klein-4b", "FLUX.2-klein-4B", _classes(
    (("guidance_embeds", False), ("joint_attention_dim", 7680), ("num_attention_heads", 24), ("num_layers", 5),
     ("num_single_layers", 20))))
KLEIN_9B = Architecture("flux.2-klein-9b", "FLUX.2-klein-9B", _classes(
    (("guidance_embeds", False), ("joint_attention_dim", 12288), ("num_attention_heads", 32), ("num_layers", 8),
     ("num_single_layers", 24)), text_kwargs=(("model_size", "8B"),)))
# The embedded tiny checkpoint's architecture (quant_guard.model.tiny_flux2.architecture.SIZES)
TINY = Architecture("tiny", "tiny", _classes(text_encoder=f"{_TINY}.TinyQwen3TextEncoder",
                                             dit_factory=f"{_TINY}.dit_kwargs", vae_factory=f"{_TINY}.vae_kwargs"))

FAMILY = ModelFamily(
    name="flux2",
    label="FLUX.2",
    pipeline_class="diffsynth.pipelines.flux2_image.Flux2ImagePipeline",
    components=(
        # the names Flux2ImagePipeline.from_pretrained fetches (diffsynth/pipelines/flux2_image.py)
        Component(DIT, "dit", disk_offload=True, models=(("dit", "flux2_dit"),)),
        # klein's Qwen3 encoder, fetched as Z-Image's (FLUX.2-dev's Mistral encoder would land in
        # ``text_encoder`` as "flux2_text_encoder")
        Component("text_encoder", "text_encoder_qwen3", disk_offload=True,
                  models=(("text_encoder_qwen3", "z_image_text_encoder"),)),
        Component("vae", "vae", models=(("vae", "flux2_vae"),)),
    ),
    tokenizers=(Tokenizer("tokenizer", "tokenizer_config", 2**24),),
    dit_registry_name="flux2_dit",
    # klein ignores embedded_guidance (guidance_embeds=False): guidance is true CFG; no T5 (the
    # prompt is always padded to 512 tokens)
    call_arguments=CFG_CALL_ARGUMENTS,
    scheduler_name="FlowMatchScheduler:FLUX.2",
    # DiffSynth's FLUX.2 DiT has diffusers' Flux2Transformer2DModel module names (no converter)
    layer_naming=LayerNaming(
        block_lists=(("transformer_blocks", "joint block"), ("single_transformer_blocks", "single block")),
        diffusers_class="Flux2Transformer2DModel",
        diffusers_blocks=(("transformer_blocks", "transformer_blocks"),
                          ("single_transformer_blocks", "single_transformer_blocks")),
        diffusers_names=DIFFUSERS_NAMES_AS_THEY_ARE,
        # double blocks: attention (both streams), image-stream and text-stream MLP; single blocks:
        # the fused qkv + MLP input and the fused output (attn.to_out, without the double block's .0)
        block_roles=((r"attn\.(to_[qkv]|add_[qkv]_proj|to_out\.0|to_add_out)", "attn"), (r"ff", "img-mlp"),
                     (r"ff_context", "txt-mlp"), (r"attn\.to_qkv_mlp_proj", "qkv-mlp"), (r"attn\.to_out", "out")),
        # the blocks' modulation is shared, outside them
        outside_groups=((r"([^.]*_modulation[^.]*)", "modulation", "modulation", r"\1"),
                        (r"norm_out", "final layer", "final", "final/modulation"),
                        (r"proj_out", "final layer", "final", "final/proj"),
                        (r"(x_embedder|context_embedder|time_guidance_embed)", "embedders", "embedders", r"\1")),
    ),
    damage=DamageTargets(
        block="transformer_blocks.{block}.", attention_out=("attn.to_out.0.weight",),  # no biases
        feed_forward_in="ff.linear_in.weight", text_embedders=("context_embedder.",),
        final_bias=None, patch_positions=1, decoder_out_bias="decoder.conv_out.bias"),
    architectures=(KLEIN_4B, KLEIN_9B, TINY),
    tokenizer_writer="quant_guard.model.tiny_flux2.tokenizer.write_tokenizer",
    tiny=EmbeddedTiny("tiny-flux2", ensure="quant_guard.model.tiny_flux2.build.ensure_tiny_flux2_checkpoint",
                      register="quant_guard.model.tiny_flux2.architecture.register_with_diffsynth"),
)
