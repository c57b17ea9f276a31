"""The metrics history's drift alarm: a test's metric judged against its own earlier runs in the
same environment since its last re-baseline (jump, trend and step rules; ``config.limits.HistoryAlarm``
sets them). Pure functions of the records and numbers; the run wing applies it to finished checks
(``run.history_gate``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import Enum

from quant_guard.config.limits import METRICS, AlarmMode, HistoryAlarm
from quant_guard.judge.trend_stats import Scale, mann_kendall, theil_sen
from quant_guard.store.history import HistoryRecord


class AlarmStatus(str, Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    TOO_FEW_RUNS = "too-few-runs"  # not enough earlier runs in this environment to judge


# How the alarm reads each metric (quant_guard.judge.trend_stats): errors, memory and time as ratios,
# SSIM as its dissimilarity 1 - SSIM on a log scale, PSNR as differences in dB, the text CER and a
# video's flicker as ratios.
SCALES: dict[str, Scale] = {"lpips": Scale.LOG, "ssim": Scale.LOG_DISSIMILARITY, "psnr": Scale.DB, "text_cer": Scale.LOG,
                            "flicker": Scale.LOG, "exposure_flicker": Scale.LOG,
                            "peak_memory_bytes": Scale.LOG, "resident_memory_bytes": Scale.LOG,
                            "median_step_s": Scale.LOG}


@dataclass(frozen=True)
class Baseline:
    """What the step test compares with: a value of the metric and the runs it is the median of."""

    value: float
    runs: tuple[str, ...] = ()
    source: str = "the first runs since the last re-baseline"


@dataclass(frozen=True)
class StepChange:
    """A detected step: the baseline's runs, the recent runs (ending with this run), their medians."""

    before: tuple[str, ...]
    after: tuple[str, ...]
    median_before: float
    median_after: float
    limit: float


@dataclass(frozen=True)
class Trend:
    """A detected trend: the runs tested (ending with this run), the Mann-Kendall p-value, the
    Theil-Sen slope per run on the metric's scale, and the fitted level ``window`` runs before this
    run at that slope (``start``), at this run (``end``) and the bound from ``start`` (``limit``)."""

    runs: tuple[str, ...]
    p_value: float
    slope: float
    start: float
    end: float
    limit: float


@dataclass(frozen=True)
class AlarmResult:
    status: AlarmStatus
    message: str
    compared: tuple[str, ...] = ()  # the run ids whose median was the jump rule's reference
    median: float | None = None
    step: StepChange | None = None  # the step found, when the step test fired
    excluded: int = 0  # earlier runs of this test in other environments, never compared
    trend: Trend | None = None  # the trend found, when the trend test fired
    rebaselined: int = 0  # earlier runs in this environment before the last re-baseline, never compared


