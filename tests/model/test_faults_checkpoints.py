"""Bad input and faults, checkpoint files: missing, truncated or not safetensors,
wrong shapes for the architecture, a model DiffSynth does not recognise, and candidate DiT
files whose renders are degenerate. Every error names the file and what was expected.
Pickle checkpoints are in test_faults_pickle.py, the other faults in test_faults.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import VISUAL_TEST
from helpers import replace_file, spec_for
from quant_guard.run.cases import CaseResult, Verdict
from quant_guard.model.checkpoints import CheckpointError, ResolvedCheckpoint, resolve_checkpoint
from quant_guard.config.families import FAMILIES
from quant_guard.config.project import CheckpointSpec


# ---- missing file ----------------------------------------------------------------------------

@pytest.mark.parametrize("component", ["dit", "text_encoder_clip", "vae", "tokenizer_t5"])
def test_missing_component_is_named(tiny_files: dict[str, Path], component: str) -> None:
    """Checkpoint file missing: the error names the checkpoint, component and path."""
    tiny_files[component].unlink()
    kind = "tokenizer folder" if component.startswith("tokenizer") else "file"
    with pytest.raises(CheckpointError, match=f"checkpoint 'broken' component {component}: {kind} .* does not exist"
                       ) as info:
        resolve_checkpoint(spec_for(tiny_files))
    assert str(tiny_files[component]) in str(info.value)


# ---- truncated or not a safetensors file at all ----------------------------------------------

def _json_list_header(_: bytes) -> bytes:
    return (5).to_bytes(8, "little") + b"[1,2]"


SAFETENSORS_FAULTS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "truncated": (lambda data: data[: len(data) // 2],
                  "is truncated: its header declares * bytes of tensor data, the file holds *; "
                  "download or copy it again"),
    "truncated-header": (lambda data: data[:100], "is truncated: its header needs * bytes, the file has 92 after*"),
    "empty": (lambda data: b"", "is truncated: 0 bytes, too short for a safetensors header"),
    "garbage": (lambda data: hashlib.sha512(data).digest() * 64,
                "is not a safetensors file (header length *); expected*"),
    "json-list-header": (_json_list_header, "is not a safetensors file (bad header: *); expected a safetensors file*"),
}


@pytest.mark.parametrize("fault", list(SAFETENSORS_FAULTS))
@pytest.mark.parametrize("slot", ["dit", "vae", "candidate"])
def test_damaged_safetensors_is_named_before_loading(tiny_files: dict[str, Path], tmp_path: Path,
                                                     fault: str, slot: str) -> None:
    """Truncated safetensors: a cut-off or foreign file is named with what its header
    declares versus what the file holds, before DiffSynth (or anything else) reads it."""
    from fnmatch import fnmatch

    make, message = SAFETENSORS_FAULTS[fault]
    data = tiny_files["dit" if slot == "candidate" else slot].read_bytes()
    if slot == "candidate":
        bad = tmp_path / "candidate-dit.safetensors"
        bad.write_bytes(make(data))
        spec, what = spec_for(tiny_files, candidate=bad), "checkpoint 'broken' scheme 'float8_e4m3fn' DiT"
    else:
        bad = replace_file(tiny_files, slot, make(data))
        spec, what = spec_for(tiny_files), f"checkpoint 'broken' component {slot}"
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint(spec).scheme_dit(spec.schemes[0].id)  # a scheme's file fails that scheme
    assert fnmatch(str(info.value), f"{what}: {bad} {message}"), str(info.value)


def test_a_bad_scheme_file_fails_only_that_schemes_tests(pytester: pytest.Pytester,
                                                         qg_project: Callable[..., Path]) -> None:
    """A typo in one scheme's dit path fails that scheme's tests, naming the file; the bf16
    golden and the checkpoint's other schemes still run, and deselecting the scheme (-k), as the
    README says, leaves a green run."""
    missing = pytester.path / "models" / "dit-nope.safetensors"
    qg_project(checkpoint_extra=f'schemes = ["float8_e4m3fn", {{ id = "f8-file", storage = "float8_e4m3fn", '
                                f'dit = "{missing.as_posix()}" }}]')
    result = pytester.runpytest("--update-golden", "-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_visual[[]tiny-float8_e4m3fn-red-circle-s0[]] PASSED*"])
    result.stdout.fnmatch_lines([f"*checkpoint 'tiny' scheme 'f8-file' DiT: file {missing} does not exist*"])
    pytester.runpytest("-k", "not f8-file").assert_outcomes(passed=1, deselected=1)


def test_broken_checkpoint_fails_alone_through_pytest(pytester: pytest.Pytester, _heavy_modules: None,
                                                      tiny_files: dict[str, Path]) -> None:
    """Checkpoint file ... truncated, through pytest --update-golden: the broken
    checkpoint's test fails naming the file and writes no golden; the other checkpoint's case
    runs and passes."""
    from quant_guard.judge.scenes import T5_SEQUENCE_LENGTH

    data = tiny_files["dit"].read_bytes()
    bad = replace_file(tiny_files, "dit", data[: len(data) - 1000])
    components = "\n".join(f'{k} = "{v.as_posix()}"' for k, v in tiny_files.items())
    pytester.makefile(".toml", pyproject=textwrap.dedent("""
        [tool.quant_guard]
        [[tool.quant_guard.checkpoints]]
        id = "tiny"
        embedded = "tiny"
        device = "cpu"
        render = { steps = 4, size = "64x64" }

        [[tool.quant_guard.checkpoints]]
        id = "broken"
        device = "cpu"
        t5_sequence_length = %d
        render = { steps = 4, size = "64x64" }
        [tool.quant_guard.checkpoints.components]
        %s

        [[tool.quant_guard.cases]]
        id = "red-circle"
        prompt = "a red circle on a blue background at the top left"
        """) % (T5_SEQUENCE_LENGTH, components.replace("\n", "\n        ")))
    pytester.makepyfile(test_visual=VISUAL_TEST)
    result = pytester.runpytest("--update-golden", "-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_visual[[]tiny-red-circle-s0[]] PASSED*"])
    result.stdout.fnmatch_lines([f"*broken-red-circle-s0: checkpoint 'broken' component dit: {bad} is truncated: "
                                 "its header declares * bytes of tensor data, the file holds *"])
    assert not (pytester.path / "golden" / "broken").exists()
    assert (pytester.path / "golden" / "tiny" / "red-circle-s0.png").is_file()


# ---- wrong shapes, a model DiffSynth does not recognise --------------------------------------

def _load_error(resolved: ResolvedCheckpoint) -> str:
    from quant_guard.config.schemes import REFERENCE
    from quant_guard.model.pipelines import build_pipeline

    with pytest.raises(CheckpointError) as info:
        build_pipeline(resolved, REFERENCE, "cpu")
    return str(info.value)


@pytest.mark.parametrize("fault", ["wrong-shape", "unknown-tensors", "missing-tensor"])
def test_file_diffsynth_does_not_recognise_is_named(tiny_files: dict[str, Path], fault: str,
                                                    _heavy_modules: None) -> None:
    """Rows "wrong shapes for the architecture" and "a model DiffSynth does not recognise":
    DiffSynth identifies a model by its tensor names and shapes; a file matching none is named
    with the expectation (a registered architecture, complete and for this component)."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_files["dit"]))
    if fault == "wrong-shape":
        weight = state["final_proj_out.weight"]
        state["final_proj_out.weight"] = torch.zeros(weight.shape[0], weight.shape[1] * 2, dtype=weight.dtype)
    elif fault == "unknown-tensors":
        state = {"encoder.layer.0.weight": torch.zeros(8, 8), "encoder.layer.0.bias": torch.zeros(8)}
    else:
        del state["final_proj_out.bias"]
    bad = tiny_files["dit"].with_name("dit-bad.safetensors")
    save_file(state, str(bad))
    tiny_files["dit"] = bad
    message = _load_error(resolve_checkpoint(spec_for(tiny_files)))
    assert f"File: {bad}" in message
    assert "match no registered architecture: is it the right file for this component, complete" in message


