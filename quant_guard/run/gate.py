"""The visual gate for one case, on its plan (``run.case_plan``): golden -> render -> judge ->
verdict -> record. With ``--update-golden``: render the bf16 reference and the candidate, store
the golden and the candidate's expected metrics.

Returns a ``CaseResult``; the plugin turns a failed one into a test failure whose message has
one line per metric against its limit, then the image paths. The session is asked only for the
pipeline (``_Renderer``) and told the outcome at the end (``session.record_update``).
"""

from __future__ import annotations

import traceback
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant_guard.config.limits import ReferenceMode
from quant_guard.config.schemes import REFERENCE, Scheme
from quant_guard.judge.budgets import BudgetNotMeasurable, check_budget
from quant_guard.judge.checks import limit_words
from quant_guard.judge.drift import (Comparison, DriftCheck, DriftOutcome, closeness_checks, explain, tolerance_checks,
                                     within_tolerance)
from quant_guard.judge.judgement import compare, judge, judge_checks, meaning_unavailable
from quant_guard.judge.semantic import ScorerUnavailable
from quant_guard.judge.text import OcrUnavailable, TextExpectation
from quant_guard.model.checkpoints import CheckpointError
from quant_guard.run.case_plan import CasePlan, plan_case
from quant_guard.run.cases import CaseResult, TestAddress, TestOverrides, UpdateRecord, Verdict, VisualCase
from quant_guard.store.atomic import atomic_write
from quant_guard.store.fingerprint import FieldDifference, differences, environment
from quant_guard.store.golden import GoldenCorrupt, GoldenMissing, WriteOutcome, encode_clip, encode_png, stale_fields

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from quant_guard.judge.checks import MetricCheck
    from quant_guard.judge.metrics import ImageMetrics
    from quant_guard.judge.scorecard import Scorecard
    from quant_guard.model.render import Render
    from quant_guard.run.session import QuantGuardSession
    from quant_guard.store.golden import Golden, GoldenStore

# A candidate whose pixel values span fewer levels than this is "constant" (e.g. all black).
MIN_DYNAMIC_RANGE = 4



def run_case(session: QuantGuardSession, vc: VisualCase, marker: TestOverrides,
             address: TestAddress | None = None) -> CaseResult:
    """The verdict of one visual test; every outcome, errors included, is a ``CaseResult``."""
    import torch

    from quant_guard.judge.lpips_weights import LpipsWeightsError
    from quant_guard.model.pipelines import LoadOutOfMemory, is_out_of_memory

    plan: CasePlan | None = None
    update = UpdateRecord()
    try:
        plan = plan_case(session, vc, marker, address)  # before any render
        render = _Renderer(session, plan)
        if plan.update_golden:
            result, update = _update(plan, render)
        else:
            result = _check(plan, render)
    except (CheckpointError, LpipsWeightsError, BudgetNotMeasurable) as exc:
        result = CaseResult(vc, Verdict.ERROR, str(exc))
    except ScorerUnavailable as exc:
        result = CaseResult(vc, Verdict.ERROR, meaning_unavailable(exc))
    except OcrUnavailable as exc:
        result = CaseResult(vc, Verdict.ERROR, f"the text check (expect_text) cannot run: {exc}")
    except LoadOutOfMemory as exc:
        traceback.clear_frames(exc.__traceback__)
        result = _out_of_memory(session, vc, plan, exc.what, exc.error)
    except (torch.OutOfMemoryError, MemoryError) as exc:
        result = _out_of_memory(session, vc, plan, "rendering", exc)
    except Exception as exc:  # noqa: BLE001 - every outcome must reach results.json and the report
        result = (_out_of_memory(session, vc, plan, "rendering", exc) if is_out_of_memory(exc)
                  else CaseResult(vc, Verdict.ERROR, unexpected_error(exc)))
    session.record_update(vc.key, update)
    return result


