"""Metrics history across runs: one JSON Lines record per visual test and run. The drift alarm
that compares a case with its own recent past is ``judge.history_alarm``; the ``quant-guard
history`` views are ``tools.history_views``.

The store is a folder of ``<host>-<run id>-<pid>.jsonl`` files: every writing process owns its
file and only appends to it, so concurrent xdist runs, CI shards and merged folders from other
machines never contend for one file, and merging two stores is copying files. Reading globs
every file, skips a truncated last line (a run killed mid-write) and ignores unknown fields.

Stdlib only: the plugin imports this module on every run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import socket
import statistics
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from quant_guard.store.fingerprint import FINGERPRINT_KEYS
from quant_guard.config.thresholds import IMAGE_METRICS

HISTORY_VERSION = 1
SUFFIX = ".jsonl"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


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
                 "psnr": _number(metrics.get("psnr")), "text_cer": _number(_text(record).get("cer")),
                 "flicker": _number(_temporal(record).get("flicker")),
                 "exposure_flicker": _number(_temporal(record).get("exposure_flicker")),
                 "peak_memory_bytes": _number(memory.get("peak_bytes")),
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


def _text(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The text check of a results.json record's scorecard; empty when the case expects no text."""
    card = record.get("scorecard")
    text = card.get("text") if isinstance(card, Mapping) else None
    return text if isinstance(text, Mapping) else {}


def _temporal(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """A video case's temporal numbers (its scorecard's ``temporal``); empty for an image."""
    card = record.get("scorecard")
    temporal = card.get("temporal") if isinstance(card, Mapping) else None
    return temporal if isinstance(temporal, Mapping) else {}


_CHECK_METRICS = {"LPIPS": "lpips", "SSIM": "ssim", "PSNR": "psnr", "text CER": "text_cer", "flicker": "flicker",
                  "exposure flicker": "exposure_flicker"}


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
