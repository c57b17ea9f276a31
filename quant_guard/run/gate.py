"""The visual gate for one case: render the float8 candidate, compare it with the bf16 golden,
judge the metrics; or, with ``--update-golden``, render and store the golden.

Returns a ``CaseResult``; the plugin turns a failed one into a test failure whose message has
one line per metric against its limit, then the image paths.
"""

from __future__ import annotations

import traceback
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant_guard.store.atomic import atomic_write
from quant_guard.judge.budgets import Budget, BudgetNotMeasurable, check_budget
from quant_guard.run.cases import CaseResult, TestAddress, TestOverrides, Verdict, VisualCase
from quant_guard.model.checkpoints import CheckpointError
from quant_guard.judge.drift import Comparison, DriftCheck, DriftOutcome, ReferenceMode, closeness_checks, explain
from quant_guard.store.fingerprint import FieldDifference, differences, environment
from quant_guard.store.golden import GoldenCorrupt, GoldenMissing, WriteOutcome, encode_png, stale_fields
from quant_guard.judge.judgement import compare, judge, judge_checks, meaning_unavailable
from quant_guard.config.schemes import REFERENCE, Scheme
from quant_guard.judge.semantic import ScorerUnavailable
from quant_guard.config.thresholds import Thresholds, limit_words, resolve_thresholds

if TYPE_CHECKING:
    import numpy as np

    from quant_guard.store.golden import Golden
    from quant_guard.judge.metrics import ImageMetrics
    from quant_guard.model.render import Render, RenderRequest
    from quant_guard.judge.scorecard import Scorecard
    from quant_guard.run.session import QuantGuardSession
    from quant_guard.config.thresholds import MetricCheck

# A candidate whose pixel values span fewer levels than this is "constant" (e.g. all black).
MIN_DYNAMIC_RANGE = 4


def request_for(session: QuantGuardSession, vc: VisualCase) -> RenderRequest:
    from quant_guard.model.render import RenderRequest

    return RenderRequest(prompt=vc.case.prompt, seed=vc.seed, steps=vc.steps, width=vc.width, height=vc.height,
                         guidance=vc.guidance, t5_sequence_length=session.resolved(vc.checkpoint).t5_sequence_length)


def golden_parameters(session: QuantGuardSession, vc: VisualCase) -> dict[str, Any]:
    """The parameters a golden is made with; any difference later makes it stale."""
    r = request_for(session, vc)
    return {
        "prompt": r.prompt, "seed": r.seed, "steps": r.steps, "width": r.width, "height": r.height,
        "guidance": r.guidance, "t5_sequence_length": r.t5_sequence_length,
        "scheduler": "FlowMatchScheduler:FLUX.1",  # what FluxImagePipeline always uses
        "checkpoint_hashes": session.reference_hashes(vc.checkpoint),
    }


def golden_for(session: QuantGuardSession, vc: VisualCase) -> tuple[Golden, WriteOutcome | None]:
    """The case's golden for a tool outside the test run (the sensitivity sweep): loaded from the
    store, or rendered with the bf16 reference and stored as ``--update-golden`` would when there
    is none (CREATED). An existing golden is never rewritten: a stale or damaged one is a
    ``GoldenError`` that says how to re-baseline."""
    from quant_guard.store.golden import GoldenError

    store = session.store
    try:
        golden = store.load(vc.key, width=vc.width, height=vc.height)
    except GoldenMissing:
        reference = _render(session, vc, REFERENCE)
        problem = _degenerate(reference)
        if problem:
            raise GoldenError(f"{vc.id}: the bf16 reference render is {problem}; no golden written") from None
        outcome = store.write(vc.key, reference.image, _golden_metadata(session, vc), None)
        return store.load(vc.key, width=vc.width, height=vc.height), outcome
    except GoldenCorrupt as exc:
        raise GoldenError(f"{exc}. Re-create it with: {_update_command(vc, None)}") from None
    stale = stale_fields(golden.metadata, golden_parameters(session, vc))
    if stale:
        raise GoldenError(_stale_message(golden, stale, _update_command(vc, None)))
    return golden, None


def _golden_metadata(session: QuantGuardSession, vc: VisualCase) -> dict[str, Any]:
    """The sidecar of a golden rendered here: how it was made, and on what."""
    return {**golden_parameters(session, vc), "environment": environment(session.device(vc.checkpoint))}


def _stale_message(golden: Golden, stale: list[str], rebaseline: str) -> str:
    return (f"golden {display_path(golden.png)} is stale, made with other parameters:\n  " + "\n  ".join(stale)
            + f"\nRe-baseline with: {rebaseline}")