class _Renderer:
    """Renders the plan's request with the checkpoint's pipeline holding one scheme's DiT (the
    bf16 reference or a candidate), with live progress when the plugin shows it. What the gate
    asks of the session: the pipeline, and that it goes with an error."""

    def __init__(self, session: QuantGuardSession, plan: CasePlan) -> None:
        self._session, self._plan = session, plan

    def __call__(self, scheme: Scheme) -> Render:
        from quant_guard.model.render import render

        vc, progress = self._plan.case, self._session.progress
        on_step = progress.for_render(f"{vc.id} ({scheme.id})") if progress else None
        pipe = self._session.pipeline(vc.checkpoint, scheme)
        try:
            return render(pipe, self._plan.request, on_step=on_step)
        except BaseException as exc:
            del pipe  # this frame's reference too: the pipeline must go with the error
            self._session.after_error(exc)
            raise


def _load(store: GoldenStore, vc: VisualCase) -> Golden:
    """The case's golden: its image, or its clip of ``vc.frames`` frames."""
    return store.load(vc.key, width=vc.width, height=vc.height, frames=vc.frames)


def golden_for(session: QuantGuardSession, vc: VisualCase) -> tuple[Golden, WriteOutcome | None]:
    """The case's golden for a tool outside the test run (the sensitivity sweep): loaded from the
    store, or rendered with the bf16 reference and stored as ``--update-golden`` would when there
    is none (CREATED). An existing golden is never rewritten: a stale or damaged one is a
    ``GoldenError`` that says how to re-baseline."""
    from quant_guard.store.golden import GoldenError

    plan = plan_case(session, vc, TestOverrides())
    store = plan.store
    try:
        golden = _load(store, vc)
    except GoldenMissing:
        reference = _Renderer(session, plan)(REFERENCE)
        problem = _degenerate(reference)
        if problem:
            raise GoldenError(f"{vc.id}: the bf16 reference render is {problem}; no golden written") from None
        outcome = store.write(vc.key, reference.pixels, _golden_metadata(plan), None)
        return _load(store, vc), outcome
    except GoldenCorrupt as exc:
        raise GoldenError(f"{exc}. Re-create it with: {plan.rebaseline}") from None
    stale = stale_fields(golden.metadata, plan.golden_parameters)
    if stale:
        raise GoldenError(_stale_message(golden, stale, plan.rebaseline))
    return golden, None


def _golden_metadata(plan: CasePlan) -> dict[str, Any]:
    """The sidecar of a golden rendered here: how it was made, and on what."""
    return {**plan.golden_parameters, "environment": environment(plan.device)}


def _stale_message(golden: Golden, stale: list[str], rebaseline: str) -> str:
    return (f"golden {display_path(golden.png)} is stale, made with other parameters:\n  " + "\n  ".join(stale)
            + f"\nRe-baseline with: {rebaseline}")


# How much of an unexpected error's traceback the verdict keeps (innermost frames).
TRACEBACK_FRAMES = 12


def unexpected_error(exc: BaseException) -> str:
    """The message of an error verdict for an exception the gate has no special case for (a
    DiffSynth upgrade that breaks the render, a bug): its type and message first, then the
    innermost frames, so that results.json and the report carry what a traceback would."""
    frames = "".join(traceback.format_tb(exc.__traceback__)[-TRACEBACK_FRAMES:]).rstrip()
    head = f"unexpected error: {type(exc).__name__}: {exc}"
    return f"{head}\n  traceback (innermost last):\n" + "\n".join("  " + line for line in frames.splitlines())


def _out_of_memory(session: QuantGuardSession, vc: VisualCase, plan: CasePlan | None, stage: str,
                   exc: BaseException) -> CaseResult:
    """An out-of-memory verdict with the figures; everything is released so that the following
    tests start from a clean device."""
    device = plan.device if plan is not None else session.device(vc.checkpoint)
    figures = _memory_figures(device)
    memory_plan = plan.memory_plan if plan is not None else session.memory_plan(vc.checkpoint, vc.scheme)
    session.discard_after_error(exc)
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    return CaseResult(vc, Verdict.OUT_OF_MEMORY,
                      f"out of memory while {stage} ({type(exc).__name__}: {first_line})\n  {figures}\n"
                      f"  memory plan: {memory_plan.describe()}\n  pipelines released; the next test rebuilds them",
                      memory_plan=memory_plan)


