"""The model families a checkpoint may name (``family = "qwen-image"``), as far as the
configuration needs them: each family's component keys, the render settings a real checkpoint of
it gets by default, whether it takes a T5 sequence length, and the embedded tiny checkpoints.
Standard library only (the plugin reads it at import time).

The model wing's families (``quant_guard/model/families/``) hold everything else about a family;
``tests/model/test_families.py`` holds the two to the same names, components and tiny checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quant_guard.config import tiny_settings


@dataclass(frozen=True)
class RenderDefaults:
    """A checkpoint's render settings for cases that do not set their own. ``guidance`` is the
    family's guidance argument: FLUX.1's embedded guidance, the ``cfg_scale`` of the others."""

    steps: int = 20
    width: int = 1024
    height: int = 1024
    guidance: float = 3.5
    frames: int = 1  # a video family's clip length; 1 for an image
    fps: int = 0  # a video's playback rate (golden and report only; the pipeline does not take it)


@dataclass(frozen=True)
class FamilySettings:
    """One family's configuration facts."""

    components: tuple[str, ...]  # the ``components`` keys: model files, then tokenizer folders
    render: RenderDefaults  # a real checkpoint's defaults (DiffSynth's example for the family)
    guidance: str  # what ``guidance`` means for it, in the words of its pipeline's call
    t5_sequence_length: bool = False  # whether its pipeline takes ``t5_sequence_length``
    # a video family: its clips have ``frame_step * k + 1`` frames (``render.frames``); 0 = images
    frame_step: int = 0
    # the components a checkpoint may leave out (Wan2.1 has no second DiT ``dit2``)
    optional: tuple[str, ...] = ()

    @property
    def model_components(self) -> tuple[str, ...]:
        """The model files (what a scheme may quantize): the components but the tokenizer folders."""
        return tuple(name for name in self.components if not name.startswith(TOKENIZER_PREFIX))


TOKENIZER_PREFIX = "tokenizer"  # every family's tokenizer folders are named so
# A second DiT (Wan2.2 A14B's low-noise expert, DiffSynth's ``pipe.dit2``): an optional component
# that takes a scheme's DiT entry (``schemes.Scheme.component``)
SECOND_DIT = "dit2"
_ONE_ENCODER = ("dit", "text_encoder", "vae", "tokenizer")

DEFAULT_FAMILY = "flux"
FAMILIES: dict[str, FamilySettings] = {
    "flux": FamilySettings(("dit", "text_encoder_clip", "text_encoder_t5", "vae", "tokenizer_clip", "tokenizer_t5"),
                           RenderDefaults(steps=20, width=1024, height=1024, guidance=3.5),
                           "embedded_guidance", t5_sequence_length=True),
    # examples/qwen_image/model_inference/Qwen-Image.py: 1328x1328, true CFG 4 (the pipeline's default)
    "qwen-image": FamilySettings(_ONE_ENCODER, RenderDefaults(steps=30, width=1328, height=1328, guidance=4.0),
                                 "cfg_scale"),
    # examples/z_image/model_inference/Z-Image-Turbo.py: distilled, 8 steps without CFG
    "z-image": FamilySettings(_ONE_ENCODER, RenderDefaults(steps=8, width=1024, height=1024, guidance=1.0),
                              "cfg_scale"),
    # examples/flux2/model_inference/FLUX.2-klein-4B.py: distilled, 4 steps without CFG (klein has no
    # embedded guidance: its DiT is built with guidance_embeds=False)
    "flux2": FamilySettings(_ONE_ENCODER, RenderDefaults(steps=4, width=1024, height=1024, guidance=1.0),
                            "cfg_scale"),
    # examples/wanvideo/model_inference/Wan2.1-T2V-14B.py: 81 frames at 832x480, 50 steps, true CFG 5,
    # saved at 15 fps; Wan's VAE packs 4 frames into one latent frame after the first (4k+1 frames)
    # Wan2.2-T2V-A14B adds the low-noise DiT (``SECOND_DIT``), which takes the scheme's DiT entry
    "wan": FamilySettings(_ONE_ENCODER[:1] + (SECOND_DIT,) + _ONE_ENCODER[1:],
                          RenderDefaults(steps=50, width=832, height=480, guidance=5.0, frames=81, fps=15),
                          "cfg_scale", frame_step=4, optional=(SECOND_DIT,)),
}


