"""Visual cases: one (checkpoint, case, seed) triple per parametrised test, and the results a
check produces. Plain frozen dataclasses and enums; nothing heavy is imported."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from quant_guard.config.project import CaseSpec, CheckpointSpec, QuantGuardConfig
from quant_guard.store.golden import GoldenKey, WriteOutcome
from quant_guard.config.schemes import Scheme
from quant_guard.config.thresholds import ThresholdOverrides, Thresholds, embedded_thresholds, resolve_thresholds

if TYPE_CHECKING:
    from collections.abc import Sequence

    from quant_guard.judge.budgets import BudgetCheck
    from quant_guard.model.memory_plan import MemoryPlan
    from quant_guard.judge.drift import DriftCheck
    from quant_guard.store.fingerprint import FieldDifference
    from quant_guard.judge.history_alarm import AlarmResult
    from quant_guard.judge.metrics import ImageMetrics
    from quant_guard.judge.budgets import RenderSummary
    from quant_guard.judge.scorecard import Scorecard
    from quant_guard.judge.checks import MetricCheck


@dataclass(frozen=True)
class VisualCase:
    checkpoint: CheckpointSpec
    case: CaseSpec
    seed: int
    scheme: Scheme = None  # type: ignore[assignment]  # None: the checkpoint's first scheme

    def __post_init__(self) -> None:
        if self.scheme is None:
            object.__setattr__(self, "scheme", self.checkpoint.schemes[0])

    @property
    def id(self) -> str:
        """The test id, e.g. ``tiny-cyberpunk-rain-s0``, or ``tiny-bitsandbytes_nf4-cyberpunk-rain-s0``
        when the checkpoint lists its schemes."""
        scheme = f"{self.scheme.id}-" if self.checkpoint.declared_schemes else ""
        return f"{self.checkpoint.id}-{scheme}{self.case.id}-s{self.seed}"

    @property
    def key(self) -> GoldenKey:
        """The golden: one per (checkpoint, case, seed), shared by every scheme."""
        return GoldenKey(self.checkpoint.id, self.case.id, self.seed)

    @property
    def expected_name(self) -> str | None:
        """The scheme's part of the expected-metrics file name (None: the single default candidate)."""
        return self.scheme.id if self.checkpoint.declared_schemes else None

    @property
    def golden_sharers(self) -> list[str]:
        """The ids of the tests whose expected metrics hang on this test's golden: every scheme
        of the case and seed, this one first."""
        if not self.checkpoint.declared_schemes:
            return [self.id]
        return [self.id, *(replace(self, scheme=s).id for s in self.checkpoint.schemes if s != self.scheme)]

    @property
    def report_folder(self) -> Path:
        """Where the case's report images go, relative to the report directory."""
        folder = Path(self.checkpoint.id)
        return (folder / self.scheme.id if self.checkpoint.declared_schemes else folder) / self.key.stem

    def configured_thresholds(self, package: Thresholds) -> Thresholds:
        """The configuration's thresholds for this test, before markers and the command line:
        package < the embedded checkpoint's measured ones for this scheme < checkpoint < scheme < case."""
        measured = embedded_thresholds(self.checkpoint.embedded, self.scheme.kind, self.scheme.threshold_parts)
        return resolve_thresholds(package, measured,
                                  self.checkpoint.thresholds, self.scheme.thresholds, self.case.thresholds)

    # Render settings: the case's own, else the checkpoint's defaults.
    @property
    def steps(self) -> int:
        return self.case.steps or self.checkpoint.render.steps

    @property
    def width(self) -> int:
        return self.case.width or self.checkpoint.render.width

    @property
    def height(self) -> int:
        return self.case.height or self.checkpoint.render.height

    @property
    def guidance(self) -> float:
        return self.checkpoint.render.guidance if self.case.guidance is None else self.case.guidance

    @property
    def frames(self) -> int:
        """The clip's length (a video family's checkpoint); 1 for an image."""
        return self.checkpoint.render.frames

    @property
    def fps(self) -> int:
        return self.checkpoint.render.fps


def expand_cases(config: QuantGuardConfig) -> list[VisualCase]:
    """Every (checkpoint, scheme, case, seed) of the configuration, in declaration order. Scheme
    before case: the tests of one scheme run together, so the session swaps the DiT once per
    scheme, not once per test."""
    out = []
    for checkpoint in config.checkpoints:
        for scheme in checkpoint.schemes:
            for case in config.cases:
                if checkpoint.id in case.checkpoints:
                    out.extend(VisualCase(checkpoint, case, seed, scheme) for seed in case.seeds)
    return out