def test_other_model_in_the_dit_slot_is_named(tiny_files: dict[str, Path], _heavy_modules: None) -> None:
    """A model DiffSynth does not recognise as the DiT: the VAE file given as the DiT is
    recognised as a VAE, so no DiT is loaded; the error must name the file given for the DiT."""
    tiny_files["dit"] = tiny_files["vae"]
    message = _load_error(resolve_checkpoint(spec_for(tiny_files)))
    assert "DiffSynth loaded no dit" in message
    assert str(tiny_files["vae"]) in message


# ---- candidate DiT files whose renders are degenerate ---------------------------------------

def _update_one(tmp_path: Path, spec: CheckpointSpec) -> CaseResult:
    """One case through the gate's --update-golden path, in this process."""
    from quant_guard.run.cases import TestOverrides, VisualCase
    from quant_guard.config.project import CaseSpec, parse_config
    from quant_guard.run.gate import run_case
    from quant_guard.run.session import QuantGuardSession, RunSettings

    config = parse_config({}, file=tmp_path / "qg.toml")
    session = QuantGuardSession(config, RunSettings(update_golden=True, golden_dir=tmp_path / "golden",
                                                    report_dir=tmp_path / "report"))
    case = CaseSpec(id="red-circle", prompt="a red circle on a blue background at the top left", seeds=(0,), steps=None,
                    width=None, height=None, guidance=None, checkpoints=(spec.id,))
    try:
        return run_case(session, VisualCase(spec, case, 0), TestOverrides())
    finally:
        session.release_pipelines()


