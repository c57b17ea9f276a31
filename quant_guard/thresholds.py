"""Thresholds on the image metrics, how overrides combine, and the verdict of one comparison.

Precedence, most specific last: defaults < [tool.quant_guard.thresholds] < an embedded
checkpoint's measured thresholds for the scheme < checkpoint < scheme < case < ``qg_thresholds``
marker < command line. The "expected" check compares with the metrics that
were recorded when the golden was last updated (``GoldenStore.load_expected`` in ``golden.py``;
its tolerances are ``ExpectedSettings`` below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from quant_guard.metrics import ImageMetrics


@dataclass(frozen=True)
class Thresholds:
    lpips_max: float
    ssim_min: float
    psnr_min: float

    DEFAULT: ClassVar[Thresholds]


# The package defaults are a coarse absolute gate for real checkpoints, from published FLUX
# results (README, "Thresholds"): float8 against bf16 of the same seed scores LPIPS 0.02-0.17 and
# SSIM 0.94-0.98, INT W8A8 27 dB PSNR, while a broken render (an unrelated image) scores LPIPS
# 0.77 / SSIM 0.22. Per-case precision comes from the expected mode, or from thresholds measured
# for the checkpoint, like the embedded tiny checkpoint's below.
Thresholds.DEFAULT = Thresholds(lpips_max=0.1, ssim_min=0.85, psnr_min=22.0)


@dataclass(frozen=True)
class ThresholdOverrides:
    """Partial thresholds from one level of configuration; None = inherit."""

    lpips: float | None = None
    ssim: float | None = None
    psnr: float | None = None

    def over(self, base: ThresholdOverrides) -> ThresholdOverrides:
        """These overrides on top of ``base`` (ours win where set)."""
        return replace(base, **{k: v for k, v in vars(self).items() if v is not None})

    def apply(self, base: Thresholds) -> Thresholds:
        return Thresholds(
            lpips_max=base.lpips_max if self.lpips is None else self.lpips,
            ssim_min=base.ssim_min if self.ssim is None else self.ssim,
            psnr_min=base.psnr_min if self.psnr is None else self.psnr,
        )


# The embedded tiny checkpoint's thresholds, per scheme kind (storage dtype or quantization
# method): each limit lies midway on a log scale between the worst honest image of that scheme and
# the mildest damaged one (quant_guard/tiny/settings.py, measured by benchmarks/tiny_quality.py):
# geometric mean for LPIPS and 1 - SSIM, mean of the dB values, rounded. A scheme kind without a
# measurement gets the package defaults: a 4-bit scheme is not held to a float8 limit.
EMBEDDED_THRESHOLDS: dict[str, dict[str, ThresholdOverrides]] = {
    "tiny": {
        "float8_e4m3fn": ThresholdOverrides(lpips=0.008, ssim=0.975, psnr=34.0),
        "torchao_int8_w8a16": ThresholdOverrides(lpips=0.003, ssim=0.981, psnr=39.0),
        "torchao_fp8_w8a16": ThresholdOverrides(lpips=0.0066, ssim=0.979, psnr=36.5),
        "torchao_int8_w8a8": ThresholdOverrides(lpips=0.005, ssim=0.981, psnr=38.5),
        "bitsandbytes_nf4": ThresholdOverrides(lpips=0.023, ssim=0.96, psnr=31.0),
    },
}


def embedded_thresholds(embedded: str | None, kind: str) -> ThresholdOverrides:
    """What an embedded checkpoint brings for a scheme kind (nothing for other checkpoints)."""
    return EMBEDDED_THRESHOLDS.get(embedded or "", {}).get(kind, ThresholdOverrides())


def resolve_thresholds(base: Thresholds, *levels: ThresholdOverrides) -> Thresholds:
    for level in levels:
        base = level.apply(base)
    return base


@dataclass(frozen=True)
class ExpectedSettings:
    """The "expected" mode: fail when a metric is worse than the value recorded at the last
    ``--update-golden`` by more than ``lpips <= expected * lpips_factor + lpips_margin``,
    ``ssim >= expected - ssim_margin``, ``psnr >= expected - psnr_margin_db``."""

    enabled: bool = True
    lpips_factor: float = 1.1
    lpips_margin: float = 0.005
    ssim_margin: float = 0.005
    psnr_margin_db: float = 1.0


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
