"""Candidates: a pre-quantized float8 DiT file behaves like on-load float8; a DiT damaged on
purpose fails the gate with the metric message while the honest candidate passes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from quant_guard.cli import main as cli_main
from quant_guard.tools.degrade import THRESHOLD_KINDS, Degradation, degrade
from quant_guard.model.tiny.build import ensure_tiny_checkpoint


def _candidate_table(path: Path) -> str:
    return f'candidate = {{ dit = "{path.as_posix()}" }}'


def _candidate_png(root: Path) -> np.ndarray:
    return np.asarray(Image.open(root / "qg-report" / "tiny" / "red-circle-s0" / "candidate.png"))


def test_prequantized_dit_file_matches_on_load_float8(pytester: pytest.Pytester, qg_project: Callable[..., Path],
                                                      tmp_path: Path) -> None:
    root = qg_project()
    pytester.runpytest("--update-golden").assert_outcomes(passed=1)
    on_load = _candidate_png(root)
    fp8_file = tmp_path / "dit-fp8.safetensors"
    assert cli_main(["quantize", str(ensure_tiny_checkpoint().dit), str(fp8_file), "--dtype", "float8_e4m3fn"]) == 0
    assert fp8_file.stat().st_size < 0.55 * ensure_tiny_checkpoint().dit.stat().st_size
    assert all(str(t.dtype) == "torch.float8_e4m3fn" for t in load_file(str(fp8_file)).values())
    qg_project(checkpoint_extra=_candidate_table(fp8_file))
    pytester.runpytest().assert_outcomes(passed=1)
    # storing float8 ahead of time is the same cast DiffSynth does on load: identical pixels
    assert np.array_equal(_candidate_png(root), on_load)


# every kind of damage the thresholds were set against, at its default strength, falls outside the
# tiny checkpoint's thresholds (benchmarks/tiny_quality.py; the mildest are noise and scale)
@pytest.mark.parametrize("kind", THRESHOLD_KINDS)
def test_degraded_candidate_fails_with_metric_message(pytester: pytest.Pytester, baselined: Callable[..., Path],
                                                      tmp_path: Path, kind: Degradation) -> None:
    damaged = tmp_path / f"dit-{kind.value}.safetensors"
    save_file(degrade(load_file(str(ensure_tiny_checkpoint().dit)), kind), str(damaged))
    baselined(checkpoint_extra=_candidate_table(damaged))
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*float8_e4m3fn candidate differs from the bf16 golden:*", "*(threshold) FAIL*"])


def test_missing_candidate_file_is_a_clear_error(pytester: pytest.Pytester, baselined: Callable[..., Path],
                                                 tmp_path: Path) -> None:
    baselined(checkpoint_extra=_candidate_table(tmp_path / "nope.safetensors"))
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*checkpoint 'tiny' scheme 'float8_e4m3fn' DiT: file *nope.safetensors does not exist*"])


def test_pickle_candidate_is_refused(pytester: pytest.Pytester, baselined: Callable[..., Path],
                                    tmp_path: Path) -> None:
    pickle_file = tmp_path / "dit.ckpt"
    pickle_file.write_bytes(b"\x80\x04K\x01.")  # a valid pickle; must never be loaded
    baselined(checkpoint_extra=_candidate_table(pickle_file))
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*dit.ckpt is a pickle checkpoint; quant_guard loads only .safetensors*"])