def _damaged_dit(tiny_files: dict[str, Path], tmp_path: Path, change: Callable[[dict], None]) -> Path:
    from safetensors.torch import load_file, save_file

    state = {k: v.clone() for k, v in load_file(str(tiny_files["dit"])).items()}
    change(state)
    path = tmp_path / "damaged-dit.safetensors"
    save_file(state, str(path))
    return path


def test_nan_candidate_dit_fails_as_degenerate(tiny_files: dict[str, Path], tmp_path: Path,
                                               _heavy_modules: None) -> None:
    """Candidate renders NaN: a candidate DiT file with NaN weights renders NaN (100% of
    the VAE output) and fails as degenerate, with no expected metrics recorded for it."""
    from quant_guard.store.golden import GoldenKey, GoldenStore

    nan_dit = _damaged_dit(tiny_files, tmp_path, lambda s: s["blocks.0.attn.a_to_out.weight"].fill_(float("nan")))
    result = _update_one(tmp_path, spec_for(tiny_files, candidate=nan_dit))
    assert result.verdict is Verdict.DEGENERATE, result.reason
    assert result.reason.startswith(
        "degenerate candidate output: not finite (100.0% of the VAE output is NaN/Inf)")
    assert GoldenStore(tmp_path / "golden").load_expected(GoldenKey("broken", "red-circle", 0)) is None


def test_nan_reference_writes_no_golden(tiny_files: dict[str, Path], tmp_path: Path, _heavy_modules: None) -> None:
    """Candidate renders NaN, on the reference side: a bf16 DiT rendering NaN is refused
    as a golden, and nothing is written."""

    tiny_files["dit"] = _damaged_dit(tiny_files, tmp_path,
                                     lambda s: s["blocks.0.attn.a_to_out.weight"].fill_(float("nan")))
    result = _update_one(tmp_path, spec_for(tiny_files))
    assert result.verdict is Verdict.DEGENERATE
    assert result.reason == ("the bf16 reference render is not finite (100.0% of the VAE output is NaN/Inf); "
                             "no golden written")
    assert not (tmp_path / "golden").exists()


@pytest.mark.parametrize("fill", [0.0, float("inf")], ids=["zeroed", "inf"])
def test_flat_final_projection_never_passes(tiny_files: dict[str, Path], tmp_path: Path, _heavy_modules: None,
                                           fill: float) -> None:
    """Candidate renders ... constant, a DiT whose final_proj_out is zeroed (or Inf): the
    DiT then predicts no (or a saturated) velocity, so the image is the initial noise decoded
    by the VAE. That is not constant, so ``_degenerate`` does not flag it; it fails the
    metric thresholds instead. (float8_e4m3fn has no Inf: the on-load cast saturates Inf
    weights to 448, so an Inf weight never reaches the render as Inf.)"""

    def flatten(state: dict) -> None:
        state["final_proj_out.weight"].fill_(fill)
        state["final_proj_out.bias"].fill_(fill)

    result = _update_one(tmp_path, spec_for(tiny_files, candidate=_damaged_dit(tiny_files, tmp_path, flatten)))
    assert result.verdict is Verdict.IMAGE_FAILED, result.reason
    assert "float8_e4m3fn candidate differs from the bf16 golden:" in result.reason
    assert result.metrics is not None and result.metrics.psnr < 20


def test_hash_cache_is_not_needed_for_errors(tiny_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    """Checkpoint file missing: a damaged file-hash cache costs a re-hash, never an error."""
    from quant_guard.model.checkpoints import _hash_cache_file, checkpoint_hashes
    from quant_guard.store.paths import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    _hash_cache_file().parent.mkdir(parents=True)
    _hash_cache_file().write_text("{not json")
    hashes = checkpoint_hashes(resolve_checkpoint(spec_for(tiny_files)))
    assert set(hashes) == set(FAMILIES["flux"].components)
    assert json.loads(_hash_cache_file().read_text())
    assert os.listdir(_hash_cache_file().parent) == ["file-hashes.json"]
