"""An error the gate has no special case for (a render that breaks after a DiffSynth upgrade,
a bug in a budget check) is an ``error`` verdict with the exception, in the terminal,
results.json, the HTML report and the CI step summary, and the other tests go on."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import STRICT_CASE

ROOT = Path(__file__).resolve().parents[2]

BREAK_ONE_CASE = '''
import pytest

import quant_guard.run.gate


@pytest.fixture(autouse=True)
def _broken_budget_check(request, monkeypatch):
    """The strict case's budget check raises, as a bug there would (patched where the gate calls it)."""
    if "strict" in request.node.name:
        def broken(render, budget):
            raise KeyError("median_s")

        monkeypatch.setattr(quant_guard.run.gate, "check_budget", broken)
'''


def test_an_unexpected_error_reaches_every_artifact(pytester: pytest.Pytester,
                                                    qg_project: Callable[..., Path]) -> None:
    import quant_guard.run.gate

    qg_project(extra_case=STRICT_CASE)
    pytester.runpytest("--update-golden")  # the strict candidate fails its PSNR, its golden is written anyway
    pytester.makeconftest(BREAK_ONE_CASE)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*tiny-strict-s0: unexpected error: KeyError: 'median_s'*",
                                 "*traceback (innermost last):*"])
    assert quant_guard.run.gate.check_budget.__module__ == "quant_guard.judge.budgets"  # restored after the inner run

    records = {r["id"]: r for r in json.loads((pytester.path / "qg-report" / "results.json").read_text())["results"]}
    assert records["tiny-strict-s0"]["verdict"] == "error"
    assert "KeyError: 'median_s'" in records["tiny-strict-s0"]["reason"]
    assert records["tiny-red-circle-s0"]["verdict"] == "passed"
    html = (pytester.path / "qg-report" / "index.html").read_text()
    assert "unexpected error: KeyError: &#39;median_s&#39;" in html or "unexpected error: KeyError: 'median_s'" in html

    summary = subprocess.run([sys.executable, "-I", "-S", str(ROOT / "ci" / "step_summary.py"),
                              str(pytester.path / "qg-report")], capture_output=True, text=True)
    assert summary.returncode == 0, summary.stderr
    assert "(1 error, 1 passed)" in summary.stdout and "KeyError" in summary.stdout
