"""Hard limits on a candidate render: peak memory, resident memory and per-step time.

Limits come from the checkpoint's ``[limits]`` table, the ``vram_budget`` /
``resident_vram_budget`` / ``step_time_budget`` markers and ``--qg-max-vram`` /
``--qg-max-resident-vram`` / ``--qg-max-step-time`` (most specific last). Peak memory on CUDA is
what ``peak_vram_counts`` names (``PeakCounts``): by default the device's used memory at its peak
(CUDA context, the allocator's reserve with its fragmentation, anything else on the card: what
decides whether the render fits a card of that size), falling back to the allocator's reserved
peak where the device's figure is not measured; or the reserved peak; or the allocated tensors'
peak alone. On a CPU it is the process's peak RSS during the
render (what the host must provide: interpreter, torch, the pipeline and the render). Resident
memory is what was allocated when the render began (CUDA) or the process's RSS then (CPU). A
limit on a figure the platform cannot measure is an error, never a silent pass. Step time drops
the warm-up step(s) and applies the limit to a statistic of the rest, the median by default.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from quant_guard.config.limits import Budget, PeakCounts, StepStatistic
from quant_guard.config.units import format_bytes, format_seconds



# ---- what a render measured (model.render fills these in) ------------------------------------------

@dataclass(frozen=True)
class MemoryStats:
    """Memory of one render. ``kind`` is "cuda" (device memory) or "cpu-rss" (the process's
    resident host memory)."""

    kind: str
    peak_bytes: int | None  # peak during the render (CUDA: allocated; CPU: the process's RSS)
    reserved_bytes: int | None = None  # CUDA allocator's reserved peak
    at_start_bytes: int | None = None  # allocated (CUDA) / the process's RSS (CPU) when the render began
    note: str | None = None  # why a figure is missing
    device_bytes: int | None = None  # CUDA: the device's used memory at its peak (context + reserve + others)

    @property
    def peak_name(self) -> str:
        return "peak VRAM" if self.kind == "cuda" else "peak RSS"

    @property
    def resident_name(self) -> str:
        return "resident VRAM" if self.kind == "cuda" else "resident RSS"


@dataclass(frozen=True)
class RenderSummary:
    """What was measured of one render (the image itself stays out of results)."""

    step_times_s: tuple[float, ...]
    total_s: float
    memory: MemoryStats
    dit_weight_bytes: int  # bytes of the DiT's weights as stored while the denoising loop ran
    # the process's peak RSS while the pipeline's DiT was loaded (its build or its DiT swap); None
    # where the kernel's high-water mark cannot be reset (model.host_memory.BuildMemory)
    load_peak_rss_bytes: int | None = None
    # every model component's weights as stored while the denoising loop ran, by component name
    # (the DiT's is ``dit_weight_bytes`` too); {} from code that measured the DiT only
    component_weight_bytes: dict[str, int] = field(default_factory=dict)
    # the part of each component's weights that was on the render's computation device as the
    # denoising loop began: all of it for a resident pipeline, what DiffSynth's VRAM management had
    # onloaded then under ``cpu_offload``; {} from code that did not measure it
    component_resident_bytes: dict[str, int] = field(default_factory=dict)



# ---- the checks ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StepStats:
    median_s: float
    mean_s: float
    max_s: float
    measured_steps: int  # after dropping the warm-up
    warmup_steps: int

    def value(self, statistic: StepStatistic) -> float:
        return {StepStatistic.MEDIAN: self.median_s, StepStatistic.MEAN: self.mean_s,
                StepStatistic.MAX: self.max_s}[statistic]


def step_stats(step_times_s: tuple[float, ...], warmup_steps: int) -> StepStats | None:
    """Statistics over the steps after the warm-up (all steps if the run is too short to drop any)."""
    if not step_times_s:
        return None
    warmup = warmup_steps if len(step_times_s) > warmup_steps else 0
    measured = step_times_s[warmup:]
    return StepStats(median_s=statistics.median(measured), mean_s=statistics.fmean(measured),
                     max_s=max(measured), measured_steps=len(measured), warmup_steps=warmup)


@dataclass(frozen=True)
class BudgetCheck:
    name: str  # "peak VRAM", "peak RSS", "resident VRAM", "resident RSS", "step time (median)"
    value: float
    limit: float
    unit: str  # "bytes" or "s"

    @property
    def passed(self) -> bool:
        return self.value <= self.limit

    def describe(self) -> str:
        fmt = format_bytes if self.unit == "bytes" else format_seconds
        op = "<=" if self.passed else ">"
        return f"{self.name} {fmt(self.value)} {op} max {fmt(self.limit)} {'ok' if self.passed else 'FAIL'}"


class BudgetNotMeasurable(Exception):
    """A limit is set on a figure this platform cannot measure; the message says why."""


def check_budget(render: RenderSummary, budget: Budget) -> list[BudgetCheck]:
    checks: list[BudgetCheck] = []
    memory = render.memory
    peak, peak_name = peak_figure(memory, budget.peak_counts)
    for limit, value, name in ((budget.peak_memory_bytes, peak, peak_name),
                               (budget.resident_memory_bytes, memory.at_start_bytes, memory.resident_name)):
        if limit is None:
            continue
        if value is None:
            raise BudgetNotMeasurable(f"a {name} limit of {format_bytes(limit)} is set, but {name} could not be "
                                      f"measured: {memory.note or 'this platform does not report it'}")
        checks.append(BudgetCheck(name, float(value), float(limit), "bytes"))
    if budget.step_time_s is not None:
        stats = step_stats(render.step_times_s, budget.warmup_steps)
        if stats is None:
            raise RuntimeError("a step-time budget is set but the render reported no steps")
        checks.append(BudgetCheck(f"step time ({budget.statistic.value})", stats.value(budget.statistic),
                                  budget.step_time_s, "s"))
    return checks


def peak_figure(memory: MemoryStats, counts: PeakCounts) -> tuple[int | None, str]:
    """The peak a limit of ``counts`` applies to, and its name ("peak VRAM (device used)"); on a
    CPU always the peak RSS."""
    if memory.kind != "cuda":
        return memory.peak_bytes, memory.peak_name
    if counts is PeakCounts.DEVICE and memory.device_bytes is not None:
        return memory.device_bytes, f"{memory.peak_name} (device used)"
    if counts is PeakCounts.ALLOCATED:
        return memory.peak_bytes, f"{memory.peak_name} (allocated)"
    return memory.reserved_bytes, f"{memory.peak_name} (reserved)"
