"""A checkpoint's ``family`` key and the embedded tiny checkpoints of each family: the family
decides the component keys, the render defaults and whether ``t5_sequence_length`` means
anything; every mistake is an error naming the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from quant_guard.config.families import EMBEDDED, FAMILIES
from quant_guard.config.project import ConfigError, parse_config

FILE = Path("/projects/demo/pyproject.toml")
ONE_ENCODER = {"dit": "dit.safetensors", "text_encoder": "te.safetensors", "vae": "vae.safetensors",
               "tokenizer": "tokenizer"}


def _checkpoint(**table: Any) -> Any:
    config = parse_config({"checkpoints": [{"id": "ckpt", **table}],
                           "cases": [{"id": "case", "prompt": "a red circle"}]}, file=FILE)
    return config.checkpoints[0]


def test_a_checkpoint_without_a_family_is_flux_with_its_components() -> None:
    flux = {name: f"{name}.safetensors" for name in FAMILIES["flux"].components}
    spec = _checkpoint(components=flux)
    assert spec.family == "flux" and set(spec.components) == set(flux)
    assert spec.render == FAMILIES["flux"].render and spec.t5_sequence_length == 512


@pytest.mark.parametrize("name", ["qwen-image", "z-image", "flux2"])
def test_a_named_family_takes_its_own_components_and_render_defaults(name: str) -> None:
    spec = _checkpoint(family=name, components=ONE_ENCODER)
    assert spec.family == name and set(spec.components) == set(ONE_ENCODER)
    assert spec.render == FAMILIES[name].render
    assert spec.components["dit"].path == FILE.parent / "dit.safetensors"


def test_the_real_checkpoint_defaults_follow_diffsynth_examples() -> None:
    # Qwen-Image at 1328² with true CFG 4; the distilled Z-Image-Turbo and FLUX.2-klein without CFG
    assert (FAMILIES["qwen-image"].render.width, FAMILIES["qwen-image"].render.guidance) == (1328, 4.0)
    assert (FAMILIES["z-image"].render.steps, FAMILIES["z-image"].render.guidance) == (8, 1.0)
    assert (FAMILIES["flux2"].render.steps, FAMILIES["flux2"].render.guidance) == (4, 1.0)


@pytest.mark.parametrize(("embedded", "family"), [(e, s.family) for e, s in EMBEDDED.items()])
def test_an_embedded_tiny_brings_its_family_and_render_settings(embedded: str, family: str) -> None:
    spec = _checkpoint(embedded=embedded)
    assert spec.family == family and spec.render == EMBEDDED[embedded].render
    assert _checkpoint(embedded=embedded, family=family).family == family  # naming it again is fine


@pytest.mark.parametrize(("table", "message"), [
    ({"family": "sdxl", "components": ONE_ENCODER},
     "*checkpoints[[]0[]].family: unknown model family 'sdxl'; known: flux, qwen-image, z-image, flux2, wan"),
    ({"family": 3, "components": ONE_ENCODER}, "*checkpoints[[]0[]].family: must be str*"),
    ({"family": "qwen-image", "components": {**ONE_ENCODER, "text_encoder_t5": "t5.safetensors"}},
     "*components.text_encoder_t5: unknown key*the 'qwen-image' family's components are dit, text_encoder, vae, "
     "tokenizer"),
    ({"family": "z-image", "components": {"dit": "dit.safetensors"}},
     "*checkpoints[[]0[]].components: missing text_encoder, vae, tokenizer (the 'z-image' family's components*"),
    ({"components": ONE_ENCODER}, "*components.text_encoder: unknown key*the 'flux' family's components*"),
    ({"embedded": "tiny-sd15"}, "*embedded: unknown embedded checkpoint 'tiny-sd15'; known: tiny, tiny-qwen-image*"),
    ({"embedded": "tiny-z-image", "family": "flux"},
     "*family: the embedded 'tiny-z-image' checkpoint is of the 'z-image' family, not 'flux'"),
    ({"family": "flux2", "components": ONE_ENCODER, "t5_sequence_length": 256},
     "*t5_sequence_length: the 'flux2' family has no T5 text encoder; remove the key"),
    ({"embedded": "tiny-qwen-image", "t5_sequence_length": 16},
     "*t5_sequence_length: the 'qwen-image' family has no T5 text encoder; remove the key"),
])
def test_family_mistakes_name_the_file_and_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        _checkpoint(**table)
    assert str(error.value).startswith(str(FILE))
    from fnmatch import fnmatch

    assert fnmatch(str(error.value), message), str(error.value)


def test_a_video_checkpoint_takes_frames_and_fps_in_its_render_table() -> None:
    spec = _checkpoint(family="wan", components=ONE_ENCODER, render={"frames": 33, "fps": 16, "size": "832x480"})
    assert (spec.render.frames, spec.render.fps, spec.render.width, spec.render.height) == (33, 16, 832, 480)
    # left out: the family's defaults (DiffSynth's Wan2.1 example), or the embedded tiny's
    assert (_checkpoint(family="wan", components=ONE_ENCODER).render.frames, FAMILIES["wan"].render.fps) == (81, 15)
    assert _checkpoint(embedded="tiny-wan", render={"steps": 2}).render.frames == EMBEDDED["tiny-wan"].render.frames


@pytest.mark.parametrize(("table", "message"), [
    ({"family": "wan", "components": ONE_ENCODER, "render": {"frames": 6}},
     "*checkpoints[[]0[]].render.frames: a 'wan' clip has 4k+1 frames (its VAE packs 4 frames into one latent frame "
     "after the first), e.g. 5 or 9, got 6"),
    ({"family": "wan", "components": ONE_ENCODER, "render": {"frames": 0}}, "*render.frames: must be >= 1, got 0"),
    ({"family": "wan", "components": ONE_ENCODER, "render": {"fps": 0}}, "*render.fps: must be >= 1, got 0"),
    ({"family": "wan", "components": ONE_ENCODER, "render": {"frames": "81"}}, "*render.frames: must be int*"),
    ({"family": "z-image", "components": ONE_ENCODER, "render": {"frames": 5}},
     "*render.frames: the 'z-image' family renders images; only a video family (wan) takes frames"),
    ({"embedded": "tiny", "render": {"fps": 8}}, "*render.fps: the 'flux' family renders images*"),
])
def test_clip_settings_mistakes_name_the_key(table: dict[str, Any], message: str) -> None:
    from fnmatch import fnmatch

    with pytest.raises(ConfigError) as error:
        _checkpoint(**table)
    assert fnmatch(str(error.value), message), str(error.value)


A14B = {**ONE_ENCODER, "dit2": "low_noise.safetensors"}  # Wan2.2 A14B: high-noise dit, low-noise dit2


def test_a_wan_checkpoint_may_name_a_second_dit_that_takes_the_schemes_dit_entry() -> None:
    from quant_guard.config.families import SECOND_DIT

    spec = _checkpoint(family="wan", components=A14B, schemes=["float8_e4m3fn", "torchao_int8_w8a16"])
    assert spec.components[SECOND_DIT].path == FILE.parent / "low_noise.safetensors"
    for scheme in spec.schemes:
        assert scheme.component(SECOND_DIT) == scheme.component("dit") and scheme.component(SECOND_DIT).file is None
        assert scheme.targets == ("dit",) and scheme.kind == scheme.component("dit").kind  # its thresholds unchanged
    assert SECOND_DIT not in _checkpoint(family="wan", components=ONE_ENCODER).components  # Wan2.1: optional


@pytest.mark.parametrize(("table", "message"), [
    ({"family": "wan", "components": A14B, "schemes": [{"id": "half", "components": {"dit2": "float8_e4m3fn"}}]},
     "*schemes[[]0[]].components.dit2: takes the scheme's DiT entry (both DiTs are quantized alike): set dit instead"),
    ({"family": "wan", "components": A14B, "schemes": [{"storage": "float8_e4m3fn", "dit": "dit-fp8.safetensors"}]},
     "*checkpoints[[]0[]].schemes: scheme 'float8_e4m3fn' gives the DiT a file of its own, but this checkpoint "
     "has a second DiT (dit2)*"),
    ({"family": "qwen-image", "components": A14B}, "*components.dit2: unknown key*"),
])
def test_second_dit_mistakes_name_the_key(table: dict[str, Any], message: str) -> None:
    from fnmatch import fnmatch

    with pytest.raises(ConfigError) as error:
        _checkpoint(**table)
    assert fnmatch(str(error.value), message), str(error.value)
