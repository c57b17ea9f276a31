"""Start-up noise: the libraries' non-actionable messages do not reach a user's run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import VISUAL_TEST, project_toml

LOAD_BACKENDS = "import diffsynth.core.quant as q; q.backends.load_all_backends()"


@pytest.mark.slow
def test_torchaos_deprecation_warnings_are_lowered(tmp_path: Path) -> None:
    """Without quiet_library_noise, loading DiffSynth's quantization backends prints torch's
    deprecation warnings for torchao's enums; a pytest run with the plugin (whose scheme probe
    loads them at collection) prints none."""
    (tmp_path / "pyproject.toml").write_text(project_toml(checkpoint_extra='schemes = ["torchao_int8_w8a16"]'))
    (tmp_path / "test_visual.py").write_text(VISUAL_TEST)
    # the two processes are independent and mostly import torch: side by side they take the time of one
    pipe = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    bare = subprocess.Popen([sys.executable, "-c", LOAD_BACKENDS], **pipe)  # type: ignore[call-overload]
    with_plugin = subprocess.Popen([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                                   cwd=tmp_path, **pipe)  # type: ignore[call-overload]
    bare_err = bare.communicate()[1]
    out, err = with_plugin.communicate()
    assert bare.returncode == 0, bare_err
    assert "KernelPreference" in bare_err  # what a user saw on every start
    assert with_plugin.returncode == 0, out + err
    assert "test_visual[tiny-torchao_int8_w8a16-red-circle-s0]" in out
    assert "_pytree" not in out + err and "gemm_4bit" not in out + err
