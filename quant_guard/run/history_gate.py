"""The drift alarm applied to a finished visual check: the case's metric against its own recent
runs in the same environment (quant_guard.judge.history_alarm over quant_guard.store.history). The history folder is read once per process,
before the run's own records are appended (the controller appends at the end), so a run is never
compared with itself. The session owns one ``HistoryJudge``; the plugin only reports its verdict."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant_guard.store.history import History, HistoryRecord, RunInfo, from_result, read
from quant_guard.judge.history_alarm import AlarmResult, AlarmStatus, check_alarm
from quant_guard.config.limits import AlarmMode, HistoryAlarm
from quant_guard.config.thresholds import IMAGE_METRICS

if TYPE_CHECKING:
    from quant_guard.run.cases import CaseResult
    from quant_guard.store.golden import GoldenStore


class HistoryDriftWarning(UserWarning):
    """A case's metric moved beyond the history alarm in ``mode = "warn"``."""


def current_record(result: CaseResult, environment: dict[str, Any], run: RunInfo,
                   baseline_id: str | None = None) -> HistoryRecord:
    """This run's history record of ``result`` (as the controller will append it; ``baseline_id``:
    ``GoldenStore.baseline_id`` of its golden)."""
    from quant_guard.report.records import to_jsonable

    vc = result.case
    return from_result({"id": vc.id, "checkpoint": vc.checkpoint.id, "case": vc.case.id, "seed": vc.seed,
                        "scheme": vc.scheme.id, "verdict": result.verdict.value,
                        "metrics": to_jsonable(result.metrics),
                        "candidate_render": to_jsonable(result.candidate_render), "drift": to_jsonable(result.drift),
                        "environment": to_jsonable(environment), "baseline_id": baseline_id}, run)


def apply_alarm(result: CaseResult, history: History, alarm: HistoryAlarm, environment: dict[str, Any],
                run: RunInfo, baseline_id: str | None = None) -> CaseResult:
    """``result`` with the alarm's judgement in ``history``; a passed case whose metric moved too far
    becomes ``history-drift`` in ``mode = "fail"``. Other verdicts are left as they are (a failed
    case already fails; its numbers still go into the history)."""
    from quant_guard.run.cases import Verdict

    if not result.passed or result.verdict is Verdict.UPDATED or result.metrics is None:
        return result
    judged = judge_both(current_record(result, environment, run, baseline_id), history, alarm)
    if judged.status is AlarmStatus.FAIL and alarm.mode is AlarmMode.FAIL:
        return dataclasses.replace(result, verdict=Verdict.HISTORY_DRIFT, history=judged,
                                   reason=f"drifted against its history: {judged.message}")
    return dataclasses.replace(result, history=judged)


def judge_both(current: HistoryRecord, history: History, alarm: HistoryAlarm) -> AlarmResult:
    """The alarm on the candidate against its golden (the series the report plots) and, for an
    image metric, on the candidate against the bf16 render of each run that rendered it: the golden
    series sees a fault the candidate shares with the bf16 reference (the VAE, a text encoder), the
    reference series a quantization change hidden by a drifting golden. The one that fired is
    returned (both messages when both did); when neither fired, the golden one."""
    golden = check_alarm(current, history.records, alarm)
    if alarm.metric not in IMAGE_METRICS or current.reference_metrics.get(alarm.metric) is None:
        return golden
    reference = check_alarm(current.against_reference(), [r.against_reference() for r in history.records], alarm)
    reference = dataclasses.replace(reference, message=f"against the bf16 render of each run: {reference.message}")
    fired = [j for j in (golden, reference) if j.status in (AlarmStatus.WARN, AlarmStatus.FAIL)]
    if len(fired) == 2:
        return dataclasses.replace(golden, message=f"{golden.message}\n{reference.message}")
    return fired[0] if fired else golden


class HistoryJudge:
    """The alarm of one process: its configuration, the history folder (read on first use; a
    missing folder is an empty history), this run's identity and the goldens (whose baseline id
    tells where a case was last re-baselined)."""

    def __init__(self, alarm: HistoryAlarm, directory: Path | None, run: RunInfo,
                 goldens: GoldenStore | None = None) -> None:
        self.alarm, self.directory, self.run, self.goldens = alarm, directory, run, goldens
        self._store: History | None = None

    @property
    def store(self) -> History:
        if self._store is None:
            directory = self.directory
            self._store = read(directory) if directory is not None and directory.is_dir() else History(())
        return self._store

    def judge(self, result: CaseResult, environment: dict[str, Any]) -> CaseResult:
        vc = result.case
        baseline_id = self.goldens.baseline_id(vc.key, vc.expected_name) if self.goldens is not None else None
        return apply_alarm(result, self.store, self.alarm, environment, self.run, baseline_id)
