"""Metrics history across runs: one JSON Lines record per visual test and run, the drift alarm
that compares a case with its own recent past, and the ``quant-guard history`` views.

The store is a folder of ``<host>-<run id>-<pid>.jsonl`` files: every writing process owns its
file and only appends to it, so concurrent xdist runs, CI shards and merged folders from other
machines never contend for one file, and merging two stores is copying files. Reading globs
every file, skips a truncated last line (a run killed mid-write) and ignores unknown fields.

Stdlib only: the plugin imports this module on every run.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import math
import os
import re
import socket
import statistics
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from quant_guard.store.fingerprint import FINGERPRINT_KEYS
from quant_guard.config.thresholds import IMAGE_METRICS
from quant_guard.judge.trend_stats import Scale, mann_kendall, theil_sen
from quant_guard.config.units import format_bytes, format_seconds

HISTORY_VERSION = 1
SUFFIX = ".jsonl"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# name -> higher is better; the metrics a history record keeps and the alarm can watch
METRICS: dict[str, bool] = {"lpips": False, "ssim": True, "psnr": True, "peak_memory_bytes": False,
                            "resident_memory_bytes": False, "median_step_s": False}


@dataclass(frozen=True)
class RunInfo:
    """What every record of one run shares."""

    run_id: str
    date: str  # ISO 8601, UTC
    host: str
    commit: str | None

    @classmethod
    def current(cls, *, cwd: Path | None = None) -> RunInfo:
        """This run: the id from QG_RUN_ID, else GitHub's run id and attempt, else the start time."""
        now = dt.datetime.now(dt.timezone.utc)
        run_id = os.environ.get("QG_RUN_ID") or (
            f"gh{os.environ['GITHUB_RUN_ID']}.{os.environ.get('GITHUB_RUN_ATTEMPT', '1')}"
            if os.environ.get("GITHUB_RUN_ID") else now.strftime("%Y%m%dT%H%M%SZ"))
        return cls(run_id=run_id, date=now.isoformat(timespec="seconds"), host=socket.gethostname(),
                   commit=current_commit(cwd))


def current_commit(cwd: Path | None = None) -> str | None:
    """GITHUB_SHA, else ``git rev-parse HEAD`` of ``cwd`` when git answers within 5 s, else None."""
    if os.environ.get("GITHUB_SHA"):
        return os.environ["GITHUB_SHA"]
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = proc.stdout.strip()
    return sha if proc.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", sha) else None