def run_case(session: QuantGuardSession, vc: VisualCase, marker: TestOverrides,
             address: TestAddress | None = None) -> CaseResult:
    import torch

    from quant_guard.judge.lpips_weights import LpipsWeightsError
    from quant_guard.model.pipelines import LoadOutOfMemory, is_out_of_memory

    try:
        session.require_lpips_weights()  # before any render: a GPU run must not waste one per case
        if session.settings.update_golden:
            return _update(session, vc, marker)
        return _check(session, vc, marker, address)
    except (CheckpointError, LpipsWeightsError, BudgetNotMeasurable) as exc:
        return CaseResult(vc, Verdict.ERROR, str(exc))
    except ScorerUnavailable as exc:
        return CaseResult(vc, Verdict.ERROR, meaning_unavailable(exc))
    except LoadOutOfMemory as exc:
        traceback.clear_frames(exc.__traceback__)
        return _out_of_memory(session, vc, exc.what, exc.error)
    except (torch.OutOfMemoryError, MemoryError) as exc:
        return _out_of_memory(session, vc, "rendering", exc)
    except Exception as exc:  # noqa: BLE001 - every outcome must reach results.json and the report
        if is_out_of_memory(exc):
            return _out_of_memory(session, vc, "rendering", exc)
        return CaseResult(vc, Verdict.ERROR, unexpected_error(exc))


# How much of an unexpected error's traceback the verdict keeps (innermost frames).
TRACEBACK_FRAMES = 12


def unexpected_error(exc: BaseException) -> str:
    """The message of an error verdict for an exception the gate has no special case for (a
    DiffSynth upgrade that breaks the render, a bug): its type and message first, then the
    innermost frames, so that results.json and the report carry what a traceback would."""
    frames = "".join(traceback.format_tb(exc.__traceback__)[-TRACEBACK_FRAMES:]).rstrip()
    head = f"unexpected error: {type(exc).__name__}: {exc}"
    return f"{head}\n  traceback (innermost last):\n" + "\n".join("  " + line for line in frames.splitlines())


def _out_of_memory(session: QuantGuardSession, vc: VisualCase, stage: str, exc: BaseException) -> CaseResult:
    """An out-of-memory verdict with the figures; everything is released so that the following
    tests start from a clean device."""
    device = session.device(vc.checkpoint)
    figures = _memory_figures(device)
    plan = session.memory_plan(vc.checkpoint, vc.scheme)
    session.discard_after_error(exc)
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    return CaseResult(vc, Verdict.OUT_OF_MEMORY,
                      f"out of memory while {stage} ({type(exc).__name__}: {first_line})\n  {figures}\n"
                      f"  memory plan: {plan.describe()}\n  pipelines released; the next test rebuilds them",
                      memory_plan=plan)


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


def _thresholds(session: QuantGuardSession, vc: VisualCase, marker: TestOverrides) -> Thresholds:
    return resolve_thresholds(vc.configured_thresholds(session.config.thresholds), marker.thresholds,
                              session.settings.thresholds)


def _budget(session: QuantGuardSession, vc: VisualCase, marker: TestOverrides) -> Budget:
    s = session.settings
    return (vc.checkpoint.limits
            .override(peak_memory_bytes=marker.peak_memory_bytes, step_time_s=marker.step_time_s,
                      resident_memory_bytes=marker.resident_memory_bytes)
            .override(peak_memory_bytes=s.max_peak_memory_bytes, step_time_s=s.max_step_time_s,
                      resident_memory_bytes=s.max_resident_memory_bytes))


def _update_command(vc: VisualCase, address: TestAddress | None) -> str:
    """The command that re-baselines ``vc``'s golden: the tests of every scheme of its case and
    seed, since a new golden drops every scheme's expected metrics."""
    if address is None:  # the gate called outside a pytest item: only the case ids are known
        return f'pytest --update-golden -k "{" or ".join(vc.golden_sharers)}"'
    return address.update_command(address.siblings(vc))


