"""The tiny checkpoint's text encoders and VAE as scheme targets: built in their scheme, checked,
their stored bytes counted, and a damaged T5 failing the gate where the honest scheme passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from quant_guard.config.project import parse_config
from quant_guard.config.schemes import REFERENCE, ComponentScheme, Quantization, Scheme
from quant_guard.model import pipelines
from quant_guard.model.checkpoints import CheckpointError, ResolvedCheckpoint, tiny_resolved
from quant_guard.model.scheme_check import inventory
from quant_guard.model.tiny.build import ensure_tiny_checkpoint
from quant_guard.run.cases import TestOverrides, Verdict, VisualCase, expand_cases
from quant_guard.run.gate import run_case
from quant_guard.run.session import QuantGuardSession, RunSettings

T5 = "text_encoder_t5"
T5_FLOAT8 = Scheme("t5-float8", others=((T5, ComponentScheme("float8_e4m3fn")),))
T5_INT8 = Scheme("t5-int8", others=((T5, ComponentScheme(quantization=Quantization("torchao_int8_w8a16"))),))
ALL_FLOAT8 = Scheme("all-float8", storage_dtype="float8_e4m3fn",
                    others=tuple((name, ComponentScheme("float8_e4m3fn")) for name in ("text_encoder_clip", T5, "vae")))


@pytest.fixture(scope="module")
def tiny() -> ResolvedCheckpoint:
    return tiny_resolved(ensure_tiny_checkpoint())


@pytest.fixture(scope="module")
def built(tiny: ResolvedCheckpoint) -> dict[str, Any]:
    """One pipeline per scheme (the tiny builds in well under a second)."""
    return {s.id: pipelines.build_pipeline(tiny, s, "cpu") for s in (REFERENCE, T5_FLOAT8, T5_INT8, ALL_FLOAT8)}


def test_t5_float8_stores_every_layer_in_float8_behind_a_per_forward_cast(built: dict[str, Any]) -> None:
    """DiffSynth's map for FLUX.1's T5 (which the tiny's subclass is registered with) wraps the
    attention projections as AutoWrappedLinear and the whole gated feed-forward as an
    AutoWrappedModule: its linear layers are float8 plain Linears cast by their wrapper."""
    layers = inventory(built["t5-float8"].text_encoder_2).layers
    assert {(layer.format, layer.managed, layer.activations) for layer in layers} == {
        ("float8_e4m3fn", True, "bfloat16")}
    wrapped = {layer.name.rsplit(".", 1)[-1] for layer in layers if type(
        built["t5-float8"].text_encoder_2.get_submodule(layer.name)).__name__ == "Linear"}
    assert wrapped == {"wi_0", "wi_1", "wo"}  # the feed-forward's, inside an AutoWrappedModule


def test_each_component_stores_what_its_scheme_says(tiny: ResolvedCheckpoint, built: dict[str, Any]) -> None:
    stored = {sid: pipelines.check_components(pipe, tiny, s) for (sid, pipe), s in
              zip(built.items(), (REFERENCE, T5_FLOAT8, T5_INT8, ALL_FLOAT8))}
    bf16, f8, int8, every = stored["bf16"], stored["t5-float8"], stored["t5-int8"], stored["all-float8"]
    assert f8[T5] * 2 == bf16[T5] and {k: v for k, v in f8.items() if k != T5} == {
        k: v for k, v in bf16.items() if k != T5}  # only T5 changed, to exactly half
    assert 0.5 * bf16[T5] < int8[T5] < 0.75 * bf16[T5]  # int8 codes plus scales; T5's norms stay bf16
    assert all(every[name] * 2 == bf16[name] for name in bf16)  # every component, the VAE included


def test_the_check_names_the_component_that_is_not_what_the_scheme_says(tiny: ResolvedCheckpoint,
                                                                         built: dict[str, Any]) -> None:
    with pytest.raises(CheckpointError, match="the built text_encoder_t5 is not what the scheme says"):
        pipelines.check_components(built["bf16"], tiny, T5_FLOAT8)  # a T5 the scheme did not reach
    with pytest.raises(CheckpointError, match="the text_encoder_t5 should stay as its file stores it"):
        pipelines.check_components(built["t5-int8"], tiny, REFERENCE)  # a T5 quantized that should not be
    with pytest.raises(CheckpointError, match="the text_encoder_t5 should stay as its file stores it.*float8_e4m3fn"):
        pipelines.check_components(built["t5-float8"], tiny, REFERENCE)  # a T5 stored in float8 that should not be
    with pytest.raises(CheckpointError, match=r"the built vae \(vae_decoder\) is not what the scheme says: "
                                              r"\d+ of its \d+ floating parameters are not float8_e4m3fn"):
        pipelines.check_components(built["t5-float8"], tiny, ALL_FLOAT8, ("vae",))  # no linear layers: parameters


def test_the_render_summary_records_bytes_per_component(built: dict[str, Any]) -> None:
    from quant_guard.config import tiny_settings as ts
    from quant_guard.model.render import RenderRequest, render

    request = RenderRequest("a red circle on a blue background", 0, 2, 64, 64, ts.EMBEDDED_GUIDANCE,
                            ts.T5_SEQUENCE_LENGTH)
    reference = render(built["bf16"], request).summary()
    t5_only = render(built["t5-float8"], request).summary()
    assert set(reference.component_weight_bytes) == {"dit", "text_encoder_clip", T5, "vae"}
    assert reference.component_weight_bytes["dit"] == reference.dit_weight_bytes == t5_only.dit_weight_bytes
    assert t5_only.component_weight_bytes[T5] * 2 == reference.component_weight_bytes[T5]
    from quant_guard.report.records import to_jsonable

    recorded = to_jsonable(t5_only)  # what results.json holds of a render: the old key and the new one
    assert recorded["dit_weight_bytes"] == t5_only.dit_weight_bytes
    assert recorded["component_weight_bytes"] == t5_only.component_weight_bytes
    # a CPU render computes in host memory: every weight is resident on its computation device
    assert recorded["component_resident_bytes"] == t5_only.component_resident_bytes == t5_only.component_weight_bytes


@pytest.mark.parametrize("honest", ["float8_e4m3fn", "torchao_int8_w8a16"])
def test_a_damaged_t5_fails_the_gate_where_the_honest_scheme_passes(tmp_path: Path, honest: str) -> None:
    """The configuration's way: a T5-only scheme and a damaged T5 (text-encoder-noise on one block,
    stored in float8 like an honest one), both held to the package defaults (no thresholds are
    measured for a text-encoder scheme)."""
    from safetensors.torch import load_file, save_file

    from quant_guard.tools.degrade import Degradation, degrade

    damaged_file = tmp_path / "t5-damaged.safetensors"
    state = load_file(str(ensure_tiny_checkpoint().components()[T5]))
    save_file(degrade(state, Degradation.TEXT_ENCODER_NOISE, block=0), str(damaged_file))
    table = {"checkpoints": [{"id": "tiny", "embedded": "tiny", "device": "cpu", "schemes": [
                 {"id": "t5-honest", "components": {T5: honest}},
                 {"id": "t5-damaged", "components": {T5: {"storage": "float8_e4m3fn", "file": str(damaged_file)}}}]}],
             "cases": [{"id": "c", "prompt": "a red circle on a blue background at the top left", "seeds": [0, 1]}]}
    config = parse_config(table, file=tmp_path / "qg.toml", where="tool.quant_guard")
    cases = expand_cases(config)
    assert [vc.scheme.id for vc in cases] == ["t5-honest"] * 2 + ["t5-damaged"] * 2

    def run(update: bool, vcs: list[VisualCase]) -> list[Verdict]:
        session = QuantGuardSession(config, RunSettings(update_golden=update, golden_dir=tmp_path / "g",
                                                        report_dir=tmp_path / "r"))
        try:
            return [run_case(session, vc, TestOverrides()).verdict for vc in vcs]
        finally:
            session.release_pipelines()

    assert run(True, cases[:2]) == [Verdict.UPDATED] * 2  # the goldens (bf16), the honest scheme within them
    assert run(False, cases) == [Verdict.PASSED] * 2 + [Verdict.IMAGE_FAILED] * 2


def test_the_probe_tries_the_method_of_every_component() -> None:
    """A scheme quantizing a text encoder with a method that cannot run here stops at collection
    like a DiT one (the plugin's probe), naming the component."""
    from quant_guard.model.scheme_probe import probe

    fp8_t5 = Scheme("t5-fp8-a8", storage_dtype="float8_e4m3fn",
                    others=((T5, ComponentScheme(quantization=Quantization("torchao_fp8_w8a8"))),))
    why = probe(fp8_t5, "cpu")
    assert why and why.startswith("text_encoder_t5: torchao_fp8_w8a8 cannot run on cpu:"), why
    assert probe(T5_INT8, "cpu") is None and probe(ALL_FLOAT8, "cpu") is None


def test_a_component_file_of_its_own_float8_or_prequantized(tmp_path: Path) -> None:
    """``file`` in a component's table: a float8 file of the scheme's dtype (a file of the other
    float8 dtype fails that scheme alone, naming the component) or a file DiffSynth's quantization
    saved, loaded with ``load_prequantized``; both read as stored (the host-memory plan) and checked."""
    from quant_guard.model.checkpoints import resolve_checkpoint
    from quant_guard.tools.quantize import quantize_file, quantize_file_with_method

    t5 = ensure_tiny_checkpoint().components()[T5]
    f8, e5, int8 = tmp_path / "t5-f8.safetensors", tmp_path / "t5-e5.safetensors", tmp_path / "t5-int8.safetensors"
    quantize_file(t5, f8, dtype="float8_e4m3fn")
    quantize_file(t5, e5, dtype="float8_e5m2")
    quantize_file_with_method(t5, int8, method="torchao_int8_w8a16")
    config = parse_config({"checkpoints": [{"id": "tiny", "embedded": "tiny", "device": "cpu", "schemes": [
        {"id": "t5-f8-file", "components": {T5: {"storage": "float8_e4m3fn", "file": str(f8)}}},
        {"id": "t5-e5-file", "components": {T5: {"storage": "float8_e4m3fn", "file": str(e5)}}},
        {"id": "t5-int8-file", "components": {T5: {"method": "torchao_int8_w8a16", "file": str(int8)}}}]}],
        "cases": [{"id": "c", "prompt": "a red circle", "seeds": [0]}]}, file=tmp_path / "qg.toml", where="w")
    spec = config.checkpoints[0]
    f8_scheme, e5_scheme, int8_scheme = spec.schemes
    assert int8_scheme.component(T5).quantization.load_prequantized  # type: ignore[union-attr]
    resolved = resolve_checkpoint(spec)
    with pytest.raises(CheckpointError, match=r"scheme 't5-e5-file' text_encoder_t5: .* is not a float8_e4m3fn file"):
        resolved.scheme_file(e5_scheme.id, T5)
    for scheme, path, formats in ((f8_scheme, f8, {"float8_e4m3fn"}),
                                  (int8_scheme, int8, {"TorchaoLinear/Int8Tensor(int8)"})):
        assert pipelines.component_file(resolved, scheme, T5) == path
        plan = pipelines.default_plan(scheme, "cpu")
        assert pipelines.planned_host_memory(resolved, scheme, plan).component(T5).how == \
            "pre-quantized file read as stored"
        pipe = pipelines.build_pipeline(resolved, scheme, "cpu")  # checked in there
        assert set(inventory(pipe.text_encoder_2).formats()) == formats, scheme.id
