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
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING

from quant_guard.config.units import format_bytes, format_seconds

if TYPE_CHECKING:
    from quant_guard.model.render import MemoryStats, RenderSummary


class PeakCounts(str, Enum):
    """Which CUDA figure a peak-memory limit applies to."""

    DEVICE = "device"  # the device's used memory (falls back to RESERVED where not measured)
    RESERVED = "reserved"  # the caching allocator's reserve
    ALLOCATED = "allocated"  # allocated tensors only


class StepStatistic(str, Enum):
    MEDIAN = "median"
    MEAN = "mean"
    MAX = "max"


@dataclass(frozen=True)
class Budget:
    """The limits that apply to one test (None = unlimited)."""

    peak_memory_bytes: int | None = None
    step_time_s: float | None = None
    resident_memory_bytes: int | None = None
    statistic: StepStatistic = StepStatistic.MEDIAN
    warmup_steps: int = 1
    peak_counts: PeakCounts = PeakCounts.DEVICE

    def override(self, *, peak_memory_bytes: int | None = None, step_time_s: float | None = None,
                 resident_memory_bytes: int | None = None) -> Budget:
        return replace(
            self,
            peak_memory_bytes=self.peak_memory_bytes if peak_memory_bytes is None else peak_memory_bytes,
            step_time_s=self.step_time_s if step_time_s is None else step_time_s,
            resident_memory_bytes=(self.resident_memory_bytes if resident_memory_bytes is None
                                   else resident_memory_bytes),
        )

    @property
    def empty(self) -> bool:
        return self.peak_memory_bytes is None and self.step_time_s is None and self.resident_memory_bytes is None


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