def _usable(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def since_rebaseline(records: Sequence[HistoryRecord], baseline_id: str | None) -> list[HistoryRecord]:
    """The last records of ``records`` (oldest first) judged against ``baseline_id``: the runs
    since the last re-baseline (a new golden or new expected metrics; quant_guard.store.golden)."""
    start = len(records)
    while start > 0 and records[start - 1].baseline_id == baseline_id:
        start -= 1
    return list(records[start:])


def check_alarm(current: HistoryRecord, history: Iterable[HistoryRecord], alarm: HistoryAlarm) -> AlarmResult:
    """Judge ``current`` against its test's earlier runs that share its environment hash and its
    re-baseline (``judge_series``). Runs in other environments or before the last re-baseline are
    never used, and the message says how many were left out."""
    metric = alarm.metric
    value = current.value(metric)
    earlier = [r for r in history if r.test_id == current.test_id and r.run_id != current.run_id
               and r.date <= current.date and _usable(r.value(metric))]
    earlier.sort(key=lambda r: (r.date, r.run_id))
    same_env = [r for r in earlier if r.env_hash == current.env_hash]
    segment = since_rebaseline(same_env, current.baseline_id)
    other = len({r.run_id for r in earlier if r.env_hash != current.env_hash})
    before = len(same_env) - len(segment)
    note = (f"; {before} earlier run(s) in this environment before the last re-baseline are not compared"
            if before else "") + (f"; {other} run(s) in another environment are not compared" if other else "")
    if not _usable(value):
        return AlarmResult(AlarmStatus.TOO_FEW_RUNS, f"{current.test_id}: no {metric} in this run", excluded=other,
                           rebaselined=before)
    series = [(r.run_id, r.value(metric)) for r in segment] + [(current.run_id, value)]
    judged = judge_series(series, alarm, label=f"{current.test_id}: ",  # type: ignore[arg-type]
                          where=f" in this environment ({current.env_hash})")
    return replace(judged, message=judged.message + note, excluded=other, rebaselined=before)


def judge_series(series: Sequence[tuple[str, float]], alarm: HistoryAlarm, *, label: str = "",
                 where: str = "", baseline: Baseline | None = None) -> AlarmResult:
    """Judge the last run of ``series`` ((run id, value of ``alarm.metric``), oldest first: the
    runs of one comparison since its last re-baseline, in one environment) by the jump, trend and
    step rules of ``alarm``. ``baseline`` defaults to the median of the first ``alarm.min_runs``
    runs of ``series``. Messages start with ``label`` + the metric."""
    metric, higher_is_better = alarm.metric, METRICS[alarm.metric]
    *earlier, (run_id, value) = series
    window = earlier[-alarm.window:]
    runs = tuple(r for r, _ in window)
    if len(earlier) < alarm.min_runs:
        return AlarmResult(AlarmStatus.TOO_FEW_RUNS, f"{label}{metric} history has {len(earlier)} earlier run(s)"
                           f"{where}, needs {alarm.min_runs}", compared=runs)
    median = statistics.median(v for _, v in window)
    limit = _limit(median, alarm)
    op = "<" if higher_is_better else ">"
    jumped = _worse(value, limit, higher_is_better)
    trend = find_trend(series[-(alarm.window + 1):], alarm) if alarm.alpha > 0 else None
    step = find_step(series, alarm, baseline) if alarm.step_runs else None
    lines = [f"{label}{metric} {value:.6g} {op} {limit:.6g} (median {median:.6g} of runs {', '.join(runs)}{where}, "
             f"{alarm_bound(alarm)})" if jumped else
             f"{label}{metric} {value:.6g} within {limit:.6g} (median {median:.6g} of runs {', '.join(runs)})"]
    if trend is not None:
        scale = SCALES[metric]
        line = (f"{label}trend in {metric}: {scale.describe_rate(trend.slope)} (Theil-Sen) over runs "
                f"{trend.runs[0]} to {trend.runs[-1]} ({len(trend.runs)} runs, Mann-Kendall p = {trend.p_value:.2g} "
                f"< {alarm.alpha:g}); at that rate {alarm.window} runs take it from {trend.start:.6g} to "
                f"{trend.end:.6g} {op} {trend.limit:.6g} ({alarm_bound(alarm)})")
        lines.insert(1 if jumped else 0, line)
    if step is not None:
        source = baseline.source if baseline is not None else Baseline(0.0).source
        line = (f"{label}step change in {metric} against its baseline: median {step.median_after:.6g} of runs "
                f"{', '.join(step.after)} {op} {step.limit:.6g} (baseline {step.median_before:.6g}: median of "
                f"runs {', '.join(step.before)}, {source}; {alarm_bound(alarm)})")
        lines.insert(len(lines) - (0 if jumped else 1), line)
    fired = jumped or trend is not None or step is not None
    status = (AlarmStatus.FAIL if alarm.mode is AlarmMode.FAIL else AlarmStatus.WARN) if fired else AlarmStatus.OK
    return AlarmResult(status, "\n".join(lines), compared=runs, median=median, step=step, trend=trend)


# The fewest runs (this one included) the trend test judges: with 4 or 5, a Mann-Kendall p < 0.05
# takes every pair in order (chance 1/24, 1/120 in a flat series) and the slope of so few runs,
# carried over a whole window, is mostly noise.
TREND_MIN_RUNS = 6


def find_trend(series: Sequence[tuple[str, float]], alarm: HistoryAlarm) -> Trend | None:
    """The worsening trend of ``series`` (run id, value; oldest first), or None: Mann-Kendall
    p < ``alarm.alpha`` on the metric's scale, and a Theil-Sen slope that takes the fitted level
    beyond the bound within ``alarm.window`` runs. A flat noisy series fails the second (its slope
    is near 0), one spike fails both (S moves by at most n - 1; the slope is a median)."""
    if len(series) < TREND_MIN_RUNS:
        return None
    scale = SCALES[alarm.metric]
    ys = [scale.to_scale(v) for _, v in series]
    test = mann_kendall(ys)
    if test.p_increase >= alarm.alpha:
        return None
    slope, intercept = theil_sen(ys)
    fitted = intercept + slope * (len(ys) - 1)
    start, end = scale.from_scale(fitted - slope * alarm.window), scale.from_scale(fitted)
    limit = _limit(start, alarm)
    if not _worse(end, limit, METRICS[alarm.metric]):
        return None
    return Trend(tuple(r for r, _ in series), test.p_increase, slope, start, end, limit)


def find_step(series: Sequence[tuple[str, float]], alarm: HistoryAlarm,
              baseline: Baseline | None = None) -> StepChange | None:
    """The step of ``series`` (run id, value; oldest first, the current run last) against
    ``baseline`` (default: the median of its first ``alarm.min_runs`` runs), or None: the median
    of its last ``alarm.step_runs`` runs is worse than the baseline by more than the bound. A
    median of three or more makes one noisy run no step; a shift is reported until re-baselined,
    however slowly it came."""
    if baseline is None:
        if len(series) < alarm.min_runs + alarm.step_runs:
            return None
        first = series[:alarm.min_runs]
        baseline = Baseline(statistics.median(v for _, v in first), tuple(r for r, _ in first))
    if len(series) < alarm.step_runs:
        return None
    recent = series[-alarm.step_runs:]
    median_after = statistics.median(v for _, v in recent)
    limit = _limit(baseline.value, alarm)
    if not _worse(median_after, limit, METRICS[alarm.metric]):
        return None
    return StepChange(baseline.runs, tuple(r for r, _ in recent), baseline.value, median_after, limit)


def _worse(value: float, limit: float, higher_is_better: bool) -> bool:
    return value < limit if higher_is_better else value > limit


def _limit(reference: float, alarm: HistoryAlarm) -> float:
    """The worst value still accepted against ``reference``: ``ratio`` on the metric's scale,
    ``amount`` in its unit; with both, the more lenient of the two."""
    scale, higher_is_better = SCALES[alarm.metric], METRICS[alarm.metric]
    reference = scale.from_scale(scale.to_scale(reference))  # PSNR inf as PSNR_CAP_DB, an error of 0 as LOG_FLOOR
    limits = []
    if alarm.ratio is not None:
        limits.append(scale.from_scale(scale.to_scale(reference) + math.log(alarm.ratio)))
    if alarm.amount is not None:
        limits.append(reference - alarm.amount if higher_is_better else reference + alarm.amount)
    return min(limits) if higher_is_better else max(limits)


def alarm_bound(alarm: HistoryAlarm) -> str:
    """The bound as the messages print it: ``x1.5``, ``+0.01``, ``x1.5 of the error (1.76 dB)``."""
    scale, parts = SCALES[alarm.metric], []
    if alarm.ratio is not None:
        parts.append(f"x{alarm.ratio:g}" + {Scale.LOG: "", Scale.LOG_DISSIMILARITY: " of 1 - SSIM",
                                            Scale.DB: f" of the error ({10 * math.log10(alarm.ratio):.3g} dB)"}[scale])
    if alarm.amount is not None:
        parts.append(f"{'-' if METRICS[alarm.metric] else '+'}{alarm.amount:g}{' dB' if scale is Scale.DB else ''}")
    return " and ".join(parts)
