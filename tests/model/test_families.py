"""The model-family seam (``quant_guard/model/families``): FLUX.1 is its first family, and it says
what the code said before; outside the family's module and the tiny checkpoint no code names it.

The rule checked by ``test_no_module_names_flux_outside_its_family``: in every module of
quant_guard except the family modules (``model/families/flux.py``, and a later family's own
module there, e.g. a FLUX.2 one) and the embedded tiny checkpoints (``model/tiny/``, and a later
family's ``model/tiny_<family>/``), no identifier (a name, an attribute, a definition, an
argument, a keyword), no import and no string literal (f-string parts included) contains "flux",
in any case. Comments and docstrings (a string standing alone as a statement) may mention FLUX.1
as an example: they are prose, not wiring. ``model/families/__init__.py`` and ``base.py`` are
checked like any other module: the registry finds the families without naming them.
"""

from __future__ import annotations

import ast
import inspect
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from quant_guard.config import families as config_families
from quant_guard.model.families import (
    UnknownModelFamily,
    default_family,
    embedded_family,
    families,
    family,
    family_of,
    family_of_pipeline,
)
from quant_guard.model.families.base import VramLayers
from quant_guard.model.families.flux import FAMILY as FLUX
from quant_guard.model.render import RenderRequest

PACKAGE = Path(__file__).resolve().parents[2] / "quant_guard"
FAMILIES = PACKAGE / "model" / "families"
NAME = re.compile("flux", re.IGNORECASE)


