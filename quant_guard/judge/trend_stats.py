"""The statistics of the history alarm's trend rule (quant_guard.judge.history_alarm): the Mann-Kendall trend
test and the Theil-Sen slope, and the scales the alarm reads a metric on.

- **Mann-Kendall** (Mann 1945, Kendall 1975): S = sum over pairs i < j of sign(x_j - x_i); under
  "no trend" S is near normal with variance (n(n-1)(2n+5) - sum_t t(t-1)(2t+5)) / 18, t the size
  of each group of tied values (bit-identical renders give exactly tied metrics). The p-value of
  an increase is one-sided, with the usual continuity correction (S - 1). Rank-based, so it
  answers the same on any monotone scale, and one outlier moves S by at most n - 1.
- **Theil-Sen** (Theil 1950, Sen 1968): the slope is the median of the pairwise slopes
  (x_j - x_i) / (j - i); robust to about 29% outliers, so one spike does not tilt it.

Plain Python, no numpy or scipy: the plugin imports the history on every run, the windows are a
few dozen runs (O(n^2) pairs is nothing), and tests/judge/test_trend_alarm.py checks both against
``scipy.stats`` (present as scikit-image's dependency, not imported here).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class MannKendall:
    s: int
    variance: float  # of S under "no trend", tie-corrected
    p_increase: float  # one-sided p-value of an increasing trend (1.0 when every value ties)


def mann_kendall(values: Sequence[float]) -> MannKendall:
    """The Mann-Kendall test of ``values`` (in order of time) for an increasing trend."""
    n = len(values)
    s = sum((values[j] > values[i]) - (values[j] < values[i]) for i in range(n) for j in range(i + 1, n))
    ties = sum(t * (t - 1) * (2 * t + 5) for t in Counter(values).values())
    variance = (n * (n - 1) * (2 * n + 5) - ties) / 18
    if variance <= 0:
        return MannKendall(s, 0.0, 1.0)
    z = (s - 1) / math.sqrt(variance) if s > 0 else (s + 1) / math.sqrt(variance) if s < 0 else 0.0
    return MannKendall(s, variance, 0.5 * math.erfc(z / math.sqrt(2)))


def theil_sen(values: Sequence[float]) -> tuple[float, float]:
    """The Theil-Sen line of ``values`` at positions 0, 1, ...: (slope per position, intercept at
    position 0; the median of value - slope * position). At least two values."""
    n = len(values)
    if n < 2:
        raise ValueError(f"a Theil-Sen slope needs at least 2 values, got {n}")
    slope = statistics.median((values[j] - values[i]) / (j - i) for i in range(n) for j in range(i + 1, n))
    return slope, statistics.median(v - slope * i for i, v in enumerate(values))


# ---- scales ----------------------------------------------------------------------------------------

# An error of exactly 0 (bit-identical images) counts as this on a log scale; PSNR inf as PSNR_CAP_DB.
LOG_FLOOR = 1e-6
PSNR_CAP_DB = 100.0
_DB = 10 / math.log(10)  # dB per natural-log unit of a power ratio


class Scale(str, Enum):
    """Where a metric's steady drift is a straight line and "worse by a factor" means the same at
    every level. ``to_scale`` maps a value to natural-log units of its error (up is worse), so a
    bound ``ratio`` is ``ln(ratio)`` on every scale."""

    LOG = "log"  # ln(value): LPIPS, memory, time (lower is better; ratios)
    LOG_DISSIMILARITY = "log(1 - value)"  # SSIM: its dissimilarity 1 - SSIM on a log scale
    DB = "dB"  # PSNR: already 10 log10 of an error (MSE) ratio; differences in dB, never ratios of dB

    def to_scale(self, value: float) -> float:
        if self is Scale.LOG:
            return math.log(max(value, LOG_FLOOR))
        if self is Scale.LOG_DISSIMILARITY:
            return math.log(max(1 - value, LOG_FLOOR))
        return -min(value, PSNR_CAP_DB) / _DB

    def from_scale(self, y: float) -> float:
        if self is Scale.LOG:
            return math.exp(y)
        if self is Scale.LOG_DISSIMILARITY:
            return 1 - math.exp(y)
        return -y * _DB

    def describe_rate(self, slope: float) -> str:
        """A slope on this scale per run in the metric's words: ``+5.1% per run``, ``-0.39 dB per run``."""
        if self is Scale.DB:
            return f"{-slope * _DB:+.3g} dB per run"
        change = f"{math.expm1(slope) * 100:+.3g}% per run"
        return f"{change} of 1 - SSIM" if self is Scale.LOG_DISSIMILARITY else change
