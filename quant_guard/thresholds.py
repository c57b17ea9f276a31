"""Thresholds on the image metrics, how overrides combine, and the verdict of one comparison.

Precedence, most specific last: defaults < [tool.quant_guard.thresholds] < checkpoint < case <
``qg_thresholds`` marker < command line. The "expected" check compares with the metrics that
were recorded when the golden was last updated (see ``expected.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from quant_guard.config import ExpectedSettings
    from quant_guard.metrics import ImageMetrics


@dataclass(frozen=True)
class Thresholds:
    lpips_max: float
    ssim_min: float
    psnr_min: float

    DEFAULT: ClassVar[Thresholds]


# A coarse absolute gate, chosen from benchmarks/tiny_quality.py on the embedded checkpoint (README,
# "Thresholds"): midway on a log scale between the worst honest float8 image (LPIPS 0.049, SSIM
# 0.925, PSNR 26.3 dB) and the mildest image of the gross faults (LPIPS 0.285, SSIM 0.70, PSNR
# 19.2 dB). Milder damage is caught per case by the expected mode, not by these.
Thresholds.DEFAULT = Thresholds(lpips_max=0.1, ssim_min=0.85, psnr_min=22.0)


@dataclass(frozen=True)
class ThresholdOverrides:
    """Partial thresholds from one level of configuration; None = inherit."""

    lpips: float | None = None
    ssim: float | None = None
    psnr: float | None = None

    def apply(self, base: Thresholds) -> Thresholds:
        return Thresholds(
            lpips_max=base.lpips_max if self.lpips is None else self.lpips,
            ssim_min=base.ssim_min if self.ssim is None else self.ssim,
            psnr_min=base.psnr_min if self.psnr is None else self.psnr,
        )


def resolve_thresholds(base: Thresholds, *levels: ThresholdOverrides) -> Thresholds:
    for level in levels:
        base = level.apply(base)
    return base


@dataclass(frozen=True)
class MetricCheck:
    """One metric against one limit, e.g. ``LPIPS 0.0712 > max 0.05``."""

    metric: str
    value: float
    limit: float
    higher_is_better: bool
    source: str  # "threshold" or "expected"

    @property
    def passed(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    def describe(self) -> str:
        op = (">=" if self.passed else "<") if self.higher_is_better else ("<=" if self.passed else ">")
        bound = "min" if self.higher_is_better else "max"
        unit = " dB" if self.metric == "PSNR" else ""
        verdict = "ok" if self.passed else "FAIL"
        return (f"{self.metric:<5} {_fmt(self.value)}{unit} {op} {bound} {_fmt(self.limit)}{unit}"
                f" ({self.source}) {verdict}")


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def check_thresholds(metrics: ImageMetrics, limits: Thresholds) -> list[MetricCheck]:
    return [
        MetricCheck("LPIPS", metrics.lpips, limits.lpips_max, False, "threshold"),
        MetricCheck("SSIM", metrics.ssim, limits.ssim_min, True, "threshold"),
        MetricCheck("PSNR", metrics.psnr, limits.psnr_min, True, "threshold"),
    ]


def check_expected(metrics: ImageMetrics, expected: ImageMetrics, settings: ExpectedSettings) -> list[MetricCheck]:
    """Hold a candidate to the metrics recorded at the last re-baseline (one-sided: being
    closer to the golden than last time always passes)."""
    # An identical image at baseline (PSNR inf) gives no PSNR bound; LPIPS and SSIM still hold it.
    psnr_limit = expected.psnr - settings.psnr_margin_db if math.isfinite(expected.psnr) else 0.0
    return [
        MetricCheck("LPIPS", metrics.lpips, expected.lpips * settings.lpips_factor + settings.lpips_margin,
                    False, "expected"),
        MetricCheck("SSIM", metrics.ssim, expected.ssim - settings.ssim_margin, True, "expected"),
        MetricCheck("PSNR", metrics.psnr, psnr_limit, True, "expected"),
    ]