def _check(session: QuantGuardSession, vc: VisualCase, marker: TestOverrides,
           address: TestAddress | None) -> CaseResult:

    store = session.store
    try:
        golden = store.load(vc.key, width=vc.width, height=vc.height)
        use_expected = session.settings.use_expected and session.config.expected.enabled
        recorded = store.load_expected_with_scorecard(vc.key, vc.expected_name) if use_expected else None
        expected, expected_scorecard = recorded if recorded is not None else (None, None)
    except GoldenMissing as exc:
        return CaseResult(vc, Verdict.NO_GOLDEN, f"{exc}. Create it with: {_update_command(vc, address)}")
    except GoldenCorrupt as exc:
        return CaseResult(vc, Verdict.BAD_GOLDEN, f"{exc}. Re-create it with: {_update_command(vc, address)}")
    stale = stale_fields(golden.metadata, golden_parameters(session, vc))
    if stale:
        return CaseResult(vc, Verdict.STALE_GOLDEN, _stale_message(golden, stale, _update_command(vc, address)))
    candidate = _render(session, vc, vc.scheme)
    # after the render: a deterministic checkpoint's settings are applied when its pipeline is built
    fingerprint = differences(golden.metadata.get("environment"), environment(session.device(vc.checkpoint)))
    live = session.reference_mode is ReferenceMode.LIVE
    result = _judge(session, vc, marker, golden.image, candidate, expected=expected,
                    expected_scorecard=expected_scorecard, golden_png=golden.png)
    if live or result.verdict is Verdict.IMAGE_FAILED:
        result = _drift_check(session, vc, marker, golden, candidate, result, expected=expected,
                              expected_scorecard=expected_scorecard, fingerprint=fingerprint, address=address)
    return replace(result, fingerprint=fingerprint)


# Drift-check outcomes that fail the case on its comparison with the golden.
_FAILED_AGAINST_GOLDEN = (DriftOutcome.QUANTIZATION_FAILED, DriftOutcome.UNKNOWN_CAUSE, DriftOutcome.NOT_CLEARED)


def _drift_check(session: QuantGuardSession, vc: VisualCase, marker: TestOverrides, golden: Golden,
                 candidate: Render, first: CaseResult, *, expected: ImageMetrics | None,
                 expected_scorecard: dict[str, float] | None, fingerprint: tuple[FieldDifference, ...],
                 address: TestAddress | None) -> CaseResult:
    """Render the bf16 reference now and compare three ways (``quant_guard.judge.drift``); the verdict
    then says whether the environment drifted or the quantization regressed."""
    from quant_guard.judge.metrics import compare_images

    reference = _render(session, vc, REFERENCE)
    if first.metrics is None:  # live mode on a candidate that never got metrics (degenerate, refused)
        return replace(first, reference_render=reference.summary())
    drift_metrics = compare_images(golden.image, reference.image)
    limits = _thresholds(session, vc, marker)
    quantization, card = _compare(vc, reference.image, candidate.image, limits)
    checks = _checks(session, quantization, card, limits, expected, expected_scorecard)
    tolerance = session.config.drift_tolerance
    check = DriftCheck(
        candidate_vs_golden=Comparison("candidate vs golden", first.metrics, first.checks),
        reference_vs_golden=Comparison("bf16 now vs golden (drift)", drift_metrics, tolerance.checks(drift_metrics)),
        candidate_vs_reference=Comparison("candidate vs bf16 now", quantization, tuple(checks)),
        fingerprint=fingerprint, closeness=closeness_checks(quantization, tolerance, expected is not None),
        mode=session.reference_mode)
    outcome = check.outcome
    images = {**first.images, "reference": _write_reference(session, vc, reference.image)}
    section = explain(check, outcome, scheme=vc.scheme.id, rebaseline=_update_command(vc, address))
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


def _write_reference(session: QuantGuardSession, vc: VisualCase, image: np.ndarray) -> Path:
    return _write_report_png(session, vc, "reference.png", image)


def _write_report_png(session: QuantGuardSession, vc: VisualCase, name: str, image: np.ndarray) -> Path:
    """``image`` as ``name`` in the case's folder of the report directory."""
    folder = session.report_dir / vc.report_folder
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / name, encode_png(image))
    return folder / name


