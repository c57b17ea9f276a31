"""The verdict of numbers against limits: one ``MetricCheck`` per bounded number, from the
thresholds (``config.thresholds``) or from a case's expected metrics (the expected mode), and how
a re-baseline decides whether recorded expected metrics moved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from quant_guard.config.thresholds import (IMAGE_METRICS, LIMITS, LIMITS_BY_KEY, MEANING_KEY, ExpectedSettings,
                                           ImageMetrics, Limit, Thresholds)

if TYPE_CHECKING:
    from quant_guard.judge.scorecard import Scorecard


@dataclass(frozen=True)
class MetricCheck:
    """One number against one limit, e.g. ``LPIPS 0.0712 > max 0.05``."""

    metric: str
    value: float
    limit: float
    higher_is_better: bool
    source: str  # "threshold" or "expected"
    key: str = ""  # the Limit's key ("meaning" for the meaning check)
    unit: str = ""

    @property
    def passed(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    @property
    def dimension(self) -> str:
        limit = LIMITS_BY_KEY.get(self.key)
        return "meaning" if self.key == MEANING_KEY else limit.dimension if limit is not None else "structure"

    def describe(self) -> str:
        op = (">=" if self.passed else "<") if self.higher_is_better else ("<=" if self.passed else ">")
        bound = "min" if self.higher_is_better else "max"
        unit = f" {self.unit}" if self.unit == "dB" else self.unit
        verdict = "ok" if self.passed else "FAIL"
        if self.key == MEANING_KEY:
            return f"meaning {'kept' if self.passed else 'LOST'} ({self.source}) {verdict}"
        return (f"{self.metric:<5} {_fmt(self.value)}{unit} {op} {bound} {_fmt(self.limit)}{unit}"
                f" ({self.source}) {verdict}")


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def measured(metrics: ImageMetrics, scorecard: Scorecard | None) -> dict[str, float]:
    """Every number a limit can bound (``Limit.value`` keys); a scorecard adds its own."""
    values = {"lpips": metrics.lpips, "ssim": metrics.ssim, "psnr": metrics.psnr}
    if scorecard is not None:
        values.update({k: v for k, v in scorecard.values().items() if v is not None})
    return values


def check_thresholds(metrics: ImageMetrics, limits: Thresholds, scorecard: Scorecard | None = None) -> list[MetricCheck]:
    """A check per limit that is set and has its number (a scorecard limit needs the scorecard;
    the hue limit needs saturated pixels to measure on), and the meaning check when a scorer ran."""
    values = measured(metrics, scorecard)
    checks = []
    for limit in LIMITS:
        bound = limits.limit(limit)
        if bound is not None and limit.value in values:
            checks.append(MetricCheck(limit.metric, values[limit.value], bound, limit.higher_is_better, "threshold",
                                      limit.key, limit.unit))
    if scorecard is not None and scorecard.meaning is not None:
        checks.append(MetricCheck("meaning", 1.0 if scorecard.meaning.agrees else 0.0, 1.0, True, "threshold",
                                  MEANING_KEY))
    return checks


def expected_bound(limit: Limit, recorded: float, settings: ExpectedSettings) -> float:
    """The expected mode's bound on a number recorded as ``recorded``: a margin below it for a
    number that is better higher, a factor and a margin above it otherwise."""
    margin = getattr(settings, limit.expected_margin)
    if limit.higher_is_better:
        return recorded - margin
    return recorded * (getattr(settings, limit.expected_factor) if limit.expected_factor else 1.0) + margin


def check_expected(metrics: ImageMetrics, expected: ImageMetrics, settings: ExpectedSettings, *,
                   limits: Thresholds | None = None, scorecard: Scorecard | None = None,
                   expected_scorecard: Mapping[str, float] | None = None) -> list[MetricCheck]:
    """Hold a candidate to the numbers recorded at the last re-baseline (one-sided: being closer
    to the golden than last time always passes). LPIPS, SSIM and PSNR always; a scorecard number
    when it has a limit in ``limits`` and was recorded (goldens updated before the scorecard
    existed have none)."""
    values = measured(metrics, scorecard)
    recorded = {"lpips": expected.lpips, "ssim": expected.ssim, "psnr": expected.psnr, **(expected_scorecard or {})}
    checks = []
    for limit in LIMITS:
        scored = limit.value not in IMAGE_METRICS
        if scored and (limits is None or limits.limit(limit) is None):
            continue
        if limit.value not in values or limit.value not in recorded:
            continue
        base = recorded[limit.value]
        # an identical image at baseline (PSNR inf) gives no bound; the other numbers still hold it
        bound = expected_bound(limit, base, settings) if math.isfinite(base) else \
            (limit.low if limit.higher_is_better else limit.high)
        checks.append(MetricCheck(limit.metric, values[limit.value], bound, limit.higher_is_better, "expected",
                                  limit.key, limit.unit))
    return checks


def limit_words(checks: list[MetricCheck]) -> dict[str, str]:
    """What the scorecard's words say after a number (``Scorecard.describe``): its limits, by
    ``Limit.value``, e.g. {"colour_delta_e_p95": "limit 3.0, expected max 1.5"}; a number held
    by thresholds on both sides says which is which ("min 0.88, max 1.2")."""
    found = [(c, LIMITS_BY_KEY[c.key]) for c in checks if c.key in LIMITS_BY_KEY]
    sides: dict[str, set[str]] = {}  # the bounds ("min", "max") thresholds set on each number
    for c, limit in found:
        if c.source == "threshold":
            sides.setdefault(limit.value, set()).add(limit.bound)
    out: dict[str, list[str]] = {}
    for c, limit in found:
        bound = f"{c.limit:.1f}" if abs(c.limit) >= 1 else f"{c.limit:.3g}"
        if c.source != "threshold":
            text = f"expected {limit.bound} {bound}"
        else:
            text = f"{limit.bound} {bound}" if len(sides[limit.value]) > 1 else f"limit {bound}"
        out.setdefault(limit.value, []).append(text)
    return {k: ", ".join(v) for k, v in out.items()}


def expected_moved(new: Mapping[str, float | None], recorded: Mapping[str, float],
                   settings: ExpectedSettings) -> list[str]:
    """The recorded expected numbers that a re-measurement moved by more than the expected mode's
    tolerance in either direction (``lpips``/``ssim``/``psnr`` and ``Scorecard.values()`` keys),
    as "LPIPS 0.0031 -> 0.0042" lines; a number on one side only counts as moved. Empty: the
    recorded file still describes this candidate, and re-recording it would only churn (a
    re-baseline on another CPU moves NF4's LPIPS by a few 1e-4)."""
    limits = {limit.value: limit for limit in LIMITS}  # both sharpness limits share one margin
    moved = []
    for name in sorted(set(recorded) | {k for k, v in new.items() if v is not None}):
        old, now = recorded.get(name), new.get(name)
        limit = limits.get(name)
        label = limit.metric if limit is not None else name
        if old is None or now is None:
            moved.append(f"{label} {'absent' if old is None else _fmt(old)} -> {'absent' if now is None else _fmt(now)}")
        elif not _within_tolerance(old, now, limit, settings):
            moved.append(f"{label} {_fmt(old)} -> {_fmt(now)}")
    return moved


def _within_tolerance(old: float, now: float, limit: Limit | None, settings: ExpectedSettings) -> bool:
    """``now`` passes the expected check against ``old`` and ``old`` against ``now`` (the check
    is one-sided; keeping a much worse recorded value would loosen it)."""
    if math.isnan(old) or math.isnan(now):
        return False
    if not (math.isfinite(old) and math.isfinite(now)):
        return old == now  # PSNR inf (identical images) stays only while it is inf
    if limit is None:  # a number no limit reads: only its rounding may differ
        return abs(old - now) <= 1e-6
    if limit.higher_is_better:
        return now >= expected_bound(limit, old, settings) and old >= expected_bound(limit, now, settings)
    return now <= expected_bound(limit, old, settings) and old <= expected_bound(limit, now, settings)
