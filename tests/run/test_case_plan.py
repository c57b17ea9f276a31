"""A case is resolved once into an immutable plan before any render; the gate then runs on the
plan and asks the session only for the pipeline."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from helpers import ANY_IMAGE

from quant_guard.config.project import CaseSpec, CheckpointSpec, RenderDefaults, parse_config
from quant_guard.config.limits import Budget
from quant_guard.config.schemes import REFERENCE
from quant_guard.config.thresholds import ThresholdOverrides
from quant_guard.run import case_plan, gate
from quant_guard.run.case_plan import CasePlan, plan_case
from quant_guard.run.cases import TestAddress, TestOverrides, Verdict, VisualCase
from quant_guard.run.session import QuantGuardSession, RunSettings

CHECKPOINT = CheckpointSpec(id="tiny", embedded="tiny", components={}, device="cpu", thresholds=ANY_IMAGE,
                            render=RenderDefaults(steps=2, width=64, height=64),
                            limits=Budget(peak_memory_bytes=10 * 2**30, step_time_s=60.0))
CASE = VisualCase(CHECKPOINT, CaseSpec(id="c", prompt="a red circle on a blue background", seeds=(0,), steps=None,
                                       width=None, height=None, guidance=None, checkpoints=("tiny",)), 0)


def _session(tmp_path: Path, *, update: bool, **settings: Any) -> QuantGuardSession:
    config = parse_config({}, file=tmp_path / "qg.toml")
    return QuantGuardSession(config, RunSettings(update_golden=update, golden_dir=tmp_path / "golden",
                                                 report_dir=tmp_path / "report", **settings))


def test_the_plan_holds_every_override_and_cannot_change(tmp_path: Path) -> None:
    session = _session(tmp_path, update=False, max_step_time_s=5.0,
                       thresholds=ThresholdOverrides(psnr=30.0))
    marker = TestOverrides(thresholds=ThresholdOverrides(lpips=0.2, psnr=20.0), step_time_s=9.0,
                           resident_memory_bytes=2**30)
    address = TestAddress("tests/visual/test_visual_gate.py", "test_visual[tiny-c-s0]")
    plan = plan_case(session, CASE, marker, address)
    assert isinstance(plan, CasePlan)
    # limits after every override: checkpoint < marker < command line
    assert plan.budget == Budget(peak_memory_bytes=10 * 2**30, step_time_s=5.0, resident_memory_bytes=2**30)
    assert (plan.thresholds.lpips_max, plan.thresholds.psnr_min) == (0.2, 30.0)
    assert (plan.request.prompt, plan.request.seed, plan.request.steps, plan.request.width) == (
        CASE.case.prompt, 0, 2, 64)
    assert plan.golden_parameters["checkpoint_hashes"] == session.reference_hashes(CHECKPOINT)
    assert plan.report_folder == tmp_path / "report" / CASE.report_folder
    assert plan.rebaseline == "pytest --update-golden 'tests/visual/test_visual_gate.py::test_visual[tiny-c-s0]'"
    assert plan.render_order == (REFERENCE, CASE.scheme) and not plan.golden_rendered
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.budget = Budget()  # type: ignore[misc]


class _Watched:
    """The real session, with a log of what is asked of it once the case is planned."""

    def __init__(self, session: QuantGuardSession) -> None:
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "asked", set())
        object.__setattr__(self, "planned", False)

    def __getattr__(self, name: str) -> Any:
        if self.planned:
            self.asked.add(name)
        return getattr(self._session, name)


@pytest.mark.parametrize("update", [True, False], ids=["update", "check"])
def test_after_planning_the_gate_asks_the_session_only_for_the_pipeline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, update: bool) -> None:
    if not update:  # a golden to check against
        assert gate.run_case(_session(tmp_path, update=True), CASE, TestOverrides()).verdict is Verdict.UPDATED
    watched = _Watched(_session(tmp_path, update=update))
    real_plan_case = case_plan.plan_case

    def planning(session: Any, vc: VisualCase, marker: TestOverrides, address: Any = None) -> CasePlan:
        plan = real_plan_case(session._session, vc, marker, address)
        object.__setattr__(session, "planned", True)
        return plan

    monkeypatch.setattr(gate, "plan_case", planning)
    result = gate.run_case(watched, CASE, TestOverrides())  # type: ignore[arg-type]
    assert result.verdict is (Verdict.UPDATED if update else Verdict.PASSED), result.reason
    # the pipeline (and its live progress), and the outcome handed back as the last step
    assert watched.asked <= {"pipeline", "progress", "record_update"}, watched.asked
    assert "pipeline" in watched.asked and "record_update" in watched.asked


def test_an_update_record_reaches_the_run_summary(tmp_path: Path) -> None:
    session = _session(tmp_path, update=True)
    assert gate.run_case(session, CASE, TestOverrides()).verdict is Verdict.UPDATED
    assert CASE.key in session.goldens_rendered
    assert "1 created" in session.update_summary()
    assert session.expected_summary()[0].startswith("quant_guard: expected metrics 1 recorded")
    # the same golden again in this run: only the candidate renders, against the golden just written
    again = plan_case(session, CASE, TestOverrides())
    assert again.golden_rendered
