"""The limits policy of a checkpoint and a run, as settings: hard limits on memory and step time
(``Budget``), how far a bf16 render may drift from its golden (``DriftTolerance``, ``ReferenceMode``),
the metrics history's alarm (``HistoryAlarm``) and the report's trends (``TrendSettings``).

Plain data, validated where it is built (``quant_guard.config.project`` parses them from the TOML);
the judge wing applies them (``judge.budgets``, ``judge.drift``, ``judge.history_alarm``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

from quant_guard.config.units import format_bytes, format_seconds


# ---- hard limits on a render ---------------------------------------------------------------------

class PeakCounts(str, Enum):
    """Which CUDA figure a peak-memory limit applies to."""

    DEVICE = "device"  # the device's used memory (falls back to RESERVED where not measured)
    RESERVED = "reserved"  # the caching allocator's reserve
    ALLOCATED = "allocated"  # allocated tensors only


class StepStatistic(str, Enum):
    MEDIAN = "median"
    MEAN = "mean"
    MAX = "max"


@dataclass(frozen=True)
class Budget:
    """The limits that apply to one test (None = unlimited)."""

    peak_memory_bytes: int | None = None
    step_time_s: float | None = None
    resident_memory_bytes: int | None = None
    statistic: StepStatistic = StepStatistic.MEDIAN
    warmup_steps: int = 1
    peak_counts: PeakCounts = PeakCounts.DEVICE

    def override(self, *, peak_memory_bytes: int | None = None, step_time_s: float | None = None,
                 resident_memory_bytes: int | None = None) -> Budget:
        return replace(
            self,
            peak_memory_bytes=self.peak_memory_bytes if peak_memory_bytes is None else peak_memory_bytes,
            step_time_s=self.step_time_s if step_time_s is None else step_time_s,
            resident_memory_bytes=(self.resident_memory_bytes if resident_memory_bytes is None
                                   else resident_memory_bytes),
        )

    @property
    def empty(self) -> bool:
        return self.peak_memory_bytes is None and self.step_time_s is None and self.resident_memory_bytes is None


# ---- drift ---------------------------------------------------------------------------------------

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


# ---- the metrics history -------------------------------------------------------------------------

# name -> higher is better; the metrics a history record keeps and the alarm can watch
# (text_cer: the text check's character error rate, only for a case with expect_text; flicker and
# exposure_flicker: a video case's, in pixel levels, quant_guard.judge.temporal)
METRICS: dict[str, bool] = {"lpips": False, "ssim": True, "psnr": True, "text_cer": False, "flicker": False,
                            "exposure_flicker": False, "peak_memory_bytes": False,
                            "resident_memory_bytes": False, "median_step_s": False}
# how the metrics with a unit print
UNIT_FORMATS: dict[str, Callable[[float], str]] = {"peak_memory_bytes": format_bytes,
                                                   "resident_memory_bytes": format_bytes,
                                                   "median_step_s": format_seconds}


class AlarmMode(str, Enum):
    FAIL = "fail"
    WARN = "warn"


# The default bound of a psnr alarm in the configuration: x1.5 of the error (10 log10 1.5 dB), as lpips's ratio.
PSNR_AMOUNT_DB = 1.76


@dataclass(frozen=True)
class HistoryAlarm:
    """``history_alarm = { metric = "lpips", ratio = 1.5, window = 10, min_runs = 3, step_runs = 3,
    alpha = 0.05, mode = "fail" }``. Three rules on the test's runs in the same environment since
    its last re-baseline, each on the metric's own scale (``judge.history_alarm.SCALES``); "worse than the bound" is
    worse by more than ``ratio`` (a factor of the error: of LPIPS, of 1 - SSIM, of the MSE for PSNR,
    where x1.5 is 1.76 dB) or ``amount`` (in the metric's unit, dB for PSNR; with both, the more
    lenient):

    - **jump**: this run against the median of the last ``window`` earlier runs;
    - **trend** (``alpha`` > 0): over those runs and this one, the Mann-Kendall test finds a
      worsening trend (one-sided p < ``alpha``) and the Theil-Sen slope would carry the metric
      beyond the bound within ``window`` runs;
    - **step** (``step_runs`` > 0): the median of the last ``step_runs`` runs (this one included)
      against the baseline, the median of the first ``min_runs`` runs since the last re-baseline.
      See ``judge_series``."""

    metric: str = "lpips"
    ratio: float | None = 1.5
    amount: float | None = None
    window: int = 10
    min_runs: int = 3
    step_runs: int = 3  # 0: no step test
    alpha: float = 0.05  # 0: no trend test
    mode: AlarmMode = AlarmMode.WARN

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"history alarm metric {self.metric!r} is not one of {', '.join(METRICS)}")
        if self.ratio is None and self.amount is None:
            raise ValueError("a history alarm needs a ratio or an amount")


BASELINES = ("oldest", "previous")  # or a run id


@dataclass(frozen=True)
class TrendSettings:
    """``history_report = { runs = 20, baseline = "oldest", metric = "lpips", top = 10 }``: the
    sparklines cover the last ``runs`` runs of the history; the "moved most" table compares each
    checkpoint's latest run with ``baseline`` ("oldest": the oldest run in that window, which shows
    a slow slope in full; "previous": the run before the latest; or a run id) by ``metric``."""

    runs: int = 20
    baseline: str = "oldest"
    metric: str = "lpips"
    top: int = 10
