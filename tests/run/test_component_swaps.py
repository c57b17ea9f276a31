"""A scheme that quantizes a text encoder swaps that component the way a DiT-only scheme swaps
the DiT: in scheme-major order each component is loaded only when its storage changes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from family_support import count_loads
from helpers import ANY_IMAGE

from quant_guard.config.project import CheckpointSpec, RenderDefaults, parse_config
from quant_guard.config.schemes import REFERENCE, ComponentScheme, Quantization, Scheme
from quant_guard.model import pipelines
from quant_guard.model.checkpoints import CheckpointError, tiny_resolved
from quant_guard.model.scheme_check import inventory
from quant_guard.run.session import QuantGuardSession, RunSettings

T5_INT8 = (("text_encoder_t5", ComponentScheme(quantization=Quantization("torchao_int8_w8a16"))),)
DIT_ONLY = Scheme("dit-only", storage_dtype="float8_e4m3fn")
TE_ONLY = Scheme("te-only", others=T5_INT8)
BOTH = Scheme("both", storage_dtype="float8_e4m3fn", others=T5_INT8)
CHECKPOINT = CheckpointSpec(id="tiny", embedded="tiny", components={}, device="cpu", thresholds=ANY_IMAGE,
                            render=RenderDefaults(steps=2, width=64, height=64),
                            schemes=(DIT_ONLY, TE_ONLY, BOTH), declared_schemes=True)


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Component name -> how many times DiffSynth loaded its file (builds and swaps alike)."""
    return count_loads(monkeypatch, "tiny")


def _t5_format(pipe: Any) -> set[str]:
    return {layer.format for layer in inventory(pipe.text_encoder_2).layers}


def test_scheme_major_order_loads_each_component_when_its_storage_changes(tmp_path: Path,
                                                                           loads: Counter[str]) -> None:
    session = QuantGuardSession(parse_config({}, file=tmp_path / "qg.toml"),
                                RunSettings(update_golden=True, golden_dir=tmp_path / "g", report_dir=tmp_path / "r"))
    pipe = session.pipeline(CHECKPOINT, REFERENCE)
    assert loads == Counter(dit=1, text_encoder_clip=1, text_encoder_t5=1, vae=1)  # the build
    assert _t5_format(pipe) == {"bfloat16"}
    steps = [(DIT_ONLY, Counter(dit=1)),  # bf16 -> dit-only: the DiT alone
             (TE_ONLY, Counter(dit=1, text_encoder_t5=1)),  # the DiT back to bf16, T5 to int8
             (BOTH, Counter(dit=1)),  # T5 stays int8
             (BOTH, Counter()),  # the same scheme again: nothing
             (REFERENCE, Counter(dit=1, text_encoder_t5=1))]
    for scheme, expected in steps:
        loads.clear()
        assert session.pipeline(CHECKPOINT, scheme) is pipe  # swapped in place, never rebuilt
        assert loads == expected, scheme.id
        t5 = _t5_format(pipe)
        assert t5 == {"bfloat16"} if scheme.component("text_encoder_t5").is_reference \
            else all("Int8Tensor" in f for f in t5), (scheme.id, t5)
    session.release_pipelines()


def test_a_component_without_a_registry_name_cannot_be_swapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A family that does not say which DiffSynth model a component's file holds: a scheme naming
    that component fails with an error that says so, before anything is dropped."""
    import dataclasses

    from quant_guard.model.families import family_of
    from quant_guard.model.tiny.build import ensure_tiny_checkpoint

    checkpoint = tiny_resolved(ensure_tiny_checkpoint())
    family = family_of(checkpoint)
    vae = dataclasses.replace(family.component("vae"), models=())
    unnamed = dataclasses.replace(family, components=tuple(vae if c.name == "vae" else c for c in family.components))
    monkeypatch.setattr(pipelines, "family_of", lambda _: unnamed)
    pipe = pipelines.build_pipeline(checkpoint, REFERENCE, "cpu")
    scheme = Scheme("vae8", others=(("vae", ComponentScheme("float8_e4m3fn")),))
    with pytest.raises(ValueError, match="does not name DiffSynth's model name of its 'vae' component"):
        pipelines.swap_components(pipe, checkpoint, scheme, pipelines.default_plan(scheme, "cpu", unnamed), ("vae",))
    assert pipe.vae_decoder is not None  # nothing dropped
    assert pipelines.changed_components(checkpoint, REFERENCE, scheme) == ("vae",)
    # it is still the bf16 one (the family names no VAE models, so only its decoder attribute is checked)
    with pytest.raises(CheckpointError, match=r"the built vae is not what the scheme says: (\d+) of its \1 floating "
                                              "parameters are not float8_e4m3fn"):
        pipelines.check_components(pipe, checkpoint, scheme, ("vae",))
