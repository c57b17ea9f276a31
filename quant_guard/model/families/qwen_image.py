"""Qwen-Image (DiffSynth's ``QwenImagePipeline``): a 20B double-stream DiT, a Qwen2.5-VL text
encoder and a Wan-style VAE. Every answer here is read from DiffSynth 2.1.12's sources and
examples; ``quant_guard/model/tiny_qwen_image/FACTS.md`` cites each one."""

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

_TINY = "quant_guard.model.tiny_qwen_image.architecture"
_MODELS = "diffsynth.models"
_TEXT_CONVERTER = ("diffsynth.utils.state_dict_converters.qwen_image_text_encoder."
                   "QwenImageTextEncoderStateDictConverter")


def _classes(dit: str, text_encoder: str, vae_kwargs: str | None = None) -> tuple[ModelClass, ...]:
    """One Qwen-Image size: the DiT, the Qwen2.5-VL text encoder (its file in the Hugging Face
    layout of the released ``text_encoder/model*.safetensors``, which DiffSynth's converter maps
    back) and the Wan-style VAE (one model, encode and decode)."""
    return (
        ModelClass(DIT, dit, "qwen_image_dit"),
        ModelClass("text_encoder", text_encoder, "qwen_image_text_encoder", converter=_TEXT_CONVERTER,
                   to_file=f"{_TINY}.text_encoder_to_file"),
        ModelClass("vae", f"{_MODELS}.qwen_image_vae.QwenImageVAE", "qwen_image_vae", kwargs_factory=vae_kwargs),
    )


# Qwen/Qwen-Image at DiffSynth's default constructors (tiny_qwen_image/FACTS.md, "Full-size shapes")
QWEN_IMAGE = Architecture(
    "qwen-image", "Qwen-Image",
    _classes(f"{_MODELS}.qwen_image_dit.QwenImageDiT", f"{_MODELS}.qwen_image_text_encoder.QwenImageTextEncoder"),
    published=(
        Anchor("float8_e4m3fn", True, "minimum 8 GB VRAM (DiffSynth's claim)",
               "DiffSynth docs/en/Model_Details/Qwen-Image.md: every component float8 from disk, "
               "vram_limit = GPU total - 0.5 GiB"),
    ))
# The embedded tiny checkpoint's architecture (quant_guard.model.tiny_qwen_image.architecture.SIZES)
TINY = Architecture("tiny", "tiny", _classes(f"{_TINY}.TinyQwenImageDiT", f"{_TINY}.TinyQwenImageTextEncoder",
                                             vae_kwargs=f"{_TINY}.vae_kwargs"))

FAMILY = ModelFamily(
    name="qwen-image",
    label="Qwen-Image",
    pipeline_class="diffsynth.pipelines.qwen_image.QwenImagePipeline",
    components=(
        # the names QwenImagePipeline.from_pretrained fetches (diffsynth/pipelines/qwen_image.py)
        Component(DIT, "dit", disk_offload=True, models=(("dit", "qwen_image_dit"),)),
        Component("text_encoder", "text_encoder", disk_offload=True,
                  models=(("text_encoder", "qwen_image_text_encoder"),)),
        Component("vae", "vae", models=(("vae", "qwen_image_vae"),)),  # one model: encode and decode
    ),
    tokenizers=(Tokenizer("tokenizer", "tokenizer_config", 2**23),),
    dit_registry_name="qwen_image_dit",
    # true CFG (two DiT passes per step unless cfg_scale is 1); no embedded guidance, no T5
    call_arguments=CFG_CALL_ARGUMENTS,
    scheduler_name="FlowMatchScheduler:Qwen-Image",
    # DiffSynth's Qwen-Image DiT has diffusers' QwenImageTransformer2DModel module names (no converter)
    layer_naming=LayerNaming(
        block_lists=(("transformer_blocks", "joint block"),),
        diffusers_class="QwenImageTransformer2DModel",
        diffusers_blocks=(("transformer_blocks", "transformer_blocks"),),
        diffusers_names=DIFFUSERS_NAMES_AS_THEY_ARE,
        # image and text attention together; each stream's MLP and modulation (AdaLN) apart
        block_roles=((r"attn", "attn"), (r"img_mlp", "img-mlp"), (r"txt_mlp", "txt-mlp"),
                     (r"img_mod|txt_mod", "modulation")),
        outside_groups=((r"norm_out", "final layer", "final", "final/modulation"),
                        (r"proj_out", "final layer", "final", "final/proj"),
                        (r"(img_in|txt_in|time_text_embed)", "embedders", "embedders", r"\1")),
    ),
    damage=DamageTargets(
        block="transformer_blocks.{block}.", attention_out=("attn.to_out.0.weight", "attn.to_out.0.bias"),
        feed_forward_in="img_mlp.net.0.proj.weight", text_embedders=("txt_in.",),
        final_bias="proj_out.bias", patch_positions=4, decoder_out_bias="decoder.conv_out.bias"),
    # DiffSynth 2.1.12 maps the text encoder's vision rotary embedding by its transformers < 5.3 name;
    # newer transformers call it Qwen2_5_VLVisionRotaryEmbedding (its map updater renames only the RMSNorm)
    module_renames=(("transformers.models.qwen2_5_vl.modeling_qwen2_5_vl.Qwen2_5_VisionRotaryEmbedding",
                     "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl.Qwen2_5_VLVisionRotaryEmbedding"),),
    architectures=(QWEN_IMAGE, TINY),
    tokenizer_writer="quant_guard.model.tiny_qwen_image.tokenizers.write_tokenizer",
    tiny=EmbeddedTiny("tiny-qwen-image", ensure="quant_guard.model.tiny_qwen_image.build.ensure_tiny_qwen_image",
                      register="quant_guard.model.tiny_qwen_image.architecture.register_with_diffsynth"),
)
