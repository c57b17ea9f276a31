"""Session-wide state: the run's settings, resolved checkpoints, the pipeline, the golden store,
update counters and results.

One pipeline at a time, holding one DiT. A checkpoint's pipeline is built once and switching
between the bf16 reference and a candidate scheme swaps only the components the two schemes
store differently (a DiT-only scheme: its DiT; ``pipelines.changed_components``): the old one is
dropped before the other is read. That is the cheapest build that keeps the promise "at most one
DiT on the device": a second pipeline would hold T5 (about 9 GiB) twice, and keeping both DiTs
would hold 12 + 24 GB. Moving to another checkpoint releases the whole pipeline first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from quant_guard.model.checkpoints import CheckpointError, ResolvedCheckpoint, checkpoint_hashes, resolve_checkpoint
from quant_guard.config.project import CheckpointSpec, QuantGuardConfig
from quant_guard.config.limits import ReferenceMode
from quant_guard.store.golden import GoldenKey, GoldenStore, WriteOutcome
from quant_guard.model.memory_plan import MemoryPlan, checkpoint_plan
from quant_guard.config.schemes import Scheme
from quant_guard.config.thresholds import ThresholdOverrides
from quant_guard.run.xdist_support import Placement

if TYPE_CHECKING:
    from diffsynth.diffusion.base_pipeline import BasePipeline

    from quant_guard.run.cases import CaseResult, UpdateRecord
    from quant_guard.store.history import RunInfo
    from quant_guard.run.history_gate import HistoryJudge
    from quant_guard.model.progress import ProgressPrinter


@dataclass(frozen=True)
class RunSettings:
    """What the command line adds to the configuration for this run."""

    update_golden: bool = False
    golden_dir: Path | None = None
    report_dir: Path | None = None
    thresholds: ThresholdOverrides = field(default_factory=ThresholdOverrides)
    device: str | None = None  # overrides every checkpoint's device
    max_peak_memory_bytes: int | None = None
    max_resident_memory_bytes: int | None = None
    max_step_time_s: float | None = None
    use_expected: bool = True
    reference: ReferenceMode | None = None  # overrides the configuration's reference mode
    force: bool = False  # --update-golden rewrites goldens even within the drift tolerance
    history_dir: Path | None = None  # --qg-history: overrides the configuration's history_dir


class QuantGuardSession:
    def __init__(self, config: QuantGuardConfig, settings: RunSettings, placement: Placement | None = None) -> None:
        self.config = config
        self.settings = settings
        self.placement = placement or Placement()
        self.store = GoldenStore(settings.golden_dir or config.golden_dir)
        self.report_dir = settings.report_dir or config.report_dir
        self.outcomes: Counter[WriteOutcome] = Counter()
        self.expected_withheld = 0  # --update-golden: failing candidates whose metrics were not recorded
        self.expected_recorded = 0  # --update-golden: expected-metrics files written
        self.expected_kept = 0  # --update-golden: left byte for byte, the new numbers within their tolerance
        # --update-golden: "path (what moved)" of each existing expected file rewritten, and the
        # paths of those removed with an old golden (listed as dropped unless re-recorded since)
        self.expected_rewritten: list[str] = []
        self.expected_dropped: set[str] = set()
        # --update-golden: goldens rendered in this run; the other schemes of a case compare with
        # them instead of rendering the bf16 reference again
        self.goldens_rendered: set[GoldenKey] = set()
        self.results: list[CaseResult] = []
        self._resolved: dict[str, ResolvedCheckpoint | CheckpointError] = {}
        self._hashes: dict[str, dict[str, str]] = {}
        self._pipeline: _Loaded | None = None
        self._lpips_checked = False
        self.progress: ProgressPrinter | None = None  # live render progress; set by the plugin
        self.history_dir = settings.history_dir or config.history_dir  # where the run's metrics are appended
        self._run: RunInfo | None = None
        self._history_judge: HistoryJudge | None = None

    # ---- checkpoints ----------------------------------------------------------------------

    def resolved(self, spec: CheckpointSpec) -> ResolvedCheckpoint:
        """Local files of a checkpoint; a failure is remembered so every case of it fails fast
        with the same message instead of retrying a download."""
        if spec.id not in self._resolved:
            try:
                self._resolved[spec.id] = resolve_checkpoint(spec)
            except CheckpointError as exc:
                self._resolved[spec.id] = exc
        value = self._resolved[spec.id]
        if isinstance(value, CheckpointError):
            raise value
        return value

    def reference_hashes(self, spec: CheckpointSpec) -> dict[str, str]:
        """sha256 of the reference components (what a golden depends on)."""
        if spec.id not in self._hashes:
            self._hashes[spec.id] = checkpoint_hashes(self.resolved(spec))
        return self._hashes[spec.id]

    def require_lpips_weights(self) -> None:
        """Raise ``LpipsWeightsError`` (listing the ways to provide them) when no LPIPS weights
        can be found; looked up once per session."""
        if not self._lpips_checked:
            from quant_guard.judge.lpips_weights import find_weights

            find_weights()
            self._lpips_checked = True

    def device(self, spec: CheckpointSpec) -> str:
        from quant_guard.model.pipelines import pick_device

        return pick_device(self.settings.device or spec.device)

    # ---- pipelines ------------------------------------------------------------------------

    def memory_plan(self, spec: CheckpointSpec, scheme: Scheme) -> MemoryPlan:
        return checkpoint_plan(spec, scheme, self.device(spec))

    def loaded_scheme(self, spec: CheckpointSpec) -> Scheme | None:
        """The scheme of the DiT the pipeline holds now, if it is this checkpoint's."""
        loaded = self._pipeline
        return loaded.scheme if loaded is not None and loaded.checkpoint_id == spec.id else None

    def pipeline(self, spec: CheckpointSpec, scheme: Scheme) -> BasePipeline:
        """The checkpoint's pipeline with the DiT of ``scheme`` (built or swapped as needed)."""
        if self._pipeline is not None and self._pipeline.checkpoint_id != spec.id:
            self.release_pipelines()
        loaded = self._pipeline
        if loaded is not None and loaded.scheme == scheme:
            return loaded.pipe
        resolved, plan = self.resolved(spec), self.memory_plan(spec, scheme)
        if spec.deterministic:  # before any kernel of this checkpoint runs
            from quant_guard.model.determinism import enable_full_determinism

            enable_full_determinism()
        try:
            pipe = self._build_or_swap(loaded, resolved, scheme, plan)
        except BaseException as exc:
            del loaded  # this frame stays in the traceback: it must not hold the pipeline
            self.after_error(exc)
            raise
        self._pipeline = _Loaded(spec.id, scheme, pipe)
        return pipe

    def _build_or_swap(self, loaded: _Loaded | None, resolved: ResolvedCheckpoint, scheme: Scheme,
                       plan: MemoryPlan) -> BasePipeline:
        from quant_guard.model import pipelines

        if loaded is None:
            return pipelines.build_pipeline(resolved, scheme, plan.device, plan=plan)
        # a failed swap leaves a pipeline without a component: forget it, the next test rebuilds
        self._pipeline = None
        changed = pipelines.changed_components(resolved, loaded.scheme, scheme)
        if changed:  # only what the two schemes store differently (a DiT-only change: the DiT)
            pipelines.swap_components(loaded.pipe, resolved, scheme, plan, changed)
        return loaded.pipe

    def after_error(self, exc: BaseException) -> None:
        """An error while building, swapping or rendering: ``discard_after_error``, except for running
        out of memory, whose verdict first reads the device's figures at the failure and then discards
        (gate._out_of_memory)."""
        from quant_guard.model.pipelines import LoadOutOfMemory, is_out_of_memory

        if not (isinstance(exc, LoadOutOfMemory) or is_out_of_memory(exc)):
            self.discard_after_error(exc)

    def discard_after_error(self, exc: BaseException) -> None:
        """After an error while building, swapping or rendering: drop the pipeline and hand its memory
        back, so that the next test starts from a clean device. A render that raised never reached
        DiffSynth's final offload (``load_models_to_device([])``), so layers it kept on the device
        are still there; and the frames of the failed call still hold the pipeline and its tensors."""
        import traceback

        for error in (exc, exc.__context__, exc.__cause__):
            if error is not None:
                traceback.clear_frames(error.__traceback__)
        self._pipeline = None
        from quant_guard.model.pipelines import release_memory

        release_memory()

    def release_pipelines(self) -> None:
        """Drop the pipeline; its weights leave the device before this returns."""
        if self._pipeline is None:
            return
        self._pipeline = None
        from quant_guard.model.pipelines import release_memory

        release_memory()

    def close(self) -> None:
        """The end of the session: drop the pipeline. A full garbage collection is only worth its
        time (0.3 s with torch loaded) where device memory must be handed back; on a CPU the
        process's own end, or the next automatic collection, frees what is left."""
        if self._pipeline is None:
            return
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.release_pipelines()
        else:
            self._pipeline = None

    # ---- bookkeeping ----------------------------------------------------------------------

    def record(self, result: CaseResult) -> None:
        self.results.append(result)

    def record_update(self, key: GoldenKey, update: UpdateRecord) -> None:
        """Count what an ``--update-golden`` test wrote (``update_summary``, ``expected_summary``)."""
        if update.golden is not None:  # this test rendered the case's golden: its other schemes reuse it
            self.goldens_rendered.add(key)
            self.outcomes[update.golden] += 1
        self.expected_dropped.update(update.dropped)
        if update.expected == "withheld":
            self.expected_withheld += 1
        elif update.expected == "kept":
            self.expected_kept += 1
        elif update.expected == "recorded":
            self.expected_recorded += 1
            if update.rewritten is not None:
                self.expected_rewritten.append(update.rewritten)

    @property
    def run(self) -> RunInfo:
        """This run's identity in the metrics history (one per process, fixed at first use)."""
        if self._run is None:
            from quant_guard.store.history import RunInfo

            self._run = RunInfo.current(cwd=self.config.source.parent)
        return self._run

    def judge_history(self, result: CaseResult) -> CaseResult:
        """``result`` judged by the history alarm (quant_guard.run.history_gate), when one is configured
        and this is no --update-golden run; else ``result`` itself."""
        if self.config.history_alarm is None or self.settings.update_golden:
            return result
        if self._history_judge is None:
            from quant_guard.run.history_gate import HistoryJudge

            self._history_judge = HistoryJudge(self.config.history_alarm, self.history_dir, self.run, self.store)
        from quant_guard.store.fingerprint import environment

        return self._history_judge.judge(result, environment(self.device(result.case.checkpoint)))

    @property
    def reference_mode(self) -> ReferenceMode:
        return self.settings.reference or self.config.reference

    def update_summary(self) -> str:
        c = self.outcomes
        drifted = c[WriteOutcome.WITHIN_DRIFT]
        return (f"quant_guard: goldens {c[WriteOutcome.CREATED]} created, {c[WriteOutcome.UPDATED]} updated, "
                f"{c[WriteOutcome.UNCHANGED] + drifted} unchanged"
                + (f" ({drifted} within drift tolerance)" if drifted else "")
                + (f"; expected metrics not recorded for {self.expected_withheld} failing candidate"
                   f"{'s' if self.expected_withheld != 1 else ''}" if self.expected_withheld else ""))

    def expected_summary(self) -> list[str]:
        """--update-golden's expected-metrics lines: the counts, then each file rewritten (with
        the numbers that moved) or dropped with an old golden and not re-recorded by this run."""
        lines = [f"quant_guard: expected metrics {self.expected_recorded} recorded, "
                 f"{self.expected_kept} unchanged (within tolerance)"]
        lines += [f"  rewrote {entry}" for entry in sorted(self.expected_rewritten)]
        for path in sorted(self.expected_dropped):
            if Path(path).exists():
                lines.append(f"  rewrote {path} (its golden changed; re-recorded against the new one)")
            else:
                lines.append(f"  dropped {path} (its golden changed; this run did not re-record that scheme)")
        return lines


@dataclass(frozen=True)
class _Loaded:
    checkpoint_id: str
    scheme: Scheme
    pipe: BasePipeline