def _memory_figures(device: str) -> str:
    import torch

    from quant_guard.model.host_memory import rss_field
    from quant_guard.config.units import format_bytes

    if device.startswith("cuda"):
        free, total = torch.cuda.mem_get_info(device)
        return (f"allocated {format_bytes(torch.cuda.memory_allocated())}, reserved "
                f"{format_bytes(torch.cuda.memory_reserved())}, peak {format_bytes(torch.cuda.max_memory_allocated())}, "
                f"device free {format_bytes(free)} of {format_bytes(total)}")
    rss, peak = rss_field("VmRSS"), rss_field("VmHWM")
    return f"host RSS {format_bytes(rss or 0)}, peak RSS {format_bytes(peak or 0)}"


def _check(plan: CasePlan, render: Callable[[Scheme], Render]) -> CaseResult:
    vc, store = plan.case, plan.store
    try:  # golden
        golden = _load(store, vc)
        recorded = store.load_expected_with_scorecard(vc.key, vc.expected_name) if plan.use_expected else None
        expected, expected_scorecard = recorded if recorded is not None else (None, None)
    except GoldenMissing as exc:
        return CaseResult(vc, Verdict.NO_GOLDEN, f"{exc}. Create it with: {plan.rebaseline}")
    except GoldenCorrupt as exc:
        return CaseResult(vc, Verdict.BAD_GOLDEN, f"{exc}. Re-create it with: {plan.rebaseline}")
    stale = stale_fields(golden.metadata, plan.golden_parameters)
    if stale:
        return CaseResult(vc, Verdict.STALE_GOLDEN, _stale_message(golden, stale, plan.rebaseline))
    candidate = render(vc.scheme)  # render
    # after the render: a deterministic checkpoint's settings are applied when its pipeline is built
    fingerprint = differences(golden.metadata.get("environment"), environment(plan.device))
    result = _judge(plan, golden.pixels, candidate, expected=expected,  # judge -> verdict
                    expected_scorecard=expected_scorecard, golden_png=golden.png)
    if plan.reference_mode is ReferenceMode.LIVE or result.verdict is Verdict.IMAGE_FAILED:
        result = _drift_check(plan, render, golden, candidate, result, expected=expected,
                              expected_scorecard=expected_scorecard, fingerprint=fingerprint)
    return replace(result, fingerprint=fingerprint)


# Drift-check outcomes that fail the case on its comparison with the golden.
_FAILED_AGAINST_GOLDEN = (DriftOutcome.QUANTIZATION_FAILED, DriftOutcome.UNKNOWN_CAUSE, DriftOutcome.NOT_CLEARED)


def _drift_check(plan: CasePlan, render: Callable[[Scheme], Render], golden: Golden, candidate: Render,
                 first: CaseResult, *, expected: ImageMetrics | None, expected_scorecard: dict[str, float] | None,
                 fingerprint: tuple[FieldDifference, ...]) -> CaseResult:
    """Render the bf16 reference now and compare three ways (``quant_guard.judge.drift``); the verdict
    then says whether the environment drifted or the quantization regressed."""
    from quant_guard.judge.judgement import image_metrics

    reference = render(REFERENCE)
    if first.metrics is None:  # live mode on a candidate that never got metrics (degenerate, refused)
        return replace(first, reference_render=reference.summary())
    drift_metrics = image_metrics(golden.pixels, reference.pixels)
    quantization, card = _compare(plan, reference.pixels, candidate.pixels)
    checks = _checks(plan, quantization, card, expected, expected_scorecard)
    tolerance = plan.drift_tolerance
    check = DriftCheck(
        candidate_vs_golden=Comparison("candidate vs golden", first.metrics, first.checks),
        reference_vs_golden=Comparison("bf16 now vs golden (drift)", drift_metrics,
                                       tolerance_checks(tolerance, drift_metrics)),
        candidate_vs_reference=Comparison("candidate vs bf16 now", quantization, tuple(checks)),
        fingerprint=fingerprint, closeness=closeness_checks(quantization, tolerance, expected is not None),
        mode=plan.reference_mode)
    outcome = check.outcome
    images = {**first.images, "reference": _write_report_png(plan, "reference.png", reference.pixels,
                                                             plan.case.fps)}
    section = explain(check, outcome, scheme=plan.case.scheme.id, rebaseline=plan.rebaseline)
    common: dict[str, Any] = {"drift": check, "images": images, "reference_render": reference.summary()}
    if outcome in _FAILED_AGAINST_GOLDEN:  # judged by the golden comparison: its metrics and checks stay
        head = first.reason.rsplit("\n" + _paths(first.images), 1)[0] if first.reason else ""
        # a regression leads with the failed checks; a drift that cannot be blamed leads with why
        parts = (head, section) if outcome is DriftOutcome.QUANTIZATION_FAILED else (section, head)
        reason = "\n".join(p for p in (*parts, _paths(images)) if p)
        return replace(first, verdict=Verdict.IMAGE_FAILED, reason=reason, **common)
    judged = {"metrics": quantization, "checks": tuple(checks), "scorecard": card}  # the comparison that decided
    if outcome is DriftOutcome.ENV_DRIFT:
        return replace(first, verdict=Verdict.ENV_DRIFT, reason=section + "\n" + _paths(images), **judged, **common)
    if all(c.passed for c in first.budget_checks):
        note = section if (not check.golden_reproduces or first.verdict is Verdict.IMAGE_FAILED) else ""
        return replace(first, verdict=Verdict.PASSED, reason=note, **judged, **common)
    reason = "budget exceeded:\n" + budget_section(first.budget_checks) + "\n" + section + "\n" + _paths(images)
    return replace(first, verdict=Verdict.BUDGET_FAILED, reason=reason, **judged, **common)