@dataclass(frozen=True)
class EmbeddedCheckpoint:
    """A tiny checkpoint shipped in quant_guard (``embedded = NAME``), built into the cache on first use."""

    family: str
    render: RenderDefaults  # what its thresholds were measured at
    t5_sequence_length: int | None = None  # the length it was trained with (FLUX.1 only)
    # scheme kind -> its measured limits (ThresholdOverrides' fields); the trained FLUX.1 tiny's are
    # thresholds.EMBEDDED_THRESHOLDS, with the measurements they come from
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)


EMBEDDED: dict[str, EmbeddedCheckpoint] = {
    "tiny": EmbeddedCheckpoint("flux", RenderDefaults(steps=tiny_settings.RECOMMENDED_STEPS,
                                                      width=tiny_settings.IMAGE_SIZE, height=tiny_settings.IMAGE_SIZE,
                                                      guidance=tiny_settings.EMBEDDED_GUIDANCE),
                               t5_sequence_length=tiny_settings.T5_SEQUENCE_LENGTH),
    # The random-weight tinies of the other families at 64x64, 4 steps. Their thresholds
    # (benchmarks/family_thresholds.py --seeds 4: 8 images per candidate) lie between the worst honest
    # image and the mildest damage kind the tiny can tell from it, rounded towards honest (a golden
    # made on another CPU adds its drift). What each catches and misses: README, "Model families".
    # float8 worst 0.0007 / 0.9975 / 47.5 dB; noise x2 mildest 0.0075 / 0.9656 / 35.9 dB
    "tiny-qwen-image": EmbeddedCheckpoint("qwen-image", RenderDefaults(steps=4, width=64, height=64, guidance=4.0),
                                          thresholds={
        "float8_e4m3fn": {"lpips": 0.0023, "ssim": 0.99, "psnr": 41.5},
        "torchao_int8_w8a16": {"lpips": 0.002, "ssim": 0.992, "psnr": 42.0}}),
    # float8 worst 0.0006 / 0.9965 / 41.9 dB; drop-text mildest 0.0030 / 0.9849 / 35.1 dB
    "tiny-z-image": EmbeddedCheckpoint("z-image", RenderDefaults(steps=4, width=64, height=64, guidance=1.0),
                                       thresholds={
        "float8_e4m3fn": {"lpips": 0.0013, "ssim": 0.993, "psnr": 38.5},
        "torchao_int8_w8a16": {"lpips": 0.001, "ssim": 0.994, "psnr": 42.0}}),
    # float8 worst 0.0023 / 0.9971 / 40.6 dB; noise x2 mildest 0.0039 / 0.9906 / 35.9 dB
    "tiny-flux2": EmbeddedCheckpoint("flux2", RenderDefaults(steps=4, width=64, height=64, guidance=1.0),
                                     thresholds={
        "float8_e4m3fn": {"lpips": 0.006, "ssim": 0.994, "psnr": 37.5},
        "torchao_int8_w8a16": {"lpips": 0.002, "ssim": 0.996, "psnr": 39.5}}),
    # The random-weight tiny Wan (quant_guard/model/tiny_wan/) at 64x64, 5 frames, 3 steps without CFG
    # (benchmarks/wan_temporal.py --seeds 4 --frames 5). The frame limits hold each metric's worst
    # frame and lie midway (as above) between honest and noise x2 on block 0: float8 worst 0.0005 /
    # 0.9977 / 45.2 dB, int8 0.0003 / 0.9987 / 48.0 dB; noise mildest 0.0096 / 0.9692 / 33.2 dB. A
    # per-frame offset of the latent (tiny_wan.damage, 0.1) stays inside them (0.0012 / 0.9957 / 41.8
    # dB) and is caught over time: flicker and exposure flicker (pixel levels against the golden's own
    # change from frame to frame, judge/temporal.py) midway between honest (float8 1.31 / 0.067, int8
    # 0.95 / 0.054) and that offset's mildest (1.79 / 0.193). tLP is reported, not limited: the
    # offset's 0.0015-0.0021 overlaps float8's 0.0007-0.0017.
    "tiny-wan": EmbeddedCheckpoint("wan", RenderDefaults(steps=3, width=64, height=64, guidance=1.0, frames=5, fps=8),
                                   thresholds={
        "float8_e4m3fn": {"lpips": 0.0022, "ssim": 0.991, "psnr": 39.0, "flicker_max": 1.5,
                          "exposure_flicker_max": 0.11},
        "torchao_int8_w8a16": {"lpips": 0.0017, "ssim": 0.993, "psnr": 40.5, "flicker_max": 1.3,
                               "exposure_flicker_max": 0.1}}),
}
