"""Shared by the issue-6 fault tests (test_faults*.py): the guard that the repository's
golden/ stays byte-identical, goldens rendered once per module, and the tiny checkpoint given
as separate component files that a test may damage."""

from __future__ import annotations

import hashlib
import shutil
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import REAL_CACHE, project_toml
from quant_guard.config import COMPONENTS, CheckpointSpec, ComponentSource, RenderDefaults
from quant_guard.golden import GoldenStore
from quant_guard.paths import CACHE_ENV

REPO_GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path (names, contents, nothing else)."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session", autouse=True)
def repository_goldens_untouched() -> Iterator[None]:
    """Done-criterion of issue 6, autouse in every module that imports it: after all the fault
    tests, the repository's golden/ is byte-identical to before (nothing written, renamed or
    deleted there)."""
    before = tree_digest(REPO_GOLDEN)
    yield
    assert tree_digest(REPO_GOLDEN) == before, "a fault test changed the repository's golden/ directory"


def gradient(width: int = 64, height: int = 64) -> np.ndarray:
    """A uint8 RGB image with every pixel level used: a stand-in golden."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 4 % 256, y * 4 % 256, (x + y) * 2 % 256], axis=2).astype(np.uint8)


# ---- goldens rendered once, in this process -------------------------------------------------

@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, _heavy_modules: None) -> Callable[..., Path]:
    """``baseline(seeds="[0, 1]", steps=4)`` -> a golden directory for ``project_toml`` with
    those keywords, made by the gate's own update path (what ``--update-golden`` writes).
    Cached per configuration; copy it, never modify it."""
    from quant_guard.cases import TestOverrides, expand_cases
    from quant_guard.config import parse_config
    from quant_guard.gate import run_case
    from quant_guard.session import QuantGuardSession, RunSettings

    made: dict[str, Path] = {}

    def make(**kwargs: str | int) -> Path:
        text = project_toml(**kwargs)  # type: ignore[arg-type]
        if text not in made:
            root = tmp_path_factory.mktemp("baseline")
            config = parse_config(tomllib.loads(text)["tool"]["quant_guard"], file=root / "pyproject.toml")
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv(CACHE_ENV, str(REAL_CACHE))
                session = QuantGuardSession(config, RunSettings(update_golden=True))
                try:
                    for vc in expand_cases(config):
                        result = run_case(session, vc, TestOverrides())
                        assert result.passed, result.reason
                finally:
                    session.release_pipelines()
            made[text] = config.golden_dir
        return made[text]

    return make


def install_goldens(baseline_dir: Path, project: Path) -> GoldenStore:
    """Copy baseline goldens into a pytester project; the store of the copy."""
    shutil.copytree(baseline_dir, project / "golden", dirs_exist_ok=True)
    return GoldenStore(project / "golden")


# ---- the tiny checkpoint as component files -----------------------------------------------------

@pytest.fixture
def tiny_files(tmp_path: Path) -> dict[str, Path]:
    """The embedded tiny checkpoint as a checkpoint given by components: links to the cached
    files in a folder of this test, where a test may replace one with a damaged file."""
    from quant_guard.tiny.build import ensure_tiny_checkpoint

    tiny = ensure_tiny_checkpoint()
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    files = {}
    for name in COMPONENTS:
        files[name] = folder / (name if name.startswith("tokenizer") else f"{name}.safetensors")
        files[name].symlink_to(getattr(tiny, name))
    return files


def spec_for(files: dict[str, Path], *, candidate: Path | None = None, checkpoint_id: str = "broken") -> CheckpointSpec:
    """A checkpoint named ``broken`` given by these component files (and candidate DiT)."""
    from quant_guard.tiny.dataset import T5_SEQUENCE_LENGTH

    return CheckpointSpec(id=checkpoint_id, embedded=None,
                          components={k: ComponentSource(path=v) for k, v in files.items()},
                          candidate_dit=ComponentSource(path=candidate) if candidate else None, device="cpu",
                          t5_sequence_length=T5_SEQUENCE_LENGTH, render=RenderDefaults(steps=4, width=64, height=64))


def replace_file(files: dict[str, Path], name: str, data: bytes, suffix: str = ".safetensors") -> Path:
    """Put ``data`` where component ``name`` was (a new file, the cached original untouched)."""
    files[name].unlink()
    files[name] = files[name].with_suffix(suffix)
    files[name].write_bytes(data)
    return files[name]
