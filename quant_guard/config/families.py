"""The model families a checkpoint may name (``family = "qwen-image"``), as far as the
configuration needs them: each family's component keys, the render settings a real checkpoint of
it gets by default, whether it takes a T5 sequence length, and the embedded tiny checkpoints.
Standard library only (the plugin reads it at import time).

The model wing's families (``quant_guard/model/families/``) hold everything else about a family;
``tests/model/test_families.py`` holds the two to the same names, components and tiny checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

from quant_guard.config import tiny_settings


@dataclass(frozen=True)
class RenderDefaults:
    """A checkpoint's render settings for cases that do not set their own. ``guidance`` is the
    family's guidance argument: FLUX.1's embedded guidance, the ``cfg_scale`` of the others."""

    steps: int = 20
    width: int = 1024
    height: int = 1024
    guidance: float = 3.5


@dataclass(frozen=True)
class FamilySettings:
    """One family's configuration facts."""

    components: tuple[str, ...]  # the ``components`` keys: model files, then tokenizer folders
    render: RenderDefaults  # a real checkpoint's defaults (DiffSynth's example for the family)
    guidance: str  # what ``guidance`` means for it, in the words of its pipeline's call
    t5_sequence_length: bool = False  # whether its pipeline takes ``t5_sequence_length``

    @property
    def model_components(self) -> tuple[str, ...]:
        """The model files (what a scheme may quantize): the components but the tokenizer folders."""
        return tuple(name for name in self.components if not name.startswith(TOKENIZER_PREFIX))


TOKENIZER_PREFIX = "tokenizer"  # every family's tokenizer folders are named so
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
}


@dataclass(frozen=True)
class EmbeddedCheckpoint:
    """A tiny checkpoint shipped in quant_guard (``embedded = NAME``), built into the cache on first use."""

    family: str
    render: RenderDefaults  # what its thresholds were measured at
    t5_sequence_length: int | None = None  # the length it was trained with (FLUX.1 only)


EMBEDDED: dict[str, EmbeddedCheckpoint] = {
    "tiny": EmbeddedCheckpoint("flux", RenderDefaults(steps=tiny_settings.RECOMMENDED_STEPS,
                                                      width=tiny_settings.IMAGE_SIZE, height=tiny_settings.IMAGE_SIZE,
                                                      guidance=tiny_settings.EMBEDDED_GUIDANCE),
                               t5_sequence_length=tiny_settings.T5_SEQUENCE_LENGTH),
    # random-weight tinies at 64x64, 4 steps, as measured in their FACTS.md
    "tiny-qwen-image": EmbeddedCheckpoint("qwen-image", RenderDefaults(steps=4, width=64, height=64, guidance=4.0)),
    "tiny-z-image": EmbeddedCheckpoint("z-image", RenderDefaults(steps=4, width=64, height=64, guidance=1.0)),
    "tiny-flux2": EmbeddedCheckpoint("flux2", RenderDefaults(steps=4, width=64, height=64, guidance=1.0)),
}