def environment_hash(environment: Mapping[str, Any]) -> str:
    """A stable short hash of the fingerprint fields that decide whether two runs are comparable
    (device, GPU, driver, torch, cuDNN, DiffSynth, CPU features, determinism); versions of
    Python and quant_guard and the date are left out."""
    fields = {k: environment.get(k) for k in FINGERPRINT_KEYS}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class HistoryRecord:
    run_id: str
    date: str
    host: str
    commit: str | None
    test_id: str
    checkpoint: str
    scheme: str | None
    case: str
    seed: int
    verdict: str
    metrics: dict[str, float | None]  # the keys of METRICS; None where not measured
    env_hash: str
    environment: dict[str, Any] = field(default_factory=dict)  # the fingerprint fields themselves
    # the limits the run applied, by METRICS key (a threshold's max or min; None or absent: none),
    # so a trend can draw the threshold of its time without the configuration
    limits: dict[str, float | None] = field(default_factory=dict)
    # what the run was judged against: a hash of the golden and its expected metrics
    # (GoldenStore.baseline_id); a new one marks a re-baseline. None: not known (older records)
    baseline_id: str | None = None
    # ``metrics`` compare the candidate with its golden; where the bf16 reference was also rendered
    # in the run (a drift check, live mode) these are the candidate's lpips/ssim/psnr against it
    reference_metrics: dict[str, float | None] = field(default_factory=dict)

    def value(self, metric: str) -> float | None:
        return self.metrics.get(metric)

    def against_reference(self) -> HistoryRecord:
        """This record with the image metrics of the candidate against the bf16 render of its own
        run in place of those against the golden (None where that render was not made): the second
        series the alarm watches."""
        return replace(self, metrics={**self.metrics, **{k: self.reference_metrics.get(k) for k in IMAGE_METRICS}})

    def to_json(self) -> str:
        return json.dumps({"qg_history": HISTORY_VERSION, **asdict(self)}, sort_keys=False,
                          separators=(",", ":"), ensure_ascii=False, default=str)

    @classmethod
    def from_json(cls, data: Any) -> HistoryRecord:
        """From a parsed line; unknown fields are ignored, a missing or mistyped one is a ValueError."""
        if not isinstance(data, dict):
            raise ValueError(f"a record must be a JSON object, got {type(data).__name__}")
        try:
            metrics = data["metrics"]
            if not isinstance(metrics, dict):
                raise ValueError("metrics must be an object")
            return cls(run_id=str(data["run_id"]), date=str(data["date"]), host=str(data["host"]),
                       commit=data.get("commit"), test_id=str(data["test_id"]), checkpoint=str(data["checkpoint"]),
                       scheme=data.get("scheme"), case=str(data["case"]), seed=int(data["seed"]),
                       verdict=str(data["verdict"]),
                       metrics={str(k): _number(v) for k, v in metrics.items()},
                       env_hash=str(data["env_hash"]), environment=dict(data.get("environment") or {}),
                       limits={str(k): _number(v) for k, v in (data.get("limits") or {}).items()},
                       baseline_id=None if data.get("baseline_id") is None else str(data["baseline_id"]),
                       reference_metrics={str(k): _number(v)
                                          for k, v in (data.get("reference_metrics") or {}).items()})
        except KeyError as exc:
            raise ValueError(f"missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)) or value in ("inf", "-inf", "nan"):
        return float(value)
    return None


def from_result(record: Mapping[str, Any], run: RunInfo) -> HistoryRecord:
    """The history record of one results.json record (see quant_guard.report.records). A case
    judged against the bf16 render of its run (``drift``) reports that comparison as its
    ``metrics``; the history keeps both, the golden one as ``metrics``: a fault that both renders
    share (the VAE, a text encoder) shows only there."""
    drift = record.get("drift") if isinstance(record.get("drift"), Mapping) else {}
    metrics = _comparison_metrics(drift, "candidate_vs_golden") or record.get("metrics") or {}
    reference = _comparison_metrics(drift, "candidate_vs_reference")
    render = record.get("candidate_render") or {}
    memory = render.get("memory") or {}
    steps = [float(s) for s in render.get("step_times_s") or [] if _number(s) is not None]
    environment = record.get("environment") or {}
    fingerprint = {k: environment[k] for k in FINGERPRINT_KEYS if k in environment}
    return HistoryRecord(
        run_id=run.run_id, date=run.date, host=run.host, commit=run.commit,
        test_id=str(record.get("id")), checkpoint=str(record.get("checkpoint")), scheme=record.get("scheme"),
        case=str(record.get("case")), seed=int(record.get("seed") or 0), verdict=str(record.get("verdict")),
        metrics={"lpips": _number(metrics.get("lpips")), "ssim": _number(metrics.get("ssim")),
                 "psnr": _number(metrics.get("psnr")), "peak_memory_bytes": _number(memory.get("peak_bytes")),
                 "resident_memory_bytes": _number(memory.get("at_start_bytes")),
                 "median_step_s": statistics.median(steps) if steps else None},
        env_hash=environment_hash(fingerprint), environment=fingerprint, limits=_limits_of(record),
        baseline_id=None if record.get("baseline_id") is None else str(record["baseline_id"]),
        reference_metrics={k: _number(reference.get(k)) for k in IMAGE_METRICS} if reference else {})


def _comparison_metrics(drift: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The metrics of one comparison of a serialized drift check; empty when it has none."""
    comparison = drift.get(name)
    metrics = comparison.get("metrics") if isinstance(comparison, Mapping) else None
    return metrics if isinstance(metrics, Mapping) else {}


_CHECK_METRICS = {"LPIPS": "lpips", "SSIM": "ssim", "PSNR": "psnr"}


def _limits_of(record: Mapping[str, Any]) -> dict[str, float | None]:
    """The thresholds (not the expected-mode bounds) and budgets that judged a results.json record:
    the checks' own limits, else the checkpoint's configured budget."""
    out: dict[str, float | None] = {}
    for check in record.get("checks") or []:
        key = _CHECK_METRICS.get(str(check.get("metric"))) if isinstance(check, Mapping) else None
        if key and check.get("source") == "threshold":
            out[key] = _number(check.get("limit"))
    for check in record.get("budget_checks") or []:
        if not isinstance(check, Mapping):
            continue
        name = str(check.get("name", ""))
        if name.startswith("peak"):
            out["peak_memory_bytes"] = _number(check.get("limit"))
        elif name.startswith("step time"):
            out["median_step_s"] = _number(check.get("limit"))
    limits = record.get("limits") or {}
    for key, budget in (("peak_memory_bytes", "peak_memory_bytes"), ("median_step_s", "step_time_s")):
        if out.get(key) is None and _number(limits.get(budget)) is not None:
            out[key] = _number(limits.get(budget))
    return {k: v for k, v in out.items() if v is not None}


# ---- the store -------------------------------------------------------------------------------

def run_file(directory: Path, run: RunInfo) -> Path:
    """This process's file of the run (the pid keeps two processes of one run apart)."""
    name = f"{_UNSAFE.sub('_', run.host)}-{_UNSAFE.sub('_', run.run_id)}-{os.getpid()}{SUFFIX}"
    return directory / name


def append(directory: Path, records: Iterable[HistoryRecord], run: RunInfo) -> Path:
    """Append ``records`` to this process's file of the run; never rewrites anything. Each line
    goes out in one O_APPEND write, so a crash leaves at most one truncated last line."""
    directory.mkdir(parents=True, exist_ok=True)
    path = run_file(directory, run)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for r in records:
            os.write(fd, (r.to_json() + "\n").encode("utf-8"))
    finally:
        os.close(fd)
    return path


@dataclass(frozen=True)
class History:
    records: tuple[HistoryRecord, ...]
    skipped: tuple[str, ...] = ()  # "file:line: why" of each line that was not read

    def runs(self) -> list[str]:
        """Run ids, oldest first (by the run's date, then id)."""
        first: dict[str, str] = {}
        for r in self.records:
            first[r.run_id] = min(first.get(r.run_id, r.date), r.date)
        return sorted(first, key=lambda run_id: (first[run_id], run_id))

    def of_run(self, run_id: str) -> list[HistoryRecord]:
        return [r for r in self.records if r.run_id == run_id]

    def course(self, test_id: str) -> list[HistoryRecord]:
        order = {run_id: i for i, run_id in enumerate(self.runs())}
        return sorted((r for r in self.records if r.test_id == test_id), key=lambda r: order[r.run_id])


def read(directory: Path) -> History:
    """Every record under ``directory``; a truncated last line or a malformed line is skipped and
    listed in ``skipped``."""
    records: list[HistoryRecord] = []
    skipped: list[str] = []
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such history directory")
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        got, problems = read_file(path)
        records += got
        skipped += problems
    return History(tuple(records), tuple(skipped))


def read_file(path: Path) -> tuple[list[HistoryRecord], list[str]]:
    """The records of one history file, and "file:line: why" of each line that was not read."""
    records: list[HistoryRecord] = []
    skipped: list[str] = []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(HistoryRecord.from_json(json.loads(line)))
        except ValueError as exc:
            truncated = number == len(lines) and not text.endswith("\n")
            skipped.append(f"{path.name}:{number}: {'truncated last line' if truncated else exc}")
    return records, skipped


# ---- the drift alarm ---------------------------------------------------------------------------

class AlarmMode(str, Enum):
    FAIL = "fail"
    WARN = "warn"


class AlarmStatus(str, Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    TOO_FEW_RUNS = "too-few-runs"  # not enough earlier runs in this environment to judge


# How the alarm reads each metric (quant_guard.judge.trend_stats): errors, memory and time as ratios,
# SSIM as its dissimilarity 1 - SSIM on a log scale, PSNR as differences in dB.
SCALES: dict[str, Scale] = {"lpips": Scale.LOG, "ssim": Scale.LOG_DISSIMILARITY, "psnr": Scale.DB,
                            "peak_memory_bytes": Scale.LOG, "resident_memory_bytes": Scale.LOG,
                            "median_step_s": Scale.LOG}


# The default bound of a psnr alarm in the configuration: x1.5 of the error (10 log10 1.5 dB), as lpips's ratio.
PSNR_AMOUNT_DB = 1.76


@dataclass(frozen=True)
class HistoryAlarm:
    """``history_alarm = { metric = "lpips", ratio = 1.5, window = 10, min_runs = 3, step_runs = 3,
    alpha = 0.05, mode = "fail" }``. Three rules on the test's runs in the same environment since
    its last re-baseline, each on the metric's own scale (``SCALES``); "worse than the bound" is
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

    def bound(self) -> str:
        """The bound as the messages print it: ``x1.5``, ``+0.01``, ``x1.5 of the error (1.76 dB)``."""
        scale, parts = SCALES[self.metric], []
        if self.ratio is not None:
            parts.append(f"x{self.ratio:g}" + {Scale.LOG: "", Scale.LOG_DISSIMILARITY: " of 1 - SSIM",
                                                Scale.DB: f" of the error ({10 * math.log10(self.ratio):.3g} dB)"}[scale])
        if self.amount is not None:
            parts.append(f"{'-' if METRICS[self.metric] else '+'}{self.amount:g}{' dB' if scale is Scale.DB else ''}")
        return " and ".join(parts)


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
             f"{alarm.bound()})" if jumped else
             f"{label}{metric} {value:.6g} within {limit:.6g} (median {median:.6g} of runs {', '.join(runs)})"]
    if trend is not None:
        scale = SCALES[metric]
        line = (f"{label}trend in {metric}: {scale.describe_rate(trend.slope)} (Theil-Sen) over runs "
                f"{trend.runs[0]} to {trend.runs[-1]} ({len(trend.runs)} runs, Mann-Kendall p = {trend.p_value:.2g} "
                f"< {alarm.alpha:g}); at that rate {alarm.window} runs take it from {trend.start:.6g} to "
                f"{trend.end:.6g} {op} {trend.limit:.6g} ({alarm.bound()})")
        lines.insert(1 if jumped else 0, line)
    if step is not None:
        source = baseline.source if baseline is not None else Baseline(0.0).source
        line = (f"{label}step change in {metric} against its baseline: median {step.median_after:.6g} of runs "
                f"{', '.join(step.after)} {op} {step.limit:.6g} (baseline {step.median_before:.6g}: median of "
                f"runs {', '.join(step.before)}, {source}; {alarm.bound()})")
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


# ---- trends in the report -----------------------------------------------------------------------

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


# ---- views (quant-guard history) ---------------------------------------------------------------

def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


# the metrics shown with a unit (memory as 985.93 MiB, not 1.03382e+09); the CSV export keeps raw values
UNIT_FORMATS: dict[str, Callable[[float], str]] = {"peak_memory_bytes": format_bytes,
                                                   "resident_memory_bytes": format_bytes,
                                                   "median_step_s": format_seconds}


def _fmt(value: float | None, metric: str = "") -> str:
    if value is None:
        return "-"
    if metric in UNIT_FORMATS:
        return UNIT_FORMATS[metric](value)
    return f"{value:.6g}"


def _fmt_change(before: float | None, after: float | None, metric: str) -> str:
    if before is None or after is None:
        return "-"
    delta = after - before
    if metric in UNIT_FORMATS:  # a unit after the number: the sign goes in front
        return ("+" if delta >= 0 else "-") + _fmt(abs(delta), metric)
    return f"{delta:+.6g}"


def list_runs(history: History) -> str:
    rows = []
    for run_id in history.runs():
        records = history.of_run(run_id)
        failed = sum(1 for r in records if r.verdict not in ("passed", "updated"))
        rows.append([run_id, min(r.date for r in records), records[0].host, (records[0].commit or "-")[:12],
                     ", ".join(sorted({r.env_hash for r in records})), str(len(records)), str(failed)])
    return table(["run", "date", "host", "commit", "environment", "tests", "failed"], rows)


def compare_runs(history: History, run_a: str, run_b: str) -> str:
    known = set(history.runs())
    for run_id in (run_a, run_b):
        if run_id not in known:
            raise ValueError(f"no run {run_id!r} in the history (known: {', '.join(history.runs()) or 'none'})")
    a = {r.test_id: r for r in history.of_run(run_a)}
    b = {r.test_id: r for r in history.of_run(run_b)}
    rows = []
    for test_id in sorted(set(a) | set(b)):
        ra, rb = a.get(test_id), b.get(test_id)
        for metric in METRICS:
            va, vb = ra.value(metric) if ra else None, rb.value(metric) if rb else None
            rows.append([test_id, metric, _fmt(va, metric), _fmt(vb, metric), _fmt_change(va, vb, metric)])
    out = table(["test", "metric", run_a, run_b, "change"], rows)
    envs_a = {r.env_hash for r in a.values()}
    envs_b = {r.env_hash for r in b.values()}
    if envs_a != envs_b:
        out += (f"\nnote: the runs ran in different environments ({', '.join(sorted(envs_a))} vs "
                f"{', '.join(sorted(envs_b))}): changes may come from the environment")
    return out


def course(history: History, test_id: str) -> str:
    records = history.course(test_id)
    if not records:
        known = sorted({r.test_id for r in history.records})
        raise ValueError(f"no test {test_id!r} in the history (known: {', '.join(known) or 'none'})")
    rows = [[r.run_id, r.date, r.env_hash, r.verdict, *(_fmt(r.value(m), m) for m in METRICS)] for r in records]
    return table(["run", "date", "environment", "verdict", *METRICS], rows)


CSV_COLUMNS = ("run_id", "date", "host", "commit", "test_id", "checkpoint", "scheme", "case", "seed",
               "verdict", "env_hash", *METRICS)


def to_csv(history: History) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    order = {run_id: i for i, run_id in enumerate(history.runs())}
    for r in sorted(history.records, key=lambda r: (order[r.run_id], r.test_id)):
        base = [getattr(r, c) for c in CSV_COLUMNS if c not in METRICS]
        values = [r.value(m) for m in METRICS]
        writer.writerow(["" if v is None else v for v in [*base, *values]])
    return out.getvalue()
