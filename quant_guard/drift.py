"""Telling "the machine changed" from "the quantization regressed".

A bf16 render is not bit-stable across CPUs, GPUs, drivers and torch builds, so a golden made
elsewhere differs from what this machine renders by a few levels (the tiny goldens re-rendered on
another CPU: max 4/255, PSNR 53.8-55.1 dB, LPIPS <= 0.0001). When a candidate fails against its
golden, the gate renders the bf16 reference now and compares three ways:

- candidate vs golden: the ordinary check;
- bf16 now vs golden: the drift, judged against ``DriftTolerance``;
- candidate vs bf16 now: the quantization error alone, judged against the same thresholds and
  expected metrics as the ordinary check.

Nothing heavy is imported here: the configuration imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from quant_guard.thresholds import MetricCheck

if TYPE_CHECKING:
    from quant_guard.fingerprint import FieldDifference
    from quant_guard.metrics import ImageMetrics


class ReferenceMode(str, Enum):
    GOLDEN = "golden"  # one render per case; the bf16 reference only when a check fails
    LIVE = "live"  # render the bf16 reference for every case and judge against it


@dataclass(frozen=True)
class DriftTolerance:
    """How far a bf16 render may be from its golden and still count as the same golden.

    Defaults from measurement (README, "Goldens across machines"): the tiny goldens re-rendered on
    another CPU scored PSNR >= 53.8 dB and LPIPS <= 0.0001, while honest float8 on the tiny model
    scores about 48 dB / 0.0004; the limits sit between the two."""

    lpips: float = 0.001
    psnr: float = 50.0

    def checks(self, metrics: ImageMetrics) -> tuple[MetricCheck, ...]:
        return (MetricCheck("LPIPS", metrics.lpips, self.lpips, False, "drift tolerance"),
                MetricCheck("PSNR", metrics.psnr, self.psnr, True, "drift tolerance"))

    def within(self, metrics: ImageMetrics) -> bool:
        return all(c.passed for c in self.checks(metrics))


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
    fingerprint: tuple[FieldDifference, ...] = ()

    @property
    def golden_reproduces(self) -> bool:
        return self.reference_vs_golden.passed

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
    ENV_DRIFT = "env-drift"  # the golden no longer reproduces; the candidate passes against bf16 now
    PASSED = "passed"  # the candidate passes against bf16 now, and drift does not matter


def decide(check: DriftCheck, mode: ReferenceMode) -> DriftOutcome:
    """In live mode the bf16 render of this run is the reference, so drift cannot fail a case; by
    default a golden beyond the drift tolerance fails it as ``ENV_DRIFT``, and a golden within it
    counts as reproduced (the candidate is then judged free of drift)."""
    if not check.quantization_passed:
        return DriftOutcome.QUANTIZATION_FAILED
    if mode is ReferenceMode.GOLDEN and not check.golden_reproduces:
        return DriftOutcome.ENV_DRIFT
    return DriftOutcome.PASSED


def explain(check: DriftCheck, outcome: DriftOutcome, *, scheme: str, rebaseline: str) -> str:
    """The drift section of a failure message: what happened, the three comparisons side by side,
    the fingerprint difference and what to do."""
    if outcome is DriftOutcome.ENV_DRIFT:
        head = (f"environment drift: the bf16 golden no longer reproduces here, and the {scheme} candidate "
                "passes against the bf16 reference rendered now")
        todo = (f"  what to do: the environment changed, not the quantization. Re-baseline on this machine with\n"
                f"    {rebaseline}\n  (review the new goldens), or run with --qg-reference=live")
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
    return "\n".join(part for part in (head, check.table(), check.fingerprint_lines(), todo) if part)