def _write_report_png(plan: CasePlan, name: str, image: np.ndarray, fps: int = 0) -> Path:
    """``image`` (or a clip, as an animated PNG at ``fps``) as ``name`` in the case's folder of the
    report directory."""
    plan.report_folder.mkdir(parents=True, exist_ok=True)
    atomic_write(plan.report_folder / name, encode_png(image) if image.ndim == 3 else encode_clip(image, fps))
    return plan.report_folder / name


# ---- --update-golden ---------------------------------------------------------------------------

def _update(plan: CasePlan, render: Callable[[Scheme], Render]) -> tuple[CaseResult, UpdateRecord]:
    if plan.golden_rendered:
        return _update_expected(plan, render)
    vc, store = plan.case, plan.store
    renders = {scheme.id: render(scheme) for scheme in plan.render_order}
    reference, candidate = renders[REFERENCE.id], renders[vc.scheme.id]
    problem = _degenerate(reference)
    if problem:
        return (CaseResult(vc, Verdict.DEGENERATE, f"the bf16 reference render is {problem}; no golden written"),
                UpdateRecord())
    metadata = _golden_metadata(plan)
    # Judged before anything is written: the golden (the bf16 truth) is always refreshed, but a
    # candidate that fails its thresholds never becomes the expected baseline. Its metrics are
    # not recorded, expected metrics recorded earlier for an unchanged golden stay, and the
    # summary line says how many were withheld (pytest-regressions' --force-regen also writes
    # and fails; here the run fails and the failing numbers are not adopted).
    result = _judge(plan, reference.pixels, candidate, expected=None, expected_scorecard=None,
                    golden_png=store.png_path(vc.key), reference=reference)
    image_ok = _image_ok(result)
    kept = None if plan.force else _within_drift(plan, reference.pixels, metadata)
    expected: UpdateRecord = UpdateRecord()
    dropped: tuple[str, ...] = ()
    if kept is not None:
        # the golden stays as it is; the expected metrics are measured against it
        if image_ok:
            metrics, card = _compare(plan, kept.pixels, candidate.pixels)
            expected = _record_expected(plan, metrics, card)
        outcome = WriteOutcome.WITHIN_DRIFT
    else:
        before = store.expected_paths(vc.key)
        outcome = store.write(vc.key, reference.pixels, metadata, None, force=plan.force)
        dropped = tuple(display_path(p) for p in before if not p.exists())
        if image_ok and result.metrics is not None:
            expected = _record_expected(plan, result.metrics, result.scorecard)
    update = replace(expected, golden=outcome, dropped=dropped)
    if not image_ok:
        return (replace(result, reason=f"{result.reason}\ngolden {outcome.value}; this failing candidate's metrics "
                                       "were not recorded as expected"), replace(update, expected="withheld"))
    return _updated(result, f"golden {outcome.value}"), update