def _update(session: QuantGuardSession, vc: VisualCase, marker: TestOverrides) -> CaseResult:

    if vc.key in session.goldens_rendered:
        return _update_expected(session, vc, marker)
    order = [REFERENCE, vc.scheme]
    if session.loaded_scheme(vc.checkpoint) == vc.scheme:
        order.reverse()  # the DiT already loaded renders first: one DiT swap per case, not two
    renders = {scheme.id: _render(session, vc, scheme) for scheme in order}
    reference, candidate = renders[REFERENCE.id], renders[vc.scheme.id]
    problem = _degenerate(reference)
    if problem:
        return CaseResult(vc, Verdict.DEGENERATE, f"the bf16 reference render is {problem}; no golden written")
    session.goldens_rendered.add(vc.key)
    metadata = _golden_metadata(session, vc)
    # Judged before anything is written: the golden (the bf16 truth) is always refreshed, but a
    # candidate that fails its thresholds never becomes the expected baseline. Its metrics are
    # not recorded, expected metrics recorded earlier for an unchanged golden stay, and the
    # summary line says how many were withheld (pytest-regressions' --force-regen also writes
    # and fails; here the run fails and the failing numbers are not adopted).
    result = _judge(session, vc, marker, reference.image, candidate, expected=None, expected_scorecard=None,
                    golden_png=session.store.png_path(vc.key), reference=reference)
    image_ok = _image_ok(result)
    kept = None if session.settings.force else _within_drift(session, vc, reference.image, metadata)
    if kept is not None:
        # the golden stays as it is; the expected metrics are measured against it
        if image_ok:
            metrics, card = _compare(vc, kept.image, candidate.image, _thresholds(session, vc, marker))
            _record_expected(session, vc, metrics, card)
        outcome = WriteOutcome.WITHIN_DRIFT
    else:
        before = session.store.expected_paths(vc.key)
        outcome = session.store.write(vc.key, reference.image, metadata, None, force=session.settings.force)
        session.expected_dropped.update(display_path(p) for p in before if not p.exists())
        if image_ok and result.metrics is not None:
            _record_expected(session, vc, result.metrics, result.scorecard)
    session.outcomes[outcome] += 1
    if not image_ok:
        session.expected_withheld += 1
        return replace(result, reason=f"{result.reason}\ngolden {outcome.value}; this failing candidate's metrics "
                                      "were not recorded as expected")
    return _updated(result, f"golden {outcome.value}")


def _update_expected(session: QuantGuardSession, vc: VisualCase, marker: TestOverrides) -> CaseResult:
    """--update-golden for another scheme of a case whose golden this run has rendered already:
    only the candidate renders, and its metrics against that golden become its expected ones."""

    golden = session.store.load(vc.key, width=vc.width, height=vc.height)
    candidate = _render(session, vc, vc.scheme)
    result = _judge(session, vc, marker, golden.image, candidate, expected=None, expected_scorecard=None,
                    golden_png=golden.png)
    if not _image_ok(result):
        session.expected_withheld += 1
        return replace(result, reason=f"{result.reason}\nthis failing candidate's metrics were not recorded as "
                                      "expected")
    if result.metrics is not None:
        _record_expected(session, vc, result.metrics, result.scorecard)
    return _updated(result, "golden rendered earlier in this run; expected metrics recorded")


def _record_expected(session: QuantGuardSession, vc: VisualCase, metrics: ImageMetrics,
                     card: Scorecard | None) -> None:
    """Record the scheme's expected metrics, unless its file already holds numbers within the
    expected tolerance of these (both ways): then the file stays byte for byte, as a re-baseline
    on another CPU would only churn it (its quantized kernels move NF4's LPIPS by a few 1e-4).
    Counted for the update summary, which lists each existing file rewritten and why."""
    from quant_guard.config.thresholds import expected_moved, measured

    store = session.store
    try:
        found = store.load_expected_with_scorecard(vc.key, vc.expected_name)
        moved = ["recorded metrics absent"] if found is None else expected_moved(
            measured(metrics, card), {**measured(found[0], None), **found[1]}, session.config.expected)
    except GoldenCorrupt:
        moved = ["the recorded file was not valid"]
    if not moved:
        session.expected_kept += 1
        return
    path = store.expected_path(vc.key, vc.expected_name)
    existed = path.exists()
    store.write_expected(vc.key, metrics, card.values() if card is not None else None, vc.expected_name)
    session.expected_recorded += 1
    if existed:
        session.expected_rewritten.append(f"{display_path(path)} ({'; '.join(moved)})")


def _image_ok(result: CaseResult) -> bool:
    """The candidate's image passed every check (budgets aside): its metrics may become expected ones."""
    return result.metrics is not None and all(c.passed for c in result.checks)


def _updated(result: CaseResult, reason: str) -> CaseResult:
    """An update run's passing candidate is UPDATED; a budget failure stays a failure."""
    return replace(result, verdict=Verdict.UPDATED, reason=reason) if result.passed else result


