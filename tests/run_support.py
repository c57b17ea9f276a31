"""End-to-end pytest runs in fresh processes, made once and read by several tests: each process
pays the torch + DiffSynth import again (issue 33), so a scenario runs once per session
(fixtures in tests/run/conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from helpers import REAL_CACHE, STRICT_CASE, VISUAL_TEST, make_goldens, project_toml

from quant_guard.store.paths import CACHE_ENV

if TYPE_CHECKING:
    from quant_guard.run.cases import CaseResult

# the outer run's settings that must not reach an inner run
_OUTER_ENV = ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_CURRENT_TEST")


def run_pytest(root: Path, *args: str) -> pytest.RunResult:
    """``python -m pytest`` in ``root`` in a fresh process, as ``pytester.runpytest_subprocess``
    runs it (its own basetemp and HOME), with the real cache and one thread per process (two
    xdist workers fit two cores)."""
    env = {k: v for k, v in os.environ.items() if k not in _OUTER_ENV}
    env.update({CACHE_ENV: str(REAL_CACHE), "OMP_NUM_THREADS": "1", "HOME": str(root), "PY_COLORS": "0",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))})
    basetemp = root / f"basetemp-{len(list(root.glob('basetemp-*')))}"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", f"--basetemp={basetemp}", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    return pytest.RunResult(done.returncode, done.stdout.splitlines(), done.stderr.splitlines(),
                            time.monotonic() - started)


def read_results(report: Path) -> dict[str, Any]:
    """The results.json in the report folder ``report``."""
    data: dict[str, Any] = json.loads((report / "results.json").read_text(encoding="utf-8"))
    return data


@dataclass(frozen=True)
class XdistCheck:
    """One project (red-circle seeds 0-2 and a strict case no candidate passes) checked after its
    goldens were made: without xdist ("serial"), on two workers ("xdist"), and on two workers
    with a step-time limit, red-circle seeds 0 and 1 only ("refused"). Each run writes its report
    to the folder of its name under ``root``."""

    root: Path
    update: list[CaseResult]  # the goldens, made in the calling process
    serial: pytest.RunResult
    parallel: pytest.RunResult
    refused: pytest.RunResult

    def results(self, run: str) -> dict[str, Any]:
        """The results.json of the run ``run`` ("serial", "xdist", "refused")."""
        return read_results(self.root / run)


def check_under_xdist(root: Path) -> XdistCheck:
    """Write the project into ``root``, make its goldens here (no torch import to pay), then run
    its three checks."""
    text = project_toml(seeds="[0, 1, 2]", steps=2, extra_case=STRICT_CASE)
    (root / "pyproject.toml").write_text(text, encoding="utf-8")
    (root / "test_visual.py").write_text(VISUAL_TEST, encoding="utf-8")
    update = make_goldens(text, root)

    def run(*args: str) -> pytest.RunResult:
        return run_pytest(root, "-p", "no:cacheprovider", *args)

    return XdistCheck(root, update,
                      serial=run("--qg-report-dir", "serial"),
                      parallel=run("-n", "2", "--qg-report-dir", "xdist"),
                      refused=run("-n", "2", "--qg-max-step-time", "10 min", "--qg-report-dir", "refused",
                                  "-k", "red-circle-s0 or red-circle-s1"))


@dataclass(frozen=True)
class XdistUpdate:
    """One project (red-circle seeds 0-3) whose goldens ``--update-golden -n 2`` wrote ("first"),
    then checked and kept by a second ``--update-golden -n 2`` ("again"). ``first_golden`` is a
    copy of golden/ as the first run left it; each run's report is in the folder of its name."""

    root: Path
    first: pytest.RunResult
    first_golden: Path
    again: pytest.RunResult

    def results(self, run: str) -> dict[str, Any]:
        """The results.json of the run ``run`` ("first", "again")."""
        return read_results(self.root / run)


def update_under_xdist(root: Path) -> XdistUpdate:
    """Write the project into ``root`` and run its two parallel updates."""
    text = project_toml(seeds="[0, 1, 2, 3]", steps=2)
    (root / "pyproject.toml").write_text(text, encoding="utf-8")
    (root / "test_visual.py").write_text(VISUAL_TEST, encoding="utf-8")

    def update(name: str) -> pytest.RunResult:
        return run_pytest(root, "--update-golden", "-n", "2", "--qg-report-dir", name, "-p", "no:cacheprovider")

    first = update("first")
    first_golden = shutil.copytree(root / "golden", root.parent / f"{root.name}-first-golden")
    return XdistUpdate(root, first, first_golden, update("again"))
