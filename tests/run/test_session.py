"""The session's pipeline: built lazily, once per checkpoint; the bf16 DiT only when a golden
must be rendered, and never beside the float8 one."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import weakref

import pytest
from helpers import ANY_IMAGE

from quant_guard.model import pipelines
from quant_guard.run.cases import TestOverrides, Verdict, VisualCase
from quant_guard.config.project import CaseSpec, CheckpointSpec, RenderDefaults, parse_config
from quant_guard.run.gate import run_case
from quant_guard.config.schemes import Scheme
from quant_guard.run.session import QuantGuardSession, RunSettings

CHECKPOINT = CheckpointSpec(id="tiny", embedded="tiny", components={}, device="cpu", thresholds=ANY_IMAGE,
                            render=RenderDefaults(steps=2, width=64, height=64))
CASES = [VisualCase(CHECKPOINT, CaseSpec(id=f"c{i}", prompt=p, seeds=(0, 1), steps=None, width=None, height=None,
                                         guidance=None, checkpoints=("tiny",)), seed)
         for i, p in enumerate(["a red circle", "a blue square"]) for seed in (0, 1)]


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Pipelines built ("build <scheme>") and DiTs swapped in ("swap <scheme>")."""
    counter: Counter[str] = Counter()
    real_build, real_swap = pipelines.build_pipeline, pipelines.swap_components

    def counting_build(checkpoint: Any, scheme: Scheme, device: str, **kwargs: Any) -> Any:
        counter[f"build {scheme.id}"] += 1
        return real_build(checkpoint, scheme, device, **kwargs)

    def counting_swap(pipe: Any, checkpoint: Any, scheme: Scheme, plan: Any, names: tuple[str, ...]) -> None:
        assert names == ("dit",), names  # these schemes quantize the DiT only
        counter[f"swap {scheme.id}"] += 1
        real_swap(pipe, checkpoint, scheme, plan, names)

    monkeypatch.setattr(pipelines, "build_pipeline", counting_build)
    monkeypatch.setattr(pipelines, "swap_components", counting_swap)
    return counter


def _session(tmp_path: Path, *, update: bool) -> QuantGuardSession:
    config = parse_config({}, file=tmp_path / "qg.toml")
    return QuantGuardSession(config, RunSettings(update_golden=update, golden_dir=tmp_path / "golden",
                                                 report_dir=tmp_path / "report"))


def test_one_pipeline_per_checkpoint_and_bf16_only_for_updates(tmp_path: Path, builds: Counter[str]) -> None:
    updating = _session(tmp_path, update=True)
    assert [run_case(updating, vc, TestOverrides()).verdict for vc in CASES] == [Verdict.UPDATED] * 4
    # one build; then one DiT swap per case, the DiT already loaded rendering first
    assert builds == Counter({"build bf16": 1, "swap float8_e4m3fn": 2, "swap bf16": 2})

    builds.clear()
    checking = _session(tmp_path, update=False)
    assert [run_case(checking, vc, TestOverrides()).verdict for vc in CASES] == [Verdict.PASSED] * 4
    assert builds == Counter({"build float8_e4m3fn": 1})  # checking never needs the bf16 reference


def test_an_update_run_never_holds_two_dits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every DiT DiffSynth loads, across two checkpoints and both precisions, is gone (its
    memory returned) before the next one is loaded; moving to the next checkpoint drops the
    previous pipeline."""
    from diffsynth.pipelines.flux_image import FluxImagePipeline

    loaded: list[weakref.ref[Any]] = []
    real = FluxImagePipeline.download_and_load_models

    def watched(self: Any, model_configs: Any, vram_limit: Any = None) -> Any:
        alive = [ref() for ref in loaded if ref() is not None]
        assert not alive, f"a DiT is loaded while another is still alive: {alive[0].__class__.__name__}"
        pool = real(self, model_configs, vram_limit)
        loaded.extend(weakref.ref(m) for m, name in zip(pool.model, pool.model_name) if name == "flux_dit")
        return pool

    monkeypatch.setattr(FluxImagePipeline, "download_and_load_models", watched)
    other = CheckpointSpec(id="tiny-b", embedded="tiny", components={}, device="cpu", thresholds=ANY_IMAGE,
                           render=RenderDefaults(steps=2, width=64, height=64))
    cases = CASES[:2] + [VisualCase(other, vc.case, vc.seed) for vc in CASES[:2]]
    session = _session(tmp_path, update=True)
    assert [run_case(session, vc, TestOverrides()).verdict for vc in cases] == [Verdict.UPDATED] * 4
    assert len(loaded) == 6  # per checkpoint: a build, then one swap per case
    assert sum(ref() is not None for ref in loaded) == 1
    session.release_pipelines()
    assert all(ref() is None for ref in loaded)


def test_a_missing_golden_builds_nothing(tmp_path: Path, builds: Counter[str]) -> None:
    result = run_case(_session(tmp_path, update=False), CASES[0], TestOverrides())
    assert result.verdict is Verdict.NO_GOLDEN
    assert builds == Counter()