def _update_expected(plan: CasePlan, render: Callable[[Scheme], Render]) -> tuple[CaseResult, UpdateRecord]:
    """--update-golden for another scheme of a case whose golden this run has rendered already:
    only the candidate renders, and its metrics against that golden become its expected ones."""
    vc = plan.case
    golden = _load(plan.store, vc)
    candidate = render(vc.scheme)
    result = _judge(plan, golden.pixels, candidate, expected=None, expected_scorecard=None, golden_png=golden.png)
    if not _image_ok(result):
        return (replace(result, reason=f"{result.reason}\nthis failing candidate's metrics were not recorded as "
                                       "expected"), UpdateRecord(expected="withheld"))
    update = _record_expected(plan, result.metrics, result.scorecard) if result.metrics is not None else UpdateRecord()
    return _updated(result, "golden rendered earlier in this run; expected metrics recorded"), update


def _record_expected(plan: CasePlan, metrics: ImageMetrics, card: Scorecard | None) -> UpdateRecord:
    """Record the scheme's expected metrics, unless its file already holds numbers within the
    expected tolerance of these (both ways): then the file stays byte for byte, as a re-baseline
    on another CPU would only churn it (its quantized kernels move NF4's LPIPS by a few 1e-4).
    The record counts it for the update summary, which lists each existing file rewritten and why."""
    from quant_guard.judge.checks import expected_moved, measured

    vc, store = plan.case, plan.store
    try:
        found = store.load_expected_with_scorecard(vc.key, vc.expected_name)
        moved = ["recorded metrics absent"] if found is None else expected_moved(
            measured(metrics, card), {**measured(found[0], None), **found[1]}, plan.expected)
    except GoldenCorrupt:
        moved = ["the recorded file was not valid"]
    if not moved:
        return UpdateRecord(expected="kept")
    path = store.expected_path(vc.key, vc.expected_name)
    existed = path.exists()
    store.write_expected(vc.key, metrics, card.values() if card is not None else None, vc.expected_name)
    rewritten = f"{display_path(path)} ({'; '.join(moved)})" if existed else None
    return UpdateRecord(expected="recorded", rewritten=rewritten)


def _image_ok(result: CaseResult) -> bool:
    """The candidate's image passed every check (budgets aside): its metrics may become expected ones."""
    return result.metrics is not None and all(c.passed for c in result.checks)


def _updated(result: CaseResult, reason: str) -> CaseResult:
    """An update run's passing candidate is UPDATED; a budget failure stays a failure."""
    return replace(result, verdict=Verdict.UPDATED, reason=reason) if result.passed else result


def _within_drift(plan: CasePlan, image: np.ndarray, metadata: dict[str, Any]) -> Golden | None:
    """The existing golden when a re-render differs from it only within the drift tolerance (same
    parameters, pixels not identical but close): rewriting it would only churn."""
    import numpy as np

    from quant_guard.judge.judgement import image_metrics
    from quant_guard.store.golden import GoldenError

    vc = plan.case
    try:
        golden = _load(plan.store, vc)
    except GoldenError:
        return None
    if stale_fields(golden.metadata, metadata) or np.array_equal(golden.pixels, image):
        return None  # stale: a real change; identical: the store reports it unchanged itself
    return golden if within_tolerance(plan.drift_tolerance, image_metrics(golden.pixels, image)) else None


# ---- judging a render ----------------------------------------------------------------------------

def _degenerate(r: Render) -> str | None:
    if r.nonfinite_fraction > 0:
        return f"not finite ({r.nonfinite_fraction:.1%} of the VAE output is NaN/Inf)"
    span = int(r.pixels.max()) - int(r.pixels.min())
    if span < MIN_DYNAMIC_RANGE:
        return f"constant (all pixels within {span} levels of {int(r.pixels.min())})"
    return None


