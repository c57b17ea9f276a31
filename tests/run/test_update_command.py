"""The command printed on a missing or stale golden, run as printed in a pytester project: it
selects exactly that test (``-s1`` is not ``-s10``), also for a gpu-marked checkpoint that the
project's ``addopts`` deselect."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

DESELECT_GPU = '''
[tool.pytest.ini_options]
addopts = "-m 'not gpu'"
'''


def printed_commands(result: pytest.RunResult, verb: str) -> dict[str, str]:
    """Test id -> the command printed after "<verb> with:" in its failure message."""
    found = {}
    for line in result.outlines:
        if f"{verb} with: " in line:
            command = line.split(f"{verb} with: ", 1)[1].strip()
            found[re.search(r"test_visual\[([^\]]+)\]", command).group(1)] = command  # type: ignore[union-attr]
    return found


def run_printed(pytester: pytest.Pytester, command: str) -> pytest.RunResult:
    words = shlex.split(command)
    assert words[0] == "pytest"
    return pytester.runpytest(*words[1:])


def test_printed_command_creates_exactly_that_gpu_golden(pytester: pytest.Pytester, qg_project: Callable[..., Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    # a gpu-marked checkpoint rendered on the CPU; the plugin only asks whether CUDA exists
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    pyproject = qg_project(seeds="[1, 10]", checkpoint_extra='marks = ["gpu"]') / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + DESELECT_GPU)
    assert pytester.runpytest().ret == pytest.ExitCode.NO_TESTS_COLLECTED  # addopts deselect gpu tests

    missing = pytester.runpytest("-m", "gpu")
    missing.assert_outcomes(failed=2)
    commands = printed_commands(missing, "Create it")
    assert set(commands) == {"tiny-red-circle-s1", "tiny-red-circle-s10"}
    command = commands["tiny-red-circle-s1"]
    assert command == "pytest --update-golden -m gpu 'test_visual.py::test_visual[tiny-red-circle-s1]'"

    # without its -m gpu the addopts would deselect it: the marker option is what makes it work
    without_marker = command.replace(" -m gpu", "")
    assert run_printed(pytester, without_marker).ret == pytest.ExitCode.NO_TESTS_COLLECTED

    created = run_printed(pytester, command)
    created.assert_outcomes(passed=1)
    created.stdout.fnmatch_lines(["quant_guard: goldens 1 created, 0 updated, 0 unchanged"])
    golden = pytester.path / "golden" / "tiny"
    assert sorted(p.name for p in golden.glob("*.png")) == ["red-circle-s1.png"]  # not s10
    pytester.runpytest("-m", "gpu").assert_outcomes(passed=1, failed=1)


def test_printed_command_rebaselines_a_stale_cpu_golden(pytester: pytest.Pytester,
                                                        qg_project: Callable[..., Path]) -> None:
    qg_project(seeds="[1, 10]")
    pytester.runpytest("--update-golden").assert_outcomes(passed=2)
    qg_project(seeds="[1, 10]", steps=5)
    stale = pytester.runpytest()
    stale.assert_outcomes(failed=2)
    command = printed_commands(stale, "Re-baseline")["tiny-red-circle-s1"]
    assert command == "pytest --update-golden 'test_visual.py::test_visual[tiny-red-circle-s1]'"  # no -m: not gpu
    updated = run_printed(pytester, command)
    updated.assert_outcomes(passed=1)
    updated.stdout.fnmatch_lines(["quant_guard: goldens 0 created, 1 updated, 0 unchanged"])
    after = pytester.runpytest("-v")
    after.assert_outcomes(passed=1, failed=1)
    after.stdout.fnmatch_lines(["*test_visual[[]tiny-red-circle-s1[]] PASSED*",
                                "*test_visual[[]tiny-red-circle-s10[]] FAILED*"])
