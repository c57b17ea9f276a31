"""Session-scoped pipelines: built lazily, at most once per session, the bf16 reference only
when a golden must be rendered."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from quant_guard import pipelines
from quant_guard.cases import TestOverrides, Verdict, VisualCase
from quant_guard.config import CaseSpec, CheckpointSpec, RenderDefaults, parse_config
from quant_guard.gate import run_case
from quant_guard.session import QuantGuardSession, RunSettings

CHECKPOINT = CheckpointSpec(id="tiny", embedded="tiny", components={}, device="cpu",
                            render=RenderDefaults(steps=2, width=64, height=64))
CASES = [VisualCase(CHECKPOINT, CaseSpec(id=f"c{i}", prompt=p, seeds=(0, 1), steps=None, width=None, height=None,
                                         guidance=None, checkpoints=("tiny",)), seed)
         for i, p in enumerate(["a red circle", "a blue square"]) for seed in (0, 1)]


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    counter: Counter[str] = Counter()
    real = pipelines.build_pipeline

    def counting(checkpoint: Any, precision: pipelines.Precision, device: str, **kwargs: Any) -> Any:
        counter[precision.value] += 1
        return real(checkpoint, precision, device, **kwargs)

    monkeypatch.setattr(pipelines, "build_pipeline", counting)
    return counter


def _session(tmp_path: Path, *, update: bool) -> QuantGuardSession:
    config = parse_config({}, file=tmp_path / "qg.toml")
    return QuantGuardSession(config, RunSettings(update_golden=update, golden_dir=tmp_path / "golden",
                                                 report_dir=tmp_path / "report"))


def test_each_pipeline_is_built_once_and_bf16_only_for_updates(tmp_path: Path, builds: Counter[str]) -> None:
    updating = _session(tmp_path, update=True)
    assert [run_case(updating, vc, TestOverrides()).verdict for vc in CASES] == [Verdict.UPDATED] * 4
    assert builds == Counter({"bf16": 1, "float8_e4m3fn": 1})

    builds.clear()
    checking = _session(tmp_path, update=False)
    assert [run_case(checking, vc, TestOverrides()).verdict for vc in CASES] == [Verdict.PASSED] * 4
    assert builds == Counter({"float8_e4m3fn": 1})  # checking never needs the bf16 reference


def test_a_missing_golden_builds_nothing(tmp_path: Path, builds: Counter[str]) -> None:
    result = run_case(_session(tmp_path, update=False), CASES[0], TestOverrides())
    assert result.verdict is Verdict.NO_GOLDEN
    assert builds == Counter()
