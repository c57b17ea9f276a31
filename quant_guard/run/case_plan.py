"""The plan of one visual test: everything the gate needs, resolved once before any render.

``plan_case`` reads the session (configuration, run settings, resolved checkpoint, device,
memory plan) and the test's markers, and returns one immutable ``CasePlan``. The gate then
runs golden -> render -> judge -> verdict -> record on the plan and asks the session only for
the pipeline that renders it (``run.gate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from quant_guard.config.limits import Budget, DriftTolerance, ReferenceMode
    from quant_guard.config.schemes import Scheme
    from quant_guard.config.thresholds import ExpectedSettings, Thresholds
    from quant_guard.model.families.base import ModelFamily
    from quant_guard.model.memory_plan import MemoryPlan
    from quant_guard.model.render import RenderRequest
    from quant_guard.run.cases import TestAddress, TestOverrides, VisualCase
    from quant_guard.run.session import QuantGuardSession
    from quant_guard.store.golden import GoldenStore


@dataclass(frozen=True)
class CasePlan:
    """One visual test, resolved: what to render, against which golden, judged by which limits."""

    case: VisualCase
    request: RenderRequest  # prompt, seed, size, steps, guidance, text length
    golden_parameters: Mapping[str, Any]  # what a golden is made with; any difference makes it stale
    store: GoldenStore
    device: str
    judge_device: str  # where the judge's measures run: the render's device, a GPU included
    memory_plan: MemoryPlan  # the candidate's: where each component lives
    thresholds: Thresholds  # package < embedded < checkpoint < scheme < case < marker < command line
    budget: Budget  # the checkpoint's limits < marker < command line
    step_time_refusal: str | None  # why a step-time limit cannot be judged on this device, or None
    reference_mode: ReferenceMode
    drift_tolerance: DriftTolerance
    expected: ExpectedSettings
    use_expected: bool  # judge against recorded expected metrics (the expected mode is on)
    update_golden: bool  # --update-golden: render and store instead of check
    force: bool  # --force-regen: rewrite goldens even within the drift tolerance
    golden_rendered: bool  # --update-golden: this run already wrote this case's golden (another scheme)
    render_order: tuple[Scheme, ...]  # --update-golden: the DiT already loaded renders first
    report_folder: Path  # where the case's images go
    rebaseline: str  # the command that re-baselines this case's golden (every scheme that shares it)


def plan_case(session: QuantGuardSession, vc: VisualCase, marker: TestOverrides,
              address: TestAddress | None = None) -> CasePlan:
    """Resolve ``vc`` for this run. Raises what resolving raises (``CheckpointError``,
    ``LpipsWeightsError``), before anything renders: a GPU run must not waste a render per case."""
    from quant_guard.config.schemes import REFERENCE
    from quant_guard.model.families import family_of

    session.require_lpips_weights()
    spec, settings = vc.checkpoint, session.settings
    resolved = session.resolved(spec)
    request = render_request(vc, resolved.t5_sequence_length)
    device = session.device(spec)
    budget = (spec.limits
              .override(peak_memory_bytes=marker.peak_memory_bytes, step_time_s=marker.step_time_s,
                        resident_memory_bytes=marker.resident_memory_bytes)
              .override(peak_memory_bytes=settings.max_peak_memory_bytes, step_time_s=settings.max_step_time_s,
                        resident_memory_bytes=settings.max_resident_memory_bytes))
    shares = budget.step_time_s is not None and session.placement.shares(device)
    order = (REFERENCE, vc.scheme)
    return CasePlan(
        case=vc, request=request,
        golden_parameters=golden_parameters(family_of(spec), request, session.reference_hashes(spec)),
        store=session.store, device=device, judge_device=judge_device(device), memory_plan=session.memory_plan(spec, vc.scheme),
        thresholds=_thresholds(session, vc, marker), budget=budget,
        step_time_refusal=session.placement.refusal(device) if shares else None,
        reference_mode=session.reference_mode, drift_tolerance=session.config.drift_tolerance,
        expected=session.config.expected,
        use_expected=settings.use_expected and session.config.expected.enabled,
        update_golden=settings.update_golden, force=settings.force,
        golden_rendered=vc.key in session.goldens_rendered,
        render_order=order[::-1] if session.loaded_scheme(spec) == vc.scheme else order,
        report_folder=session.report_dir / vc.report_folder,
        rebaseline=update_command(vc, address))


def judge_device(device: str) -> str:
    """Where the judge runs for a render on ``device``: there too (on a GPU runner the images'
    tensors stay on the GPU, and the judge costs a fraction of its CPU time)."""
    return device


def render_request(vc: VisualCase, t5_sequence_length: int) -> RenderRequest:
    """What the pipeline renders for ``vc``: its prompt and seed at the case's render settings."""
    from quant_guard.model.render import RenderRequest

    return RenderRequest(prompt=vc.case.prompt, seed=vc.seed, steps=vc.steps, width=vc.width, height=vc.height,
                         guidance=vc.guidance, t5_sequence_length=t5_sequence_length, frames=vc.frames, fps=vc.fps)


def golden_parameters(family: ModelFamily, request: RenderRequest,
                      checkpoint_hashes: Mapping[str, str]) -> dict[str, Any]:
    """The parameters a golden is made with (the family's: the request's fields it renders with,
    and its scheduler); any difference later makes it stale."""
    clip = {"fps": request.fps} if request.frames > 1 else {}  # a clip's playback rate (not a render key)
    return {**family.golden_parameters(request), **clip, "checkpoint_hashes": dict(checkpoint_hashes)}


def _thresholds(session: QuantGuardSession, vc: VisualCase, marker: TestOverrides) -> Thresholds:
    from quant_guard.config.thresholds import resolve_thresholds

    return resolve_thresholds(vc.configured_thresholds(session.config.thresholds), marker.thresholds,
                              session.settings.thresholds)


def update_command(vc: VisualCase, address: TestAddress | None) -> str:
    """The command that re-baselines ``vc``'s golden: the tests of every scheme of its case and
    seed, since a new golden drops every scheme's expected metrics."""
    if address is None:  # the gate called outside a pytest item: only the case ids are known
        return f'pytest --update-golden -k "{" or ".join(vc.golden_sharers)}"'
    return address.update_command(address.siblings(vc))
