"""Telling "the machine changed" from "the quantization regressed".

A bf16 render is not bit-stable across CPUs, GPUs, drivers and torch builds, so a golden made
elsewhere differs from what this machine renders by a few levels (the tiny goldens re-rendered on
another CPU: max 4/255, PSNR 53.8-55.1 dB, LPIPS <= 0.0001). When a candidate fails against its
golden, the gate renders the bf16 reference now and compares three ways:

- candidate vs golden: the ordinary check;
- bf16 now vs golden: the drift, judged against ``DriftTolerance``;
- candidate vs bf16 now: the quantization error alone, judged against the same thresholds and
  expected metrics as the ordinary check.

A golden that no longer reproduces is blamed on the environment (``env-drift``) only with
evidence: a recorded cause (a fingerprint field of the golden's sidecar that differs now: device,
GPU, driver, torch, cuDNN, DiffSynth, CPU features, determinism; a changed component hash makes the
golden stale before this check) and a candidate as close to bf16 now as honest quantization is
(its expected metrics; without them, the drift tolerance). Without a cause the bf16 render changed
for an unknown reason: damage to a component both pipelines share (the VAE, a text encoder) looks
exactly like that, and re-baselining would hide it.

Nothing heavy is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING

from quant_guard.config.limits import DriftTolerance, ReferenceMode
from quant_guard.judge.checks import MetricCheck

if TYPE_CHECKING:
    from quant_guard.store.fingerprint import FieldDifference
    from quant_guard.judge.metrics import ImageMetrics


def tolerance_checks(tolerance: DriftTolerance, metrics: ImageMetrics) -> tuple[MetricCheck, ...]:
    """The drift tolerance's checks of a bf16-now-vs-golden comparison."""
    return (MetricCheck("LPIPS", metrics.lpips, tolerance.lpips, False, "drift tolerance"),
            MetricCheck("PSNR", metrics.psnr, tolerance.psnr, True, "drift tolerance", unit="dB"))


def within_tolerance(tolerance: DriftTolerance, metrics: ImageMetrics) -> bool:
    return all(c.passed for c in tolerance_checks(tolerance, metrics))


