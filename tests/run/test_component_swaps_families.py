"""Text encoders and VAEs as scheme targets on the Qwen-Image, Z-Image and FLUX.2 tinies (FLUX.1's
are ``test_component_swaps.py`` and ``tests/model/test_component_schemes_tiny.py``): each family
names the DiffSynth models a component's file provides (``Component.models``), so a scheme that
quantizes a text encoder or the VAE swaps that component alone, is checked (targeted float8 or
int8, the rest bf16) and renders close to bf16."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from family_support import SIZE, STEPS, count_loads, render
from helpers import ANY_IMAGE

from quant_guard.config.project import CheckpointSpec, RenderDefaults, parse_config
from quant_guard.config.schemes import REFERENCE, ComponentScheme, Quantization, Scheme
from quant_guard.judge.metrics import psnr
from quant_guard.model.checkpoints import CheckpointError
from quant_guard.model.families import embedded_family
from quant_guard.model.pipelines import check_components
from quant_guard.model.scheme_check import inventory
from quant_guard.run.session import QuantGuardSession, RunSettings

TE = "text_encoder"  # every one of these families files its one text encoder under this name
FLOAT8, INT8 = ComponentScheme("float8_e4m3fn"), ComponentScheme(quantization=Quantization("torchao_int8_w8a16"))
TE_FLOAT8 = Scheme("te-float8", others=((TE, FLOAT8),))
TE_INT8 = Scheme("te-int8", others=((TE, INT8),))
VAE_FLOAT8 = Scheme("vae-float8", others=(("vae", FLOAT8),))
ALL = Scheme("all", storage_dtype="float8_e4m3fn", others=((TE, INT8), ("vae", FLOAT8)))
# PSNR against the bf16 render of the same seed, measured on the three tinies (64x64, 3 steps):
# a text encoder in float8 or int8 46-53 dB; the VAE in float8 30-37 dB (its convolutions carry
# every pixel); a different seed 13-21 dB
TE_PSNR_MIN = 38.0
VAE_PSNR_MIN = 25.0
FAMILIES = ("tiny-qwen-image", "tiny-z-image", "tiny-flux2")


@pytest.fixture
def loads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Component name -> how many times DiffSynth loaded its file (builds and swaps alike)."""
    return count_loads(monkeypatch, request.param)


def _formats(module: Any) -> set[str]:
    return {layer.format for layer in inventory(module).layers}


@pytest.mark.parametrize("loads", FAMILIES, indirect=True)
def test_text_encoder_and_vae_schemes_swap_alone_are_checked_and_render(tmp_path: Path, loads: Counter[str],
                                                                        request: pytest.FixtureRequest) -> None:
    embedded = request.node.callspec.params["loads"]
    family = embedded_family(embedded)
    te_attribute = family.component(TE).attribute
    spec = CheckpointSpec(id=embedded, embedded=embedded, components={}, family=family.name, device="cpu",
                          thresholds=ANY_IMAGE,
                          render=RenderDefaults(steps=STEPS, width=SIZE, height=SIZE),
                          schemes=(TE_FLOAT8, TE_INT8, VAE_FLOAT8, ALL), declared_schemes=True)
    session = QuantGuardSession(parse_config({}, file=tmp_path / "qg.toml"),
                                RunSettings(update_golden=True, golden_dir=tmp_path / "g", report_dir=tmp_path / "r"))
    pipe = session.pipeline(spec, REFERENCE)
    assert loads == Counter({name: 1 for name in family.model_components})  # the build
    bf16 = render(pipe)
    steps = [(TE_FLOAT8, Counter({TE: 1}), {"float8_e4m3fn"}, TE_PSNR_MIN),
             (TE_INT8, Counter({TE: 1}), "Int8Tensor", TE_PSNR_MIN),
             (VAE_FLOAT8, Counter({TE: 1, "vae": 1}), {"bfloat16"}, VAE_PSNR_MIN),
             (ALL, Counter(dit=1, text_encoder=1), "Int8Tensor", VAE_PSNR_MIN),  # the VAE stays float8
             (REFERENCE, Counter(dit=1, text_encoder=1, vae=1), {"bfloat16"}, 99.0)]
    for scheme, expected, te_format, psnr_min in steps:
        loads.clear()
        assert session.pipeline(spec, scheme) is pipe  # swapped in place (and checked), never rebuilt
        assert loads == expected, scheme.id
        te = _formats(getattr(pipe, te_attribute))
        assert te == te_format if isinstance(te_format, set) else all(te_format in f for f in te), (scheme.id, te)
        for attribute, _ in family.component("vae").models:  # Z-Image's VAE file gives both halves
            vae = {str(p.dtype) for p in getattr(pipe, attribute).parameters() if p.is_floating_point()}
            assert vae == ({"torch.float8_e4m3fn"} if "vae" in scheme.targets else {"torch.bfloat16"}), scheme.id
        assert psnr(bf16, render(pipe)) >= psnr_min, scheme.id
        for name in set(scheme.targets) - {"dit"}:  # the check tells each targeted one from a bf16 one
            with pytest.raises(CheckpointError, match=f"the {name}.* should stay as its file stores it"):
                check_components(pipe, session.resolved(spec), REFERENCE, (name,))
    assert psnr(bf16, render(pipe, seed=1)) < TE_PSNR_MIN  # the bound tells images apart
    session.release_pipelines()