def _judge(plan: CasePlan, golden: np.ndarray, candidate: Render, *, expected: ImageMetrics | None,
           expected_scorecard: dict[str, float] | None, golden_png: Path,
           reference: Render | None = None) -> CaseResult:
    """Verdict on a candidate render: degenerate output first, then image metrics, then budgets.
    An image failure and a budget failure are reported in separate blocks of the message."""
    vc, summary = plan.case, candidate.summary()
    if plan.step_time_refusal is not None:
        return CaseResult(vc, Verdict.ERROR, plan.step_time_refusal, candidate_render=summary)
    common: dict[str, Any] = {"candidate_render": summary, "memory_plan": plan.memory_plan,
                              "reference_render": reference.summary() if reference is not None else None,
                              "images": _write_images(plan, golden, candidate.pixels, golden_png),
                              "budget_checks": tuple(check_budget(summary, plan.budget))}
    problem = _degenerate(candidate)
    if problem:
        return CaseResult(vc, Verdict.DEGENERATE, f"degenerate candidate output: {problem}\n"
                          + _paths(common["images"]), **common)
    judgement = judge(golden, candidate.pixels, plan.thresholds, prompt=vc.case.prompt,
                      expected=expected, expected_scorecard=expected_scorecard, settings=plan.expected,
                      text=text_expectation(vc),
                      device=plan.judge_device)
    metrics, card, checks = judgement.metrics, judgement.scorecard, list(judgement.checks)
    common["scorecard"] = card
    image_ok = judgement.passed
    budget_ok = all(c.passed for c in common["budget_checks"])
    if image_ok and budget_ok:
        return CaseResult(vc, Verdict.PASSED, "", metrics=metrics, checks=tuple(checks), **common)
    blocks = []
    if not image_ok:
        blocks.append(f"{vc.scheme.id} candidate differs from the bf16 golden:\n"
                      + "\n".join("  " + c.describe() for c in checks)
                      + f"\n  in words: {card.describe(limit_words(checks))}")
    if not budget_ok:
        blocks.append("budget exceeded:\n" + budget_section(common["budget_checks"]))
    verdict = Verdict.IMAGE_FAILED if not image_ok else Verdict.BUDGET_FAILED
    return CaseResult(vc, verdict, "\n".join(blocks) + "\n" + _paths(common["images"]), metrics=metrics,
                      checks=tuple(checks), **common)


def _checks(plan: CasePlan, metrics: ImageMetrics, card: Scorecard, expected: ImageMetrics | None,
            expected_scorecard: dict[str, float] | None) -> list[MetricCheck]:
    """The judgement's checks (``judgement.judge_checks``) with this configuration's expected mode."""
    return judge_checks(metrics, card, plan.thresholds, expected=expected, expected_scorecard=expected_scorecard,
                        settings=plan.expected)


def _compare(plan: CasePlan, golden: np.ndarray, candidate: np.ndarray) -> tuple[ImageMetrics, Scorecard]:
    """The judgement's comparison (``judgement.compare``) for this case's prompt (and text)."""
    return compare(golden, candidate, plan.thresholds, prompt=plan.case.case.prompt, text=text_expectation(plan.case),
                   device=plan.judge_device)


def text_expectation(vc: VisualCase) -> TextExpectation | None:
    """The text the case's image must show (``expect_text``), or None when it lists none."""
    case = vc.case
    return TextExpectation(case.expect_text, case.expect_text_region) if case.expect_text else None


def _write_images(plan: CasePlan, golden: np.ndarray, candidate: np.ndarray, golden_png: Path) -> dict[str, Path]:
    """The candidate and an amplified difference (x4, max over channels) in the report
    directory, for every case: the report shows passing cases too. A clip's are animated PNGs,
    with a contact sheet (golden, candidate and difference rows, one column per frame)."""
    import numpy as np

    diff = np.abs(golden.astype(np.int16) - candidate.astype(np.int16)).max(axis=-1)
    diff_rgb = np.repeat(np.clip(diff * 4, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    fps = plan.case.fps
    images = {"golden": golden_png, "candidate": _write_report_png(plan, "candidate.png", candidate, fps),
              "diff": _write_report_png(plan, "diff.png", diff_rgb, fps)}
    if golden.ndim == 4:
        from quant_guard.report.clip_view import contact_sheet

        images["sheet"] = _write_report_png(plan, "sheet.png", contact_sheet(golden, candidate, diff_rgb))
    return images



def budget_section(checks: tuple[Any, ...]) -> str:
    return "\n".join("  " + c.describe() for c in checks)


def _paths(images: dict[str, Path]) -> str:
    return "\n".join(f"  {name + ':':<10} {display_path(path)}" for name, path in images.items())


def display_path(path: Path) -> str:
    """Relative to the working directory when inside it: shorter messages a person can click."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
