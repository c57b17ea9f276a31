"""Fixtures for the plugin's own tests: a throw-away pytest project (``pytester``) that uses
quant_guard on the embedded tiny checkpoint."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from quant_guard.paths import CACHE_ENV, cache_dir

# pytester points HOME at a temporary folder; the inner runs must still find the tiny checkpoint
# and the LPIPS weights in the real cache instead of rebuilding (or missing) them.
REAL_CACHE = cache_dir()


@pytest.fixture(autouse=True)
def _shared_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(REAL_CACHE))


VISUAL_TEST = '''
def test_visual(qg_case, qg_gate):
    qg_gate.check(qg_case)
'''


# A case no candidate can pass (PSNR >= 150 dB): a deterministic failure beside passing cases.
STRICT_CASE = '''
[[tool.quant_guard.cases]]
id = "strict"
prompt = "a yellow triangle on a black background"
seeds = [0]
checkpoints = ["tiny"]
thresholds = { psnr = 150.0 }
'''


def project_toml(*, steps: int = 4, seeds: str = "[0]", extra_checkpoint: str = "", extra_case: str = "",
                 checkpoint_extra: str = "") -> str:
    """A [tool.quant_guard] configuration with one tiny checkpoint and one case."""
    return textwrap.dedent(f"""
        [tool.quant_guard]
        golden_dir = "golden"
        report_dir = "qg-report"

        [[tool.quant_guard.checkpoints]]
        id = "tiny"
        embedded = "tiny"
        device = "cpu"
        render = {{ steps = {steps}, size = "64x64" }}
        {checkpoint_extra}
        {extra_checkpoint}

        [[tool.quant_guard.cases]]
        id = "red-circle"
        prompt = "a red circle on a blue background at the top left"
        seeds = {seeds}
        checkpoints = ["tiny"]
        {extra_case}
        """)


@pytest.fixture(scope="session")
def _heavy_modules() -> None:
    """Import torch & co. in the outer process first. An in-process pytester run removes the
    modules it imported when it ends, and torch's C extension cannot be imported twice in one
    process (the second import crashes), so they must already be loaded before the first run."""
    import diffsynth.pipelines.flux_image  # noqa: F401
    import lpips  # noqa: F401
    import skimage.metrics  # noqa: F401
    import torch  # noqa: F401

    import quant_guard.gate  # noqa: F401
    import quant_guard.metrics  # noqa: F401
    import quant_guard.pipelines  # noqa: F401
    import quant_guard.render  # noqa: F401
    import quant_guard.tiny.architecture  # noqa: F401


@pytest.fixture
def qg_project(pytester: pytest.Pytester, _heavy_modules: None) -> Callable[..., Path]:
    """Write pyproject.toml (from ``project_toml`` keywords) and a visual test into the pytester
    folder; returns the folder. Call again to rewrite the configuration."""

    def make(**kwargs: str | int) -> Path:
        pytester.makefile(".toml", pyproject=project_toml(**kwargs))  # type: ignore[arg-type]
        pytester.makepyfile(test_visual=VISUAL_TEST)
        return pytester.path

    return make
