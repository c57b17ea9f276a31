"""Start-up noise: the libraries' non-actionable messages do not reach a user's run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import VISUAL_TEST, project_toml

LOAD_BACKENDS = "import diffsynth.core.quant as q; q.backends.load_all_backends()"


def _stderr(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr


@pytest.mark.slow
def test_torchaos_deprecation_warnings_are_lowered(tmp_path: Path) -> None:
    """Without quiet_library_noise, loading DiffSynth's quantization backends prints torch's
    deprecation warnings for torchao's enums; a pytest run with the plugin (whose scheme probe
    loads them at collection) prints none."""
    assert "KernelPreference" in _stderr(LOAD_BACKENDS)  # what a user saw on every start
    (tmp_path / "pyproject.toml").write_text(project_toml(checkpoint_extra='schemes = ["torchao_int8_w8a16"]'))
    (tmp_path / "test_visual.py").write_text(VISUAL_TEST)
    run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "test_visual[tiny-torchao_int8_w8a16-red-circle-s0]" in run.stdout
    assert "_pytree" not in run.stdout + run.stderr and "gemm_4bit" not in run.stdout + run.stderr
