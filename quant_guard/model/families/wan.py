"""Wan video (DiffSynth's ``WanVideoPipeline``): text-to-video with a 3D-RoPE DiT, the umT5 text
encoder and Wan's causal video VAE (4 frames into one latent frame after the first, so a clip has
4k+1 frames: ``config.families.FAMILIES["wan"].frame_step``). A render returns the frames
(``model.render.Render.frames``); goldens are lossless animated PNGs (``store.golden``). Every
answer is read from DiffSynth 2.1.12's sources; ``quant_guard/model/tiny_wan/FACTS.md`` cites each one.

Wan2.2 A14B's second DiT (``pipe.dit2``, the low-noise expert, switched in at ``switch_DiT_boundary
* 1000``) is the optional component ``dit2``: a checkpoint naming it loads it after ``dit``, a scheme
gives it the DiT's storage dtype or method (``config.families.SECOND_DIT``), a DiT swap between
schemes reloads both, and the scheme check refuses a pipeline where the two differ.

Not covered yet: a pre-quantized file per DiT (the configuration refuses a scheme's own DiT file
when the checkpoint has ``dit2``).
"""

from __future__ import annotations

from quant_guard.config.families import SECOND_DIT
from quant_guard.model.families.base import (
    CFG_CALL_ARGUMENTS,
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

_TINY = "quant_guard.model.tiny_wan.architecture"
_MODELS = "diffsynth.models"
_VAE_CONVERTER = "diffsynth.utils.state_dict_converters.wan_video_vae.WanVideoVAEStateDictConverter"

# true CFG (two DiT passes per step unless cfg_scale is 1) and the clip's length; negative prompt,
# sigma_shift (5) and VAE tiling stay at the pipeline's defaults
VIDEO_CALL_ARGUMENTS = CFG_CALL_ARGUMENTS + (("frames", "num_frames"),)
# Wan2.1-T2V-14B's DiT (diffsynth/configs/model_configs.py, hash aafcfd96...; Wan2.2-T2V-A14B's two
# DiTs have the same shapes); the 1.3B differs in dim 1536, ffn 8960, 12 heads, 30 layers
_WAN21_14B = (("has_image_input", False), ("patch_size", (1, 2, 2)), ("in_dim", 16), ("dim", 5120),
              ("ffn_dim", 13824), ("freq_dim", 256), ("text_dim", 4096), ("out_dim", 16), ("num_heads", 40),
              ("num_layers", 40), ("eps", 1e-06))


def _classes(dit_kwargs: tuple = (), dit_factory: str | None = None, text_factory: str | None = None,
             vae: str = f"{_MODELS}.wan_video_vae.WanVideoVAE") -> tuple[ModelClass, ...]:
    return (
        ModelClass(DIT, f"{_MODELS}.wan_video_dit.WanModel", "wan_video_dit", kwargs=dit_kwargs,
                   kwargs_factory=dit_factory),
        ModelClass("text_encoder", f"{_MODELS}.wan_video_text_encoder.WanTextEncoder", "wan_video_text_encoder",
                   kwargs_factory=text_factory),
        # the released file holds VideoVAE_'s names; DiffSynth's converter adds "model."
        ModelClass("vae", vae, "wan_video_vae", converter=_VAE_CONVERTER, to_file=f"{_TINY}.vae_to_file"),
    )


_WAN21_1_3B = tuple((k, {"dim": 1536, "ffn_dim": 8960, "num_heads": 12, "num_layers": 30}.get(k, v))
                    for k, v in _WAN21_14B)
WAN21_14B = Architecture(
    "wan2.1-t2v-14b", "Wan2.1-T2V-14B", _classes(_WAN21_14B),
    published=(
        Anchor("bf16", True, "no VRAM figure published; vram_limit = GPU total - 2 GiB",
               "DiffSynth-Studio examples/wanvideo/model_inference_low_vram/Wan2.1-T2V-14B.py: every component "
               "offloaded to disk, onloaded to the CPU in bf16, prepared and computed on the GPU"),
    ))
WAN21_1_3B = Architecture(
    "wan2.1-t2v-1.3b", "Wan2.1-T2V-1.3B", _classes(_WAN21_1_3B),
    published=(
        Anchor("bf16", True, "minimum 8 GB VRAM (DiffSynth's claim)",
               "DiffSynth-Studio docs/en/Model_Details/Wan.md, Quick Start: every component offloaded to disk, "
               "vram_limit = GPU total - 2 GiB"),
    ))
TINY = Architecture("tiny", "tiny", _classes(dit_factory=f"{_TINY}.dit_kwargs",
                                             text_factory=f"{_TINY}.text_encoder_kwargs",
                                             vae=f"{_TINY}.TinyWanVideoVAE"))

FAMILY = ModelFamily(
    name="wan",
    label="Wan",
    pipeline_class="diffsynth.pipelines.wan_video.WanVideoPipeline",
    components=(
        Component(DIT, "dit", disk_offload=True),
        # Wan2.2 A14B's low-noise expert (``fetch_model("wan_video_dit", index=2)``: the second DiT
        # file loaded); it takes the scheme's DiT entry (``config.families.SECOND_DIT``)
        Component(SECOND_DIT, SECOND_DIT, disk_offload=True, models=((SECOND_DIT, "wan_video_dit"),), optional=True),
        Component("text_encoder", "text_encoder", disk_offload=True, models=(("text_encoder", "wan_video_text_encoder"),)),
        Component("vae", "vae", models=(("vae", "wan_video_vae"),)),  # one model: encode and decode
    ),
    # umT5-XXL's tokenizer folder (google/umt5-xxl/: spiece.model + tokenizer.json, ~20 MB)
    tokenizers=(Tokenizer("tokenizer", "tokenizer_config", 2**25),),
    dit_registry_name="wan_video_dit",
    call_arguments=VIDEO_CALL_ARGUMENTS,
    decode_method="vae_output_to_video",
    scheduler_name="FlowMatchScheduler:Wan",
    layer_naming=LayerNaming(
        block_lists=(("blocks", "block"),),
        diffusers_class="WanTransformer3DModel",
        diffusers_blocks=(("blocks", "blocks"),),
        # diffsynth/utils/state_dict_converters/wan_video_dit.py, WanVideoDiTFromDiffusers (inverted)
        diffusers_names=(
            (r"blocks\.(\d+)\.self_attn\.(q|k|v)", r"blocks.\1.attn1.to_\2"),
            (r"blocks\.(\d+)\.self_attn\.o", r"blocks.\1.attn1.to_out.0"),
            (r"blocks\.(\d+)\.cross_attn\.(q|k|v)", r"blocks.\1.attn2.to_\2"),
            (r"blocks\.(\d+)\.cross_attn\.o", r"blocks.\1.attn2.to_out.0"),
            (r"blocks\.(\d+)\.ffn\.0", r"blocks.\1.ffn.net.0.proj"),
            (r"blocks\.(\d+)\.ffn\.2", r"blocks.\1.ffn.net.2"),
            (r"text_embedding\.(0|2)", r"condition_embedder.text_embedder.linear_\1"),
            (r"time_embedding\.(0|2)", r"condition_embedder.time_embedder.linear_\1"),
            (r"time_projection\.1", r"condition_embedder.time_proj"),
            (r"head\.head", r"proj_out"),
        ),
        # self-attention (the only place frames meet), cross-attention to the text, the MLP
        block_roles=((r"self_attn", "self-attn"), (r"cross_attn", "cross-attn"), (r"ffn", "mlp")),
        outside_groups=((r"head", "final layer", "final", "final/proj"),
                        (r"time_projection", "modulation", "modulation", "time-projection"),
                        (r"(text_embedding|time_embedding|patch_embedding)", "embedders", "embedders", r"\1")),
    ),
    damage=DamageTargets(
        block="blocks.{block}.", attention_out=("self_attn.o.weight", "self_attn.o.bias"),
        feed_forward_in="ffn.0.weight", text_embedders=("text_embedding.",),
        # unpatchify reads the head's features as (pf=1, ph=2, pw=2, channel)
        final_bias="head.head.bias", patch_positions=4, channel_last=True,
        # the released VAE file's last decoder convolution (VideoVAE_ names, no "model." prefix)
        decoder_out_bias="decoder.head.2.bias",
        # WanTextEncoder's T5SelfAttention blocks (no converter: the released file has these names)
        text_encoder=("text_encoder", "blocks.{block}.")),
    architectures=(WAN21_14B, WAN21_1_3B, TINY),
    tokenizer_writer="quant_guard.model.tiny_wan.tokenizers.write_tokenizer",
    tiny=EmbeddedTiny("tiny-wan", ensure="quant_guard.model.tiny_wan.build.ensure_tiny_wan",
                      register="quant_guard.model.tiny_wan.architecture.register_with_diffsynth"),
)