@dataclass(frozen=True)
class TestOverrides:
    """What a test's markers (or the command line) set on top of the configuration."""

    __test__ = False  # not a pytest test class, despite the name

    thresholds: ThresholdOverrides = field(default_factory=ThresholdOverrides)
    peak_memory_bytes: int | None = None
    step_time_s: float | None = None
    resident_memory_bytes: int | None = None


@dataclass(frozen=True)
class TestAddress:
    """Where a visual test lives, so that a printed command selects exactly that test: a node id
    (``-k tiny-x-s1`` would also match ``tiny-x-s10``) plus ``-m gpu`` for a gpu-marked test,
    which a project's ``addopts`` usually deselect."""

    __test__ = False

    file: str  # the test file as typed from the working directory
    name: str  # the rest of the node id, e.g. "test_visual[tiny-red-circle-s1]"
    gpu: bool = False

    def update_command(self, names: Sequence[str] = ()) -> str:
        """The command that re-baselines this test, or the tests ``names`` of the same file."""
        marks = ["-m", "gpu"] if self.gpu else []
        return shlex.join(["pytest", "--update-golden", *marks, *(f"{self.file}::{n}" for n in names or [self.name])])

    def siblings(self, vc: VisualCase) -> list[str]:
        """The test names of every scheme of ``vc``'s case and seed (they share its golden, and a
        new golden drops their expected metrics), this one first; just this one when the name
        does not carry ``vc``'s id."""
        if vc.id not in self.name:
            return [self.name]
        return [self.name.replace(vc.id, other) for other in vc.golden_sharers]


class Verdict(str, Enum):
    PASSED = "passed"
    UPDATED = "updated"  # --update-golden wrote (or confirmed) the golden
    IMAGE_FAILED = "image-failed"  # a metric is outside its threshold or expected value
    ENV_DRIFT = "env-drift"  # the golden no longer reproduces, a recorded cause differs, the candidate is cleared
    DEGENERATE = "degenerate"  # NaN / constant / black candidate
    BUDGET_FAILED = "budget-failed"  # a memory or step-time limit was exceeded
    OUT_OF_MEMORY = "out-of-memory"  # loading or rendering ran out of device or host memory
    NO_GOLDEN = "no-golden"
    STALE_GOLDEN = "stale-golden"
    BAD_GOLDEN = "bad-golden"
    ERROR = "error"  # the checkpoint or pipeline could not be used
    HISTORY_DRIFT = "history-drift"  # within thresholds, but worse than its recent runs by more than the alarm allows


@dataclass(frozen=True)
class UpdateRecord:
    """What one ``--update-golden`` test wrote, for the run's summary lines: the gate's last step
    hands it to the session (``QuantGuardSession.record_update``)."""

    golden: WriteOutcome | None = None  # the golden store's answer (None: this test rendered no golden)
    expected: str | None = None  # the candidate's expected metrics: "recorded", "kept" (within tolerance), "withheld"
    rewritten: str | None = None  # an existing expected file rewritten, and the numbers that moved
    dropped: tuple[str, ...] = ()  # expected files the new golden dropped


@dataclass(frozen=True)
class CaseResult:
    case: VisualCase
    verdict: Verdict
    reason: str
    metrics: ImageMetrics | None = None
    checks: tuple[MetricCheck, ...] = ()
    budget_checks: tuple[BudgetCheck, ...] = ()
    candidate_render: RenderSummary | None = None
    reference_render: RenderSummary | None = None
    images: dict[str, Path] = field(default_factory=dict)  # "golden", "candidate", "diff"[, "reference"]
    memory_plan: MemoryPlan | None = None  # the candidate's: where each component lived
    drift: DriftCheck | None = None  # the three-way comparison, when the bf16 reference was rendered
    fingerprint: tuple[FieldDifference, ...] = ()  # environment fields that differ from the golden's
    history: AlarmResult | None = None  # the history alarm's judgement, when one is configured
    scorecard: Scorecard | None = None  # how the judged comparison differs: colour, sharpness, structure, ...

    @property
    def passed(self) -> bool:
        return self.verdict in (Verdict.PASSED, Verdict.UPDATED)