@dataclass(frozen=True)
class Comparison:
    """One pair of images, its metrics and the checks that judge them."""

    name: str
    metrics: ImageMetrics
    checks: tuple[MetricCheck, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


@dataclass(frozen=True)
class DriftCheck:
    """The three comparisons of one case and the fingerprint fields that differ from the golden's."""

    candidate_vs_golden: Comparison
    reference_vs_golden: Comparison  # the drift
    candidate_vs_reference: Comparison  # the quantization, free of drift
    fingerprint: tuple[FieldDifference, ...] = ()  # the recorded causes a drift can be blamed on
    # what the candidate vs bf16 now must also pass before the environment takes the blame, when
    # its checks hold no expected metrics (the drift tolerance: see ``closeness_checks``)
    closeness: tuple[MetricCheck, ...] = ()
    mode: ReferenceMode = ReferenceMode.GOLDEN

    @property
    def golden_reproduces(self) -> bool:
        return self.reference_vs_golden.passed

    @property
    def cause_recorded(self) -> bool:
        return bool(self.fingerprint)

    @property
    def close_as_honest(self) -> bool:
        """The candidate is as close to bf16 now as the honest scheme's expected metrics allow (or,
        with none, within the drift tolerance of it)."""
        return self.quantization_passed and all(c.passed for c in self.closeness)

    @property
    def outcome(self) -> DriftOutcome:
        return decide(self, self.mode)

    @property
    def quantization_passed(self) -> bool:
        return self.candidate_vs_reference.passed

    @property
    def comparisons(self) -> tuple[Comparison, ...]:
        return (self.candidate_vs_golden, self.reference_vs_golden, self.candidate_vs_reference)

    def table(self) -> str:
        """The three comparisons side by side, one line each."""
        lines = [f"  {'':<28} {'LPIPS':>8} {'SSIM':>8} {'PSNR':>10}  verdict"]
        for c in self.comparisons:
            failed = [x for x in c.checks if not x.passed]
            verdict = "ok" if not failed else "FAIL (" + "; ".join(_short(x) for x in failed) + ")"
            m = c.metrics
            lines.append(f"  {c.name:<28} {m.lpips:>8.4f} {m.ssim:>8.4f} {_db(m.psnr):>10}  {verdict}")
        return "\n".join(lines)

    def fingerprint_lines(self) -> str:
        if not self.fingerprint:
            return "  environment: no recorded field differs from the golden's"
        return "  environment differs from the golden's:\n" + "\n".join(
            "    " + d.describe() for d in self.fingerprint)


def _db(value: float) -> str:
    return "inf dB" if value == float("inf") else f"{value:.2f} dB"


def _short(check: MetricCheck) -> str:
    op = "<" if check.higher_is_better else ">"
    unit = " dB" if check.metric == "PSNR" else ""
    return f"{check.metric} {op} {check.limit:g}{unit} {check.source}"


class DriftOutcome(str, Enum):
    QUANTIZATION_FAILED = "quantization-failed"  # the candidate fails against bf16 now too
    ENV_DRIFT = "env-drift"  # the golden no longer reproduces, a recorded cause differs, the candidate is cleared
    UNKNOWN_CAUSE = "unknown-cause"  # the golden no longer reproduces and no recorded cause differs
    NOT_CLEARED = "not-cleared"  # a recorded cause differs, but the candidate is not shown as close as honest
    PASSED = "passed"  # the candidate passes against bf16 now, and drift does not matter


def closeness_checks(metrics: ImageMetrics, tolerance: DriftTolerance,
                     expected_judged: bool) -> tuple[MetricCheck, ...]:
    """What candidate vs bf16 now must pass, beyond its thresholds, before a drifted golden is
    blamed on the environment. With expected metrics nothing more: they already bound it to the
    honest scheme's distance from bf16. Without them (``--qg-no-expected``, expected mode off, none
    recorded) the thresholds alone let a damaged candidate through (measured on the tiny checkpoint:
    noise on a DiT block, 44.5 dB from bf16 against honest float8's 48.7 dB, passes them), so
    the conservative bound is the drift tolerance: only a candidate indistinguishable from bf16 is
    cleared, and honest quantization is not; it then fails as ``NOT_CLEARED``, never as drift."""
    if expected_judged:
        return ()
    return tuple(replace(c, source="drift tolerance, no expected metrics") for c in tolerance_checks(tolerance, metrics))


def decide(check: DriftCheck, mode: ReferenceMode) -> DriftOutcome:
    """In live mode the bf16 render of this run is the reference, so drift cannot fail a case (and
    damage to a component both pipelines share cannot be seen). By default a golden within the drift
    tolerance counts as reproduced (the candidate is then judged free of drift); one beyond it is
    ``ENV_DRIFT`` only with a recorded cause and a candidate as close to bf16 now as honest
    quantization, else a failure: ``UNKNOWN_CAUSE`` or ``NOT_CLEARED``."""
    if not check.quantization_passed:
        return DriftOutcome.QUANTIZATION_FAILED
    if mode is ReferenceMode.LIVE or check.golden_reproduces:
        return DriftOutcome.PASSED
    if not check.cause_recorded:
        return DriftOutcome.UNKNOWN_CAUSE
    if not check.close_as_honest:
        return DriftOutcome.NOT_CLEARED
    return DriftOutcome.ENV_DRIFT


def explain(check: DriftCheck, outcome: DriftOutcome, *, scheme: str, rebaseline: str) -> str:
    """The drift section of a failure message: what happened, the three comparisons side by side,
    the fingerprint difference and what to do."""
    head, todo = _head_and_todo(check, outcome, scheme=scheme, rebaseline=rebaseline)
    return "\n".join(part for part in (head, check.table(), _closeness_lines(check), check.fingerprint_lines(), todo)
                     if part)


def _head_and_todo(check: DriftCheck, outcome: DriftOutcome, *, scheme: str, rebaseline: str) -> tuple[str, str]:
    if outcome is DriftOutcome.ENV_DRIFT:
        head = (f"environment drift: the bf16 golden no longer reproduces here, and the {scheme} candidate "
                "passes against the bf16 reference rendered now")
        todo = (f"  what to do: the environment changed, not the quantization. Re-baseline on this machine with\n"
                f"    {rebaseline}\n  (review the new goldens), or run with --qg-reference=live")
    elif outcome is DriftOutcome.UNKNOWN_CAUSE:
        head = ("the bf16 render changed for an unknown reason: the golden no longer reproduces here, and no "
                "recorded field of the environment, library version or component hash differs from the golden's")
        todo = (f"  what to do: find what changed before anything else. Re-baselining would hide it: the {scheme} "
                "candidate passes against the bf16 reference rendered now, but damage to a component both "
                "pipelines share (the VAE, a text encoder) shows in both renders, and --qg-reference=live cannot "
                f"see it either. Once the change is understood and intended:\n    {rebaseline}")
    elif outcome is DriftOutcome.NOT_CLEARED:
        head = (f"drift not proven: the bf16 golden no longer reproduces here and the environment changed, but "
                f"with no expected metrics for {scheme} the candidate is not shown to be as close to the bf16 "
                "reference rendered now as honest quantization")
        todo = ("  what to do: judge it with expected metrics (without --qg-no-expected; or record them on the "
                "machine that made the golden), or compare the candidate with reference.png by eye. "
                f"Re-baselining now would adopt whatever the candidate does:\n    {rebaseline}")
    elif outcome is DriftOutcome.QUANTIZATION_FAILED:
        drift = ("the golden also drifted" if not check.golden_reproduces
                 else "the golden reproduces within the drift tolerance")
        head = (f"drift check: the {scheme} candidate also fails against the bf16 reference rendered now "
                f"({drift})")
        todo = "  what to do: the quantization regressed, not the environment: investigate the candidate"
    else:
        head = (f"drift check: the {scheme} candidate passes against the bf16 reference rendered now"
                + ("" if check.golden_reproduces else "; the golden no longer reproduces here"))
        todo = "" if check.golden_reproduces else f"  to refresh the golden on this machine: {rebaseline}"
        if check.mode is ReferenceMode.LIVE and not check.golden_reproduces and not check.cause_recorded:
            todo = ("  live reference: no recorded cause explains why the bf16 render changed; damage to a "
                    "component both pipelines share (the VAE, a text encoder) would look like this and cannot "
                    "fail a live check\n" + todo)
    return head, todo


def _closeness_lines(check: DriftCheck) -> str:
    """The drift-tolerance bound on candidate vs bf16 now, when no expected metrics judged it and it
    decides between drift and a failure (not once the candidate fails its thresholds anyway)."""
    if (not check.closeness or check.golden_reproduces or check.mode is ReferenceMode.LIVE
            or not check.quantization_passed):
        return ""
    return ("  candidate vs bf16 now, without expected metrics, must be within the drift tolerance:\n"
            + "\n".join("    " + c.describe() for c in check.closeness))