def names_in_code(source: str) -> list[tuple[int, str]]:
    """(line, text) of every identifier, import or string literal of ``source`` that contains
    "flux" (any case); docstrings, other lone string statements and comments are prose and skipped."""
    tree = ast.parse(source)
    prose = {id(node.value) for node in ast.walk(tree)
             if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        texts: list[str] = []
        if isinstance(node, ast.Name):
            texts = [node.id]
        elif isinstance(node, ast.Attribute):
            texts = [node.attr]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            texts = [node.name]
        elif isinstance(node, ast.arg):
            texts = [node.arg]
        elif isinstance(node, ast.keyword) and node.arg:
            texts = [node.arg]
        elif isinstance(node, ast.alias):
            texts = [node.name, node.asname or ""]
        elif isinstance(node, ast.ImportFrom):
            texts = [node.module or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            texts = [node.value]
        found += [(getattr(node, "lineno", 0), text) for text in texts if NAME.search(text)]
    return found


def _allowed(path: Path) -> bool:
    """A family's own module, the configuration's table of family names, or an embedded tiny
    checkpoint's package."""
    if path == PACKAGE / "config" / "families.py":
        return True
    if path.parent == FAMILIES:
        return path.name not in ("__init__.py", "base.py")
    model = PACKAGE / "model"
    return any(p.parent == model and (p.name == "tiny" or p.name.startswith("tiny_")) for p in path.parents)


def test_no_module_names_flux_outside_its_family() -> None:
    found = [(str(path.relative_to(PACKAGE.parent)), line, text)
             for path in sorted(PACKAGE.rglob("*.py")) if not _allowed(path)
             for line, text in names_in_code(path.read_text(encoding="utf-8"))]
    offenders = [f"{path}:{line}: {text!r}" for path, line, text in found]
    assert not offenders, "FLUX.1 is named outside quant_guard/model/families/flux.py:\n" + "\n".join(offenders)


def test_the_rule_sees_code_and_skips_prose() -> None:
    """The scanner itself: each kind of code it must catch is caught, prose is not."""
    planted = '''"""A docstring may say FLUX.1."""
# so may a comment: FluxImagePipeline
from diffsynth.pipelines.flux_image import FluxImagePipeline
import diffsynth.pipelines.flux_image as pipes
def build(flux_pipe=None):
    """FLUX again, as prose."""
    name = "flux_dit"
    label = f"{name} of Flux"
    pipes.FluxImagePipeline(tokenizer=flux_pipe, fluxy=1)
class FluxFamily: ...
'''
    lines = sorted({line for line, _ in names_in_code(planted)})
    assert lines == [3, 4, 5, 7, 8, 9, 10]
    # a comment never reaches the AST, and the tokenizer agrees that line 2 is one
    comments = [t for t in tokenize.generate_tokens(io.StringIO(planted).readline) if t.type == tokenize.COMMENT]
    assert [t.start[0] for t in comments] == [2]


def test_the_registry_finds_flux_and_names_the_known_families() -> None:
    assert family("flux") is FLUX and families()["flux"] is FLUX
    assert default_family() is FLUX and family_of(None) is FLUX
    with pytest.raises(UnknownModelFamily, match=r"unknown model family 'no-such-family'; known: (.+, )?flux\b"):
        family("no-such-family")

    class Named:
        family = "no-such-family"

    with pytest.raises(UnknownModelFamily, match="known: flux"):
        family_of(Named())  # a checkpoint naming a family is asked for that one, never the default


def test_the_configuration_knows_each_family_as_the_model_wing_does() -> None:
    """config/families.py (what a configuration may say) and model/families/ (what the code does)
    name the same families, with the same component keys and the same embedded tiny checkpoints."""
    assert set(config_families.FAMILIES) == set(families())
    for name, settings in config_families.FAMILIES.items():
        assert family(name).component_names == settings.components, name
        assert family(name).model_components == settings.model_components, name  # what a scheme may target
        assert ("t5_sequence_length", "t5_sequence_length") in family(name).call_arguments \
            if settings.t5_sequence_length else all(k != "t5_sequence_length" for _, k in family(name).call_arguments)
        assert dict(family(name).call_arguments)["guidance"] == settings.guidance, name
    assert config_families.DEFAULT_FAMILY == default_family().name
    tinies = {f.tiny.name: f.name for f in families().values() if f.tiny is not None}
    assert tinies == {embedded: e.family for embedded, e in config_families.EMBEDDED.items()}
    for embedded, family_name in tinies.items():
        assert embedded_family(embedded) is family(family_name)
    with pytest.raises(UnknownModelFamily, match="known: tiny"):
        embedded_family("tiny-sd15")


def test_flux_components_are_what_the_code_used_before() -> None:
    # pipelines.build_pipeline's ModelConfigs and memory_plan's MODEL_COMPONENTS / DISK_COMPONENTS
    assert FLUX.model_components == ("dit", "text_encoder_clip", "text_encoder_t5", "vae")
    assert FLUX.disk_components == ("dit", "text_encoder_t5")
    # what build_pipeline checked after loading, and the tokenizer keywords it passed
    assert {c.name: c.attribute for c in FLUX.components} == {
        "dit": "dit", "text_encoder_clip": "text_encoder_1", "text_encoder_t5": "text_encoder_2", "vae": "vae_decoder"}
    assert [(t.name, t.argument) for t in FLUX.tokenizers] == [("tokenizer_clip", "tokenizer_1_config"),
                                                               ("tokenizer_t5", "tokenizer_2_config")]
    assert FLUX.component_names == config_families.FAMILIES["flux"].components  # the configuration's component keys
    assert FLUX.dit_registry_name == "flux_dit"
    assert FLUX.vram_layers == VramLayers("AutoWrappedLinear", "AutoWrappedQuantizedModule")
    assert FLUX.layer_naming.diffusers_class == "FluxTransformer2DModel"


def test_flux_call_keywords_and_golden_parameters_are_what_the_code_used_before() -> None:
    request = RenderRequest(prompt="a red circle", seed=7, steps=4, width=128, height=96, guidance=3.5,
                            t5_sequence_length=16)
    assert FLUX.call_kwargs(request) == {  # what render() passed to FluxImagePipeline.__call__
        "prompt": "a red circle", "seed": 7, "num_inference_steps": 4, "width": 128, "height": 96,
        "embedded_guidance": 3.5, "t5_sequence_length": 16}
    parameters = FLUX.golden_parameters(request)
    # run/case_plan.py golden_parameters before the seam, byte for byte and in the same key order (checkpoint_hashes follow)
    assert list(parameters.items()) == [
        ("prompt", "a red circle"), ("seed", 7), ("steps", 4), ("width", 128), ("height", 96), ("guidance", 3.5),
        ("t5_sequence_length", 16), ("scheduler", "FlowMatchScheduler:FLUX.1")]
    assert FLUX.scheduler_name == "FlowMatchScheduler:FLUX.1"


def test_flux_answers_match_diffsynth() -> None:
    """Each answer of the FLUX.1 family is what DiffSynth's FluxImagePipeline does: the DiT's
    pool name and every component attribute in ``from_pretrained``, the tokenizer and call
    keywords in the signatures, the VRAM wrappers in diffsynth.core.vram.layers."""
    from diffsynth.core.vram import layers

    pipeline = FLUX.pipeline_type()
    assert f"{pipeline.__module__}.{pipeline.__qualname__}" == FLUX.pipeline_class
    load = inspect.getsource(pipeline.from_pretrained)
    assert f'pipe.dit = model_pool.fetch_model("{FLUX.dit_registry_name}")' in load
    for component in FLUX.components:
        assert re.search(rf"pipe\.{component.attribute} = model_pool\.fetch_model\(", load), component
    assert {t.argument for t in FLUX.tokenizers} <= set(inspect.signature(pipeline.from_pretrained).parameters)
    assert {k for _, k in FLUX.call_arguments} <= set(inspect.signature(pipeline.__call__).parameters)
    assert callable(getattr(pipeline, FLUX.decode_method))
    assert isinstance(getattr(layers, FLUX.vram_layers.storage), type)
    assert isinstance(getattr(layers, FLUX.vram_layers.quantized), type)
    assert family_of_pipeline(pipeline.__new__(pipeline)) is FLUX
    with pytest.raises(TypeError, match="no model family builds a builtins.object"):
        family_of_pipeline(object())


def test_importing_the_families_imports_neither_torch_nor_diffsynth() -> None:
    code = ("import sys; from quant_guard.model.families import families; families(); "
            "print(sorted(m for m in ('torch', 'diffsynth') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_degrade_damages_the_tensors_it_did_before() -> None:
    """``tools/degrade.py`` asks the family which tensors to damage: on the tiny FLUX.1 checkpoint
    they are the ones its literal names used to pick."""
    import torch
    from safetensors.torch import load_file

    from quant_guard.model.tiny.build import ensure_tiny_checkpoint
    from quant_guard.tools.degrade import Degradation, degrade

    tiny = ensure_tiny_checkpoint()
    dit, vae = load_file(str(tiny.dit)), load_file(str(tiny.vae))

    def changed(before: dict[str, torch.Tensor], kind: Degradation) -> dict[str, int]:
        after = degrade(before, kind)
        return {k: int((before[k] != after[k]).sum()) for k in before if not torch.equal(before[k], after[k])}

    assert set(changed(dit, Degradation.ZERO_ATTN_OUT)) == {"blocks.0.attn.a_to_out.weight", "blocks.0.attn.a_to_out.bias"}
    assert set(changed(dit, Degradation.SCALE)) == {"blocks.0.ff_a.0.weight"}
    assert set(changed(dit, Degradation.DROP_TEXT)) == {k for k in dit if k.startswith(
        ("context_embedder.", "pooled_text_embedder.")) and dit[k].any()}
    assert changed(dit, Degradation.COLOUR_SHIFT) == {"final_proj_out.bias": 4}
    shifted = degrade(dit, Degradation.COLOUR_SHIFT)["final_proj_out.bias"] != dit["final_proj_out.bias"]
    assert shifted.nonzero().flatten().tolist() == [4, 5, 6, 7]  # latent channel 1's 2x2 patch positions
    assert changed(vae, Degradation.COLOUR_CAST) == {"decoder.conv_out.bias": 1}
    assert all(k.startswith("blocks.0.") for k in changed(dit, Degradation.NOISE))


def test_every_class_diffsynths_vram_maps_name_imports_after_the_families_repairs() -> None:
    """DiffSynth imports every class a VRAM-management map names when it enables VRAM management
    (any offload or vram_limit); one that the installed transformers renamed fails every offloaded
    build of that model (Qwen-Image's text encoder with transformers >= 5.3). After each family's
    ``module_renames`` (``pipelines.repair_vram_maps``) every name imports, for every model whose own
    class the families' pipelines import."""
    from diffsynth.configs import VERSION_CHECKER_MAPS, VRAM_MANAGEMENT_MODULE_MAPS

    from quant_guard.model.families.base import importable
    from quant_guard.model.pipelines import prepare_diffsynth

    for each in families().values():
        prepare_diffsynth(each)
        each.pipeline_type()

    stale = []
    for model, entry in VRAM_MANAGEMENT_MODULE_MAPS.items():
        # the models the families' pipelines import (importing others would run their import-time
        # registrations, e.g. a quantization method, in this process)
        if model.rpartition(".")[0] not in sys.modules or not importable(model):
            continue
        current = VERSION_CHECKER_MAPS[model]() if model in VERSION_CHECKER_MAPS else entry
        stale += [f"{model}: {name}" for name in current if not importable(name)]
    assert not stale, "VRAM maps name classes that do not import:\n" + "\n".join(stale)
