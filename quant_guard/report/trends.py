"""Trends of the metrics history (quant_guard.store.history) for the report: per test a sparkline of
LPIPS, PSNR, peak memory and step time over the last runs, and per checkpoint the tests whose
metric moved most since a baseline run. Built from the history alone, so the same view serves
index.html after a run and the nightly's merged trend page (``quant-guard history DIR report``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from quant_guard.store.history import History, HistoryRecord
from quant_guard.config.limits import UNIT_FORMATS
from quant_guard.config.limits import BASELINES, METRICS, TrendSettings
from quant_guard.report.sparkline import sparkline
from quant_guard.report.view import Cell, Row, fmt_metric


def _fmt(metric: str) -> Callable[[float | None], str]:
    def fmt(value: float | None) -> str:
        if value is None:
            return "–"
        if metric in UNIT_FORMATS:
            return UNIT_FORMATS[metric](value)
        return fmt_metric(metric.upper(), value)

    return fmt


# (label, history metric) of the sparklines, in the order shown
SPARK_METRICS = (("LPIPS", "lpips"), ("PSNR", "psnr"), ("peak memory", "peak_memory_bytes"),
                 ("step time", "median_step_s"))


@dataclass(frozen=True)
class Spark:
    label: str
    svg: str  # inline SVG markup (built and escaped by quant_guard.report.sparkline)
    first: str
    last: str
    threshold: str  # "" when none


@dataclass(frozen=True)
class TestTrend:
    test_id: str
    checkpoint: str
    runs: tuple[str, ...]  # oldest first
    sparks: tuple[Spark, ...]
    env_changes: tuple[str, ...]  # "before run X: torch 2.5 → 2.6", one per change


@dataclass(frozen=True)
class MovedTable:
    checkpoint: str
    baseline: str  # run id
    latest: str
    headers: tuple[str, ...]
    rows: tuple[Row, ...]
    note: str = ""  # e.g. why there is no table


@dataclass(frozen=True)
class TrendsView:
    runs: tuple[str, ...]  # the window, oldest first
    settings: TrendSettings
    tests: dict[str, TestTrend]
    moved: tuple[MovedTable, ...]
    skipped: tuple[str, ...] = ()  # lines of the history that could not be read


def build_trends(history: History, settings: TrendSettings = TrendSettings(),
                 test_ids: Iterable[str] | None = None) -> TrendsView:
    """The trends of ``test_ids`` (default: every test in the window) over the last
    ``settings.runs`` runs. A baseline run id that is not in the history is a ValueError."""
    runs = history.runs()
    if settings.baseline not in BASELINES and settings.baseline not in runs:
        raise ValueError(f"history baseline {settings.baseline!r} is neither {' nor '.join(BASELINES)} nor a run "
                         f"in the history (known: {', '.join(runs[-5:]) or 'none'})")
    window = tuple(runs[-settings.runs:])
    in_window = set(window)
    if settings.baseline not in BASELINES and settings.baseline not in in_window:
        window = (settings.baseline, *window)  # an explicit baseline older than the window still counts
        in_window.add(settings.baseline)
    order = {run_id: i for i, run_id in enumerate(window)}
    by_test: dict[str, dict[str, HistoryRecord]] = {}
    for r in history.records:
        if r.run_id in in_window:
            by_test.setdefault(r.test_id, {})[r.run_id] = r  # a duplicate of a run: the last line wins
    wanted = list(dict.fromkeys(test_ids)) if test_ids is not None else sorted(by_test)
    tests = {}
    for test_id in wanted:
        records = sorted(by_test.get(test_id, {}).values(), key=lambda r: order[r.run_id])
        if records:
            tests[test_id] = _test_trend(records)
    return TrendsView(window, settings, tests, _moved_tables(by_test, window, settings, set(wanted)),
                      history.skipped)


def _test_trend(records: Sequence[HistoryRecord]) -> TestTrend:
    changes = [i for i in range(1, len(records)) if records[i].env_hash != records[i - 1].env_hash]
    described = tuple(f"before run {records[i].run_id}: {_env_difference(records[i - 1], records[i])}"
                      for i in changes)
    labels = [f"{r.run_id} ({r.date[:10]}, {r.verdict})" for r in records]
    sparks = []
    for label, metric in SPARK_METRICS:
        values = [r.value(metric) for r in records]
        threshold = records[-1].limits.get(metric)  # the limit of the latest run
        fmt = _fmt(metric)
        shown = [v for v in values if v is not None and math.isfinite(v)]
        title = (f"{label} over {len(records)} runs"
                 + (f": {fmt(shown[0])} → {fmt(shown[-1])}" if shown else "")
                 + (f"; threshold {fmt(threshold)}" if threshold is not None else "")
                 + (f"; {len(changes)} environment change(s)" if changes else ""))
        sparks.append(Spark(label, sparkline(values, threshold=threshold, env_changes=changes, labels=labels,
                                             title=title),
                            fmt(shown[0]) if shown else "–", fmt(shown[-1]) if shown else "–",
                            fmt(threshold) if threshold is not None else ""))
    return TestTrend(records[-1].test_id, records[-1].checkpoint, tuple(r.run_id for r in records), tuple(sparks),
                     described)


def _env_difference(before: HistoryRecord, after: HistoryRecord) -> str:
    keys = sorted(set(before.environment) | set(after.environment))
    changed = [f"{k} {_show(before.environment.get(k))} → {_show(after.environment.get(k))}" for k in keys
               if before.environment.get(k) != after.environment.get(k)]
    return ", ".join(changed) or f"environment {before.env_hash} → {after.env_hash}"


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "+".join(map(str, value)) or "none"
    return "–" if value is None else str(value)


# ---- moved most since the baseline ---------------------------------------------------------------

def _moved_tables(by_test: Mapping[str, Mapping[str, HistoryRecord]], window: Sequence[str],
                  settings: TrendSettings, wanted: set[str]) -> tuple[MovedTable, ...]:
    by_checkpoint: dict[str, list[str]] = {}
    for test_id, runs in by_test.items():
        if test_id in wanted:
            any_record = next(iter(runs.values()))
            by_checkpoint.setdefault(any_record.checkpoint, []).append(test_id)
    metric, higher_is_better = settings.metric, METRICS[settings.metric]
    fmt = _fmt(metric)
    label = dict((m, lbl) for lbl, m in SPARK_METRICS).get(metric, metric)
    tables = []
    for checkpoint, test_ids in sorted(by_checkpoint.items()):
        runs = [run_id for run_id in window if any(run_id in by_test[t] for t in test_ids)]
        latest = runs[-1]
        baseline = _baseline(runs, settings.baseline)
        headers = ("Test", f"{label} at {baseline or '–'}", f"{label} at {latest}", "Change",
                   "Other metrics", "Environment")
        if baseline is None or baseline == latest:
            tables.append(MovedTable(checkpoint, baseline or "", latest, headers, (),
                                     note=f"one run only ({latest}): nothing to compare yet"))
            continue
        moved = []
        for test_id in test_ids:
            base, now = by_test[test_id].get(baseline), by_test[test_id].get(latest)
            if base is None or now is None:
                continue
            change = _relative(base.value(metric), now.value(metric))
            if change is None:
                continue
            worse = change < 0 if higher_is_better else change > 0
            others = "; ".join(f"{lbl} {_percent(_relative(base.value(m), now.value(m)))}"
                               for lbl, m in SPARK_METRICS if m != metric)
            env = ("same" if base.env_hash == now.env_hash else f"changed: {_env_difference(base, now)}")
            moved.append((abs(change), Row((
                Cell(test_id), Cell(fmt(base.value(metric))), Cell(fmt(now.value(metric))),
                Cell(_percent(change), None if change == 0 else not worse), Cell(others),
                Cell(env, None if base.env_hash == now.env_hash else False)),
                anchor=f"case-{test_id}", failed=False)))
        moved.sort(key=lambda item: -item[0])
        tables.append(MovedTable(checkpoint, baseline, latest, headers, tuple(row for _, row in moved[:settings.top]),
                                 note="" if moved else f"no test ran in both {baseline} and {latest}"))
    return tuple(tables)


def _baseline(runs: Sequence[str], rule: str) -> str | None:
    if rule == "oldest":
        return runs[0] if runs else None
    if rule == "previous":
        return runs[-2] if len(runs) >= 2 else None
    return rule if rule in runs else None


def _relative(base: float | None, now: float | None) -> float | None:
    """(now - base) / |base|; None where either is missing or not finite; 0 when both are 0."""
    if base is None or now is None or not math.isfinite(base) or not math.isfinite(now):
        return None
    if base == 0:
        return 0.0 if now == 0 else math.copysign(math.inf, now)
    return (now - base) / abs(base)


def _percent(change: float | None) -> str:
    if change is None:
        return "–"
    if math.isinf(change):
        return "+∞" if change > 0 else "−∞"
    return f"{change * 100:+.1f}%"