def _render(session: QuantGuardSession, vc: VisualCase, scheme: Scheme) -> Render:
    """The case rendered by the checkpoint's pipeline holding ``scheme``'s DiT (the bf16
    reference or a candidate), with live progress when the plugin shows it."""
    from quant_guard.model.render import render

    progress = session.progress.for_render(f"{vc.id} ({scheme.id})") if session.progress else None
    pipe = session.pipeline(vc.checkpoint, scheme)
    try:
        return render(pipe, request_for(session, vc), on_step=progress)
    except BaseException as exc:
        del pipe  # this frame's reference too: the pipeline must go with the error
        session.after_error(exc)
        raise


def _within_drift(session: QuantGuardSession, vc: VisualCase, image: np.ndarray,
                  metadata: dict[str, Any]) -> Golden | None:
    """The existing golden when a re-render differs from it only within the drift tolerance (same
    parameters, pixels not identical but close): rewriting it would only churn."""
    import numpy as np

    from quant_guard.store.golden import GoldenError
    from quant_guard.judge.metrics import compare_images

    try:
        golden = session.store.load(vc.key, width=vc.width, height=vc.height)
    except GoldenError:
        return None
    if stale_fields(golden.metadata, metadata) or np.array_equal(golden.image, image):
        return None  # stale: a real change; identical: the store reports it unchanged itself
    return golden if session.config.drift_tolerance.within(compare_images(golden.image, image)) else None


def _degenerate(r: Render) -> str | None:
    if r.nonfinite_fraction > 0:
        return f"not finite ({r.nonfinite_fraction:.1%} of the VAE output is NaN/Inf)"
    span = int(r.image.max()) - int(r.image.min())
    if span < MIN_DYNAMIC_RANGE:
        return f"constant (all pixels within {span} levels of {int(r.image.min())})"
    return None


def _judge(session: QuantGuardSession, vc: VisualCase, marker: TestOverrides, golden: np.ndarray,
           candidate: Render, *, expected: ImageMetrics | None, expected_scorecard: dict[str, float] | None,
           golden_png: Path, reference: Render | None = None) -> CaseResult:
    """Verdict on a candidate render: degenerate output first, then image metrics, then budgets.
    An image failure and a budget failure are reported in separate blocks of the message."""

    summary = candidate.summary()
    budget = _budget(session, vc, marker)
    device = session.device(vc.checkpoint)
    if budget.step_time_s is not None and session.placement.shares(device):
        return CaseResult(vc, Verdict.ERROR, session.placement.refusal(device), candidate_render=summary)
    common: dict[str, Any] = {"candidate_render": summary,
                              "memory_plan": session.memory_plan(vc.checkpoint, vc.scheme),
                              "reference_render": reference.summary() if reference is not None else None,
                              "images": _write_images(session, vc, golden, candidate.image, golden_png),
                              "budget_checks": tuple(check_budget(summary, budget))}
    problem = _degenerate(candidate)
    if problem:
        return CaseResult(vc, Verdict.DEGENERATE, f"degenerate candidate output: {problem}\n"
                          + _paths(common["images"]), **common)
    judgement = judge(golden, candidate.image, _thresholds(session, vc, marker), prompt=vc.case.prompt,
                      expected=expected, expected_scorecard=expected_scorecard, settings=session.config.expected,
                      device=device)  # the render's device: on a GPU runner the judge runs there too
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


def _checks(session: QuantGuardSession, metrics: ImageMetrics, card: Scorecard, limits: Thresholds,
            expected: ImageMetrics | None, expected_scorecard: dict[str, float] | None) -> list[MetricCheck]:
    """The judgement's checks (``judgement.judge_checks``) with this configuration's expected mode."""
    return judge_checks(metrics, card, limits, expected=expected, expected_scorecard=expected_scorecard,
                        settings=session.config.expected)


def _compare(vc: VisualCase, golden: np.ndarray, candidate: np.ndarray,
             limits: Thresholds) -> tuple[ImageMetrics, Scorecard]:
    """The judgement's comparison (``judgement.compare``) for this case's prompt."""
    return compare(golden, candidate, limits, prompt=vc.case.prompt)


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


def _write_images(session: QuantGuardSession, vc: VisualCase, golden: np.ndarray,
                 candidate: np.ndarray, golden_png: Path) -> dict[str, Path]:
    """The candidate and an amplified difference (x4, max over channels) in the report
    directory, for every case: the report shows passing cases too."""
    import numpy as np

    diff = np.abs(golden.astype(np.int16) - candidate.astype(np.int16)).max(axis=2)
    diff_rgb = np.repeat(np.clip(diff * 4, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    return {"golden": golden_png, "candidate": _write_report_png(session, vc, "candidate.png", candidate),
            "diff": _write_report_png(session, vc, "diff.png", diff_rgb)}

