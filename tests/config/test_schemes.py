"""The scheme matrix: several candidate schemes per checkpoint, each compared with the one bf16
golden; configuration errors, the check that the built DiT is what its scheme says, the probe
that stops a scheme that cannot run here at collection, and pre-quantized files."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from quant_guard.run.cases import expand_cases
from quant_guard.model.checkpoints import CheckpointError, ResolvedCheckpoint, resolve_checkpoint
from quant_guard.config.project import CheckpointSpec, ConfigError, parse_config
from quant_guard.config.method_names import known_methods
from quant_guard.model.scheme_check import check_scheme_applied, inventory
from quant_guard.model.scheme_probe import probe
from quant_guard.config.schemes import FLOAT8_E4M3FN, REFERENCE, Quantization, Scheme
from scheme_support import build, tiny_checkpoint

NF4 = Scheme("bitsandbytes_nf4", quantization=Quantization("bitsandbytes_nf4"))
INT8 = Scheme("torchao_int8_w8a16", quantization=Quantization("torchao_int8_w8a16"))


def _config(tmp_path: Path, **checkpoint: Any) -> Any:
    return parse_config({"checkpoints": [{"id": "tiny", "embedded": "tiny", "device": "cpu", **checkpoint}],
                         "cases": [{"id": "c", "prompt": "a red circle", "seeds": [0, 1]}]},
                        file=tmp_path / "qg.toml", where="tool.quant_guard")


# ---- configuration -----------------------------------------------------------------------------

def test_schemes_by_name_and_table_give_one_test_each_named_by_scheme(tmp_path: Path) -> None:
    config = _config(tmp_path, schemes=[
        "float8_e4m3fn", "float8_e5m2", "bitsandbytes_nf4",
        {"id": "nf4-keep-block0", "method": "bitsandbytes_nf4", "exclude_modules": ["blocks.0"],
         "backend_config_kwargs": {"blocksize": 64}, "thresholds": {"psnr": 30.0}}])
    spec = config.checkpoints[0]
    assert [s.id for s in spec.schemes] == ["float8_e4m3fn", "float8_e5m2", "bitsandbytes_nf4", "nf4-keep-block0"]
    assert spec.schemes[1].storage_dtype == "float8_e5m2" and spec.schemes[1].quantization is None
    mixed = spec.schemes[3]
    assert mixed.quantization == Quantization("bitsandbytes_nf4", exclude_modules=("blocks.0",),
                                              backend_config_kwargs=(("blocksize", 64),))
    assert mixed.thresholds.psnr == 30.0 and mixed.kind == "bitsandbytes_nf4"
    # scheme-major order: the session swaps the DiT once per scheme
    assert [vc.id for vc in expand_cases(config)][:3] == ["tiny-float8_e4m3fn-c-s0", "tiny-float8_e4m3fn-c-s1",
                                                         "tiny-float8_e5m2-c-s0"]
    assert len({vc.key for vc in expand_cases(config)}) == 2  # one golden per (case, seed), shared


def test_without_a_schemes_list_the_single_float8_candidate_keeps_its_ids(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert config.checkpoints[0].schemes == (FLOAT8_E4M3FN,)
    assert [vc.id for vc in expand_cases(config)] == ["tiny-c-s0", "tiny-c-s1"]


@pytest.mark.parametrize("schemes, message", [
    ([{"storage": "float8_e4m3fn", "method": "bitsandbytes_nf4"}], "schemes[0]: needs exactly one of storage"),
    ([{"storage": "float8_e4m4"}], "schemes[0].storage: must be one of float8_e4m3fn, float8_e5m2, got "
                                   "'float8_e4m4'; did you mean 'float8_e4m3fn'?"),
    (["float8_e4m3"], "schemes[0]: unknown scheme 'float8_e4m3': not a storage dtype (float8_e4m3fn, float8_e5m2) "
                      "nor a quantization method of the installed DiffSynth; did you mean 'float8_e4m3fn'?"),
    ([{"method": "bitsandbytes_nf5"}], "schemes[0].method: unknown scheme 'bitsandbytes_nf5'*did you mean "
                                       "'bitsandbytes_nf4'?"),
    (["no_such_scheme"], "schemes[0]: unknown scheme 'no_such_scheme'*(it knows: bitsandbytes_fp4, bitsandbytes_nf4,"),
    ([{"storge": "float8_e4m3fn"}], "schemes[0].storge: unknown key; did you mean 'storage'?"),
    ([{"method": "bitsandbytes_nf4", "mdoe": "dequant_once"}], "schemes[0].mdoe: unknown key; did you mean 'mode'?"),
    (["float8_e4m3fn", {"storage": "float8_e4m3fn"}], "schemes: duplicate id 'float8_e4m3fn'"),
    ([{"id": "bf16", "method": "bitsandbytes_nf4"}], "schemes[0].id: 'bf16' names the bf16 reference"),
    ([{"method": "bitsandbytes_nf4", "mode": "static"}], "schemes[0].mode: must be one of dynamic, dequant_once"),
    ([{"storage": "float8_e5m2", "exclude_modules": ["x"]}], "schemes[0].exclude_modules: applies only to a"),
    ([{"method": "bitsandbytes_nf4", "backend_config_kwargs": {"blocksize": [64]}}],
     "schemes[0].backend_config_kwargs.blocksize: must be a string, number or boolean"),
    ([{"method": "bitsandbytes_nf4", "load_prequantized": True}], "schemes[0].load_prequantized: is true exactly"),
    ([], "tool.quant_guard.checkpoints[0].schemes: is empty"),
    ([3], "schemes[0]: must be a scheme name or a table"),
])
def test_bad_schemes_name_the_key(tmp_path: Path, schemes: list[Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, schemes=schemes)
    assert fnmatch.fnmatch(str(info.value), f"*{glob_escape(message)}*"), str(info.value)


def glob_escape(text: str) -> str:
    """``text`` for fnmatch with only its ``*`` as wildcards (brackets and ``?`` literal)."""
    return re.sub(r"([\[\]?])", r"[\1]", text)


def test_scheme_names_are_read_from_the_installed_diffsynth_without_importing_it() -> None:
    """The names the configuration accepts are exactly DiffSynth's registered methods, and the
    check imports neither torch nor DiffSynth: a typo is an error in milliseconds, at parse time."""
    from diffsynth.core.quant import QUANT_METHODS, backends

    backends.load_all_backends()
    assert known_methods() == frozenset(QUANT_METHODS)
    code = ("import sys; from pathlib import Path; from quant_guard.config.project import ConfigError, parse_scheme\n"
            "try: parse_scheme('float8_e4m3', file=Path('qg.toml'), where='w', key='schemes[0]')\n"
            "except ConfigError as e: print(e)\n"
            "print(sorted(m for m in ('torch', 'diffsynth') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["qg.toml: w.schemes[0]: unknown scheme 'float8_e4m3': not a storage dtype "
                                "(float8_e4m3fn, float8_e5m2) nor a quantization method of the installed DiffSynth; "
                                "did you mean 'float8_e4m3fn'?", "[]"]


def test_candidate_table_and_schemes_list_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="give either candidate"):
        _config(tmp_path, schemes=["float8_e4m3fn"], candidate={"scheme": "float8_e5m2"})
    with pytest.raises(ConfigError, match="unknown storage scheme 'bitsandbytes_nf4'"):
        _config(tmp_path, candidate={"scheme": "bitsandbytes_nf4"})


def test_thresholds_per_scheme_and_the_tiny_measurements(tmp_path: Path) -> None:
    config = _config(tmp_path, thresholds={"ssim": 0.5}, schemes=[
        "float8_e4m3fn", "bitsandbytes_fp4", {"id": "loose", "method": "bitsandbytes_nf4", "thresholds": {"psnr": 5}}])
    by_scheme = {vc.scheme.id: vc.configured_thresholds(config.thresholds) for vc in expand_cases(config)}
    # the checkpoint's own table beats the embedded measurement; the scheme's own beats both
    assert by_scheme["float8_e4m3fn"].ssim_min == 0.5 and by_scheme["float8_e4m3fn"].psnr_min == 34.0
    assert by_scheme["loose"].psnr_min == 5
    # a kind the tiny checkpoint has no measurement for falls back to the package defaults
    assert by_scheme["bitsandbytes_fp4"].psnr_min == config.thresholds.psnr_min


# ---- the built DiT is what the scheme says --------------------------------------------------------

@pytest.fixture(scope="module")
def tiny() -> ResolvedCheckpoint:
    return tiny_checkpoint()


def test_each_scheme_stores_its_own_format_and_bytes(tiny: ResolvedCheckpoint) -> None:
    found = {s.id: inventory(build(tiny, s).dit) for s in (REFERENCE, FLOAT8_E4M3FN, INT8, NF4)}
    assert found["bf16"].formats() == {"bfloat16": 36}
    assert found["float8_e4m3fn"].formats() == {"float8_e4m3fn": 36}
    assert found["torchao_int8_w8a16"].formats() == {"TorchaoLinear/Int8Tensor(int8)": 36}
    assert found["bitsandbytes_nf4"].formats() == {"BitsAndBytesLinear4bit/Params4bit(nf4)": 36}
    sizes = {k: v.stored_bytes for k, v in found.items()}
    # 4-bit < 8-bit with scales < bf16; float8 storage keeps bf16 biases and norms beside its weights
    assert sizes["bitsandbytes_nf4"] < sizes["torchao_int8_w8a16"] < sizes["bf16"]
    assert sizes["float8_e4m3fn"] < sizes["bf16"]


def test_excluded_modules_stay_bf16_and_a_mismatch_is_refused(tiny: ResolvedCheckpoint) -> None:
    # DiffSynth's rule: an entry names a linear layer, or the end of its dotted name
    keep = Scheme("keep", quantization=Quantization("bitsandbytes_nf4", exclude_modules=("blocks.0.attn.a_to_qkv",
                                                                                         "x_embedder")))
    dit = build(tiny, keep).dit
    assert {layer.name for layer in inventory(dit).layers if not layer.quantized} == {"blocks.0.attn.a_to_qkv",
                                                                                      "x_embedder"}
    # the same DiT judged against a scheme that quantizes everything: named, not silently accepted
    with pytest.raises(CheckpointError, match=r"2 of the 36 targeted linear layers are not bitsandbytes_nf4 \(first: "
                                              r"x_embedder: weight format expected BitsAndBytesLinear4bit/Params4bit\(nf4\), "
                                              r"found bfloat16; stored bytes expected 0.25-0.34x of bf16, found 1.000x"):
        check_scheme_applied(dit, NF4, "tiny")
    with pytest.raises(CheckpointError, match="not stored in float8_e4m3fn"):
        check_scheme_applied(build(tiny, REFERENCE).dit, FLOAT8_E4M3FN, "tiny")
    nothing = Scheme("nothing", quantization=Quantization("bitsandbytes_nf4", target_modules=("no_such_layer",)))
    with pytest.raises(CheckpointError, match="no linear layer matches"):
        build(tiny, nothing)


def test_an_e5m2_file_is_refused_as_e4m3fn_and_stored_as_e5m2_when_declared(tiny: ResolvedCheckpoint,
                                                                            tmp_path: Path) -> None:
    from quant_guard.tools.quantize import quantize_file

    e5m2 = tmp_path / "dit-e5m2.safetensors"
    quantize_file(tiny.files["dit"], e5m2, dtype="float8_e5m2")  # type: ignore[arg-type]
    spec = CheckpointSpec(id="tiny", embedded="tiny", components={}, device="cpu",
                          schemes=(Scheme("fp8", storage_dtype="float8_e4m3fn", dit=_source(e5m2)),))
    with pytest.raises(CheckpointError, match=r"is not a float8_e4m3fn file \(tensors: .*float8_e5m2.*\); "
                                              r'declare its scheme with storage = "float8_e5m2"'):
        resolve_checkpoint(spec).scheme_dit("fp8")  # the scheme's tests fail; the checkpoint resolves
    declared = Scheme("e5m2", storage_dtype="float8_e5m2", dit=_source(e5m2))
    resolved = resolve_checkpoint(CheckpointSpec(id="tiny", embedded="tiny", components={}, device="cpu",
                                                 schemes=(declared,)))
    assert inventory(build(tiny, declared, e5m2=resolved.scheme_dits["e5m2"]).dit).formats() == {"float8_e5m2": 36}


def _source(path: Path) -> Any:
    from quant_guard.config.sources import ComponentSource

    return ComponentSource(path=path)


def test_a_file_saved_by_diffsynths_quantization_loads_prequantized(tiny: ResolvedCheckpoint, tmp_path: Path) -> None:
    from quant_guard.cli import main

    nf4_file = tmp_path / "dit-nf4.safetensors"
    assert main(["quantize", str(tiny.files["dit"]), str(nf4_file), "--method", "bitsandbytes_nf4"]) == 0
    assert nf4_file.stat().st_size < Path(tiny.files["dit"]).stat().st_size / 2  # type: ignore[arg-type]
    scheme = Scheme("nf4-file", quantization=Quantization("bitsandbytes_nf4", load_prequantized=True),
                    dit=_source(nf4_file))
    dit = build(tiny, scheme, **{"nf4-file": nf4_file}).dit
    assert inventory(dit).formats() == {"BitsAndBytesLinear4bit/Params4bit(nf4)": 36}


# ---- schemes that cannot run here stop the run at collection ------------------------------------

def test_probe_names_what_a_scheme_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert probe(FLOAT8_E4M3FN, "cpu") is None and probe(NF4, "cpu") is None
    unknown = probe(Scheme("x", quantization=Quantization("bitsandbytes_nf5")), "cpu")
    assert unknown and "unknown quantization method 'bitsandbytes_nf5'" in unknown and "bitsandbytes_nf4" in unknown
    fp8 = probe(Scheme("x", quantization=Quantization("torchao_fp8_w8a8")), "cpu")
    assert fp8 and fp8.startswith("torchao_fp8_w8a8 cannot run on cpu:") and "compute capability" in fp8
    from diffsynth.core.quant.backends import bitsandbytes

    monkeypatch.setattr(bitsandbytes, "BITSANDBYTES_AVAILABLE", False)  # as on a machine without the extra
    missing = probe(NF4, "cpu")
    assert missing and "backend bitsandbytes is not installed" in missing
    assert "pip install 'quant_guard[schemes]'" in missing


SCHEMES = 'schemes = ["float8_e4m3fn", "torchao_int8_w8a16", "bitsandbytes_nf4"]'


def test_a_scheme_that_cannot_run_stops_at_collection(pytester: pytest.Pytester,
                                                      qg_project: Callable[..., Path]) -> None:
    qg_project(checkpoint_extra='schemes = ["float8_e4m3fn", "torchao_fp8_w8a8"]')
    result = pytester.runpytest("--update-golden")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*selected schemes cannot run here:*",
                                 "*checkpoint 'tiny', scheme 'torchao_fp8_w8a8': torchao_fp8_w8a8 cannot run on cpu*"])
    assert not (pytester.path / "golden").exists()  # nothing ran
    # deselecting the scheme runs the rest
    pytester.runpytest("--update-golden", "-k", "not fp8_w8a8").assert_outcomes(passed=1)


def test_every_scheme_shares_one_golden_rendered_once(pytester: pytest.Pytester,
                                                      qg_project: Callable[..., Path]) -> None:
    root = qg_project(checkpoint_extra=SCHEMES)
    update = pytester.runpytest("--update-golden", "-v")
    update.assert_outcomes(passed=3)
    update.stdout.fnmatch_lines(["*goldens 1 created, 0 updated, 0 unchanged*"])
    folder = root / "golden" / "tiny"
    assert sorted(p.name for p in folder.iterdir()) == [
        "red-circle-s0.bitsandbytes_nf4.expected.yml", "red-circle-s0.float8_e4m3fn.expected.yml",
        "red-circle-s0.json", "red-circle-s0.png", "red-circle-s0.torchao_int8_w8a16.expected.yml"]
    check = pytester.runpytest("-v")
    check.assert_outcomes(passed=3)
    check.stdout.fnmatch_lines(["*test_visual?tiny-torchao_int8_w8a16-red-circle-s0? PASSED*"])
    records = {r["scheme"]: r for r in json.loads((root / "qg-report" / "results.json").read_text())["results"]}
    assert set(records) == {"float8_e4m3fn", "torchao_int8_w8a16", "bitsandbytes_nf4"}
    nf4 = records["bitsandbytes_nf4"]
    assert nf4["scheme_spec"]["quantize"]["method"] == "bitsandbytes_nf4"
    assert nf4["candidate_render"]["dit_weight_bytes"] < records["float8_e4m3fn"]["candidate_render"]["dit_weight_bytes"]
    assert nf4["metrics"]["lpips"] > records["torchao_int8_w8a16"]["metrics"]["lpips"]  # 4-bit is farther from bf16
    # a scheme's failure message names it
    qg_project(checkpoint_extra=SCHEMES.replace('"bitsandbytes_nf4"', '{ method = "bitsandbytes_nf4", '
                                                                       'thresholds = { psnr = 150 } }'))
    failing = pytester.runpytest()
    failing.assert_outcomes(passed=2, failed=1)
    failing.stdout.fnmatch_lines(["*bitsandbytes_nf4 candidate differs from the bf16 golden:*"])
