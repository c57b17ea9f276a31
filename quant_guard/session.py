"""Session-wide state: the run's settings, resolved checkpoints, the pipelines (each built at
most once per session, lazily), the golden store, update counters and results.

On a GPU the bf16 reference and the float8 candidate are only kept resident together when
both fit; otherwise building one releases the other first.
"""

from __future__ import annotations

import gc
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant_guard.checkpoints import CheckpointError, ResolvedCheckpoint, checkpoint_hashes, resolve_checkpoint
from quant_guard.config import CheckpointSpec, QuantGuardConfig
from quant_guard.drift import ReferenceMode
from quant_guard.golden import GoldenStore, WriteOutcome
from quant_guard.thresholds import ThresholdOverrides
from quant_guard.xdist_support import Placement

if TYPE_CHECKING:
    from diffsynth.pipelines.flux_image import FluxImagePipeline

    from quant_guard.cases import CaseResult
    from quant_guard.pipelines import Precision


@dataclass(frozen=True)
class RunSettings:
    """What the command line adds to the configuration for this run."""

    update_golden: bool = False
    golden_dir: Path | None = None
    report_dir: Path | None = None
    thresholds: ThresholdOverrides = field(default_factory=ThresholdOverrides)
    device: str | None = None  # overrides every checkpoint's device
    max_peak_memory_bytes: int | None = None
    max_step_time_s: float | None = None
    use_expected: bool = True
    reference: ReferenceMode | None = None  # overrides the configuration's reference mode
    force: bool = False  # --update-golden rewrites goldens even within the drift tolerance


class QuantGuardSession:
    def __init__(self, config: QuantGuardConfig, settings: RunSettings, placement: Placement | None = None) -> None:
        self.config = config
        self.settings = settings
        self.placement = placement or Placement()
        self.store = GoldenStore(settings.golden_dir or config.golden_dir)
        self.report_dir = settings.report_dir or config.report_dir
        self.outcomes: Counter[WriteOutcome] = Counter()
        self.results: list[CaseResult] = []
        self._resolved: dict[str, ResolvedCheckpoint | CheckpointError] = {}
        self._hashes: dict[str, dict[str, str]] = {}
        self._pipelines: dict[tuple[str, Precision], FluxImagePipeline] = {}
        self._lpips_checked = False

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
            hashes = checkpoint_hashes(self.resolved(spec))
            hashes.pop("candidate_dit", None)
            self._hashes[spec.id] = hashes
        return self._hashes[spec.id]

    def require_lpips_weights(self) -> None:
        """Raise ``LpipsWeightsError`` (listing the ways to provide them) when no LPIPS weights
        can be found; looked up once per session."""
        if not self._lpips_checked:
            from quant_guard.lpips_weights import find_weights

            find_weights()
            self._lpips_checked = True

    def device(self, spec: CheckpointSpec) -> str:
        from quant_guard.pipelines import pick_device

        return pick_device(self.settings.device or spec.device)

    # ---- pipelines ------------------------------------------------------------------------

    def pipeline(self, spec: CheckpointSpec, precision: Precision) -> FluxImagePipeline:
        key = (spec.id, precision)
        if key not in self._pipelines:
            from quant_guard.pipelines import build_pipeline

            resolved, device = self.resolved(spec), self.device(spec)
            if spec.deterministic:
                from quant_guard.determinism import enable_full_determinism

                enable_full_determinism()
            if device.startswith("cuda"):
                self._make_room_on_gpu(_estimated_bytes(resolved, precision))
            self._pipelines[key] = build_pipeline(resolved, precision, device, cpu_offload=spec.cpu_offload)
        return self._pipelines[key]

    def _make_room_on_gpu(self, needed: int) -> None:
        import torch

        free, _total = torch.cuda.mem_get_info()
        if self._pipelines and needed * 1.2 > free:
            self.release_pipelines()

    def release_pipelines(self) -> None:
        self._pipelines.clear()
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    # ---- bookkeeping ----------------------------------------------------------------------

    def record(self, result: CaseResult) -> None:
        self.results.append(result)

    @property
    def reference_mode(self) -> ReferenceMode:
        return self.settings.reference or self.config.reference

    def update_summary(self) -> str:
        c = self.outcomes
        drifted = c[WriteOutcome.WITHIN_DRIFT]
        return (f"quant_guard: goldens {c[WriteOutcome.CREATED]} created, {c[WriteOutcome.UPDATED]} updated, "
                f"{c[WriteOutcome.UNCHANGED] + drifted} unchanged"
                + (f" ({drifted} within drift tolerance)" if drifted else ""))


def _estimated_bytes(resolved: ResolvedCheckpoint, precision: Any) -> int:
    """Rough device memory a pipeline needs: its weight files (the float8 DiT at half size)."""
    from quant_guard.pipelines import Precision

    total = 0
    for path in resolved.weight_files():
        size = path.stat().st_size
        if precision is Precision.FLOAT8_E4M3FN and path == resolved.files["dit"]:
            size //= 2
        total += size
    return total
