"""The drift alarm applied to a finished visual check: the case's metric against the median of
its last runs in the same environment (quant_guard.history). Runs where the test ran, before
the run's own records are appended (the controller appends at the end), so a run is never
compared with itself."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant_guard.history import (AlarmMode, AlarmResult, AlarmStatus, History, HistoryAlarm, HistoryRecord, RunInfo,
                                 check_alarm, from_result)

if TYPE_CHECKING:
    from quant_guard.cases import CaseResult


class HistoryDriftWarning(UserWarning):
    """A case's metric moved beyond the history alarm in ``mode = "warn"``."""


def history_dir(option: str | None, configured: Path | None) -> Path | None:
    """The history folder: ``--qg-history`` (relative to the working directory) over ``history_dir``."""
    return Path(option).resolve() if option else configured


def current_record(result: CaseResult, environment: dict[str, Any], run: RunInfo) -> HistoryRecord:
    """This run's history record of ``result`` (as the controller will append it)."""
    from quant_guard.report.records import to_jsonable

    vc = result.case
    return from_result({"id": vc.id, "checkpoint": vc.checkpoint.id, "case": vc.case.id, "seed": vc.seed,
                        "scheme": vc.scheme.id, "verdict": result.verdict.value,
                        "metrics": to_jsonable(result.metrics),
                        "candidate_render": to_jsonable(result.candidate_render),
                        "environment": to_jsonable(environment)}, run)


def apply_alarm(result: CaseResult, history: History, alarm: HistoryAlarm, environment: dict[str, Any],
                run: RunInfo) -> CaseResult:
    """``result`` with the alarm's judgement in ``history``; a passed case whose metric moved too far
    becomes ``history-drift`` in ``mode = "fail"``. Other verdicts are left as they are (a failed
    case already fails; its numbers still go into the history)."""
    from quant_guard.cases import Verdict

    if not result.passed or result.verdict is Verdict.UPDATED or result.metrics is None:
        return result
    judged: AlarmResult = check_alarm(current_record(result, environment, run), history.records, alarm)
    if judged.status is AlarmStatus.FAIL and alarm.mode is AlarmMode.FAIL:
        return dataclasses.replace(result, verdict=Verdict.HISTORY_DRIFT, history=judged,
                                   reason=f"drifted against its history: {judged.message}")
    return dataclasses.replace(result, history=judged)