@pytest.mark.parametrize("embedded", ("tiny", *FAMILIES))
def test_every_component_names_what_its_pipeline_fetches(embedded: str) -> None:
    """Each (attribute, registry name) of ``Component.models`` is a line of the pipeline's own
    ``from_pretrained``: ``pipe.<attribute> = model_pool.fetch_model("<name>")``."""
    import inspect

    family = embedded_family(embedded)
    source = inspect.getsource(family.pipeline_type().from_pretrained)
    for component in family.components:
        assert component.models, component.name
        for attribute, name in component.models:
            assert f'pipe.{attribute} = model_pool.fetch_model("{name}")' in source, (family.name, component.name)


@pytest.mark.parametrize("loads", ["tiny-wan"], indirect=True)
def test_a_wan_text_encoder_scheme_swaps_the_text_encoder_alone(tmp_path: Path, loads: Counter[str]) -> None:
    """Wan names its umT5 and its VAE as ``from_pretrained`` fetches them: a text-encoder float8
    scheme after the bf16 build reads the text encoder's file alone, is checked (umT5 float8, the
    DiT and the VAE bf16), and the reference after it reads it back."""
    import inspect

    import torch

    family = embedded_family("tiny-wan")
    source = inspect.getsource(family.pipeline_type().from_pretrained)
    for attribute, name in (*family.component(TE).models, *family.component("vae").models):
        assert f'pipe.{attribute} = model_pool.fetch_model("{name}")' in source
    spec = CheckpointSpec(id="tiny-wan", embedded="tiny-wan", components={}, family=family.name, device="cpu",
                          thresholds=ANY_IMAGE, schemes=(TE_FLOAT8,), declared_schemes=True)
    session = QuantGuardSession(parse_config({}, file=tmp_path / "qg.toml"),
                                RunSettings(update_golden=True, golden_dir=tmp_path / "g", report_dir=tmp_path / "r"))
    pipe = session.pipeline(spec, REFERENCE)
    for scheme, expected, te_format in ((TE_FLOAT8, Counter({TE: 1}), {"float8_e4m3fn"}),
                                        (REFERENCE, Counter({TE: 1}), {"bfloat16"})):
        loads.clear()
        assert session.pipeline(spec, scheme) is pipe and loads == expected, scheme.id
        assert _formats(pipe.text_encoder) == te_format and _formats(pipe.dit) == {"bfloat16"}
        assert {p.dtype for p in pipe.vae.parameters() if p.is_floating_point()} == {torch.bfloat16}
    session.release_pipelines()
