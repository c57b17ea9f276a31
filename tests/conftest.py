"""Fixtures for the plugin's own tests: a throw-away pytest project (``pytester``) that uses
quant_guard on the embedded tiny checkpoint, goldens made once per module, the tiny checkpoint as
component files, and a guard that no test touches the repository's golden/."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import REAL_CACHE, REPO_GOLDEN, VISUAL_TEST, install_goldens, make_goldens, project_toml, tree_digest

from quant_guard.config.families import FAMILIES
from quant_guard.store.paths import CACHE_ENV


@pytest.fixture(autouse=True)
def _shared_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(REAL_CACHE))


@pytest.fixture(scope="session", autouse=True)
def repository_goldens_untouched(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the whole session the repository's golden/ is byte-identical to before: no test
    (fault tests included) writes, renames or deletes anything there. A re-baseline of the
    repository's own visual suite (``pytest tests/visual --update-golden``) writes there on purpose."""
    if request.config.getoption("update_golden"):
        yield
        return
    before = tree_digest(REPO_GOLDEN)
    yield
    assert tree_digest(REPO_GOLDEN) == before, "a test changed the repository's golden/ directory"


@pytest.fixture(scope="session")
def _heavy_modules() -> None:
    """Import torch & co. in the outer process first. An in-process pytester run removes the
    modules it imported when it ends, and torch's C extension cannot be imported twice in one
    process (the second import crashes), so they must already be loaded before the first run."""
    import diffsynth.pipelines.flux_image  # noqa: F401
    import lpips  # noqa: F401
    import skimage.metrics  # noqa: F401
    import torch  # noqa: F401

    import quant_guard.run.gate  # noqa: F401
    import quant_guard.judge.metrics  # noqa: F401
    import quant_guard.model.pipelines  # noqa: F401
    import quant_guard.model.render  # noqa: F401
    import quant_guard.model.tiny.architecture  # noqa: F401
    # Not required, but imported again by every in-process run that finds them missing (the run
    # removes them when it ends): hypothesis (its pytest plugin imports it, about 1 s) and the
    # report's modules.
    import hypothesis  # noqa: F401

    import quant_guard.model.scheme_probe  # noqa: F401
    import quant_guard.report.html  # noqa: F401
    import quant_guard.run.case_record  # noqa: F401


@pytest.fixture
def qg_project(pytester: pytest.Pytester, _heavy_modules: None) -> Callable[..., Path]:
    """Write pyproject.toml (from ``project_toml`` keywords) and a visual test into the pytester
    folder; returns the folder. Call again to rewrite the configuration."""

    def make(**kwargs: str | int) -> Path:
        pytester.makefile(".toml", pyproject=project_toml(**kwargs))  # type: ignore[arg-type]
        pytester.makepyfile(test_visual=VISUAL_TEST)
        return pytester.path

    return make


@pytest.fixture(scope="session")
def baseline(tmp_path_factory: pytest.TempPathFactory, _heavy_modules: None) -> Callable[..., Path]:
    """``baseline(seeds="[0, 1]", steps=4)`` -> a golden directory for ``project_toml`` with
    those keywords, made by the gate's own update path (what ``--update-golden`` writes: the same
    files, the sidecar's creation time aside). Cached per configuration for the whole session;
    copy it (``install_goldens``), never modify it."""
    made: dict[str, Path] = {}

    def make(**kwargs: str | int) -> Path:
        text = project_toml(**kwargs)  # type: ignore[arg-type]
        if text not in made:
            root = tmp_path_factory.mktemp("baseline")
            for result in make_goldens(text, root):
                assert result.passed, result.reason
            made[text] = root / tomllib.loads(text)["tool"]["quant_guard"]["golden_dir"]
        return made[text]

    return make


@pytest.fixture
def baselined(pytester: pytest.Pytester, qg_project: Callable[..., Path],
              baseline: Callable[..., Path]) -> Callable[..., Path]:
    """A project whose golden has been created (the session's ``baseline()``, installed); call it
    with project_toml keywords to rewrite the configuration afterwards (thresholds are not render
    parameters, so nothing goes stale)."""
    install_goldens(baseline(), qg_project())
    return qg_project


@pytest.fixture
def tiny_files(tmp_path: Path) -> dict[str, Path]:
    """The embedded tiny checkpoint as a checkpoint given by components: links to the cached
    files in a folder of this test, where a test may replace one with a damaged file."""
    from quant_guard.model.tiny.build import ensure_tiny_checkpoint

    tiny = ensure_tiny_checkpoint()
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    files = {}
    for name in FAMILIES["flux"].components:
        files[name] = folder / (name if name.startswith("tokenizer") else f"{name}.safetensors")
        files[name].symlink_to(getattr(tiny, name))
    return files


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for every browser test of the session: Playwright's sync API runs
    an event loop while it is open, so a second one could not start beside it."""
    from report_browser import chromium, require_browser

    require_browser()
    with chromium() as b:
        yield b
