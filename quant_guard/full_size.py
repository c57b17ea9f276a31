"""``quant-guard doctor --full-size``: the bf16 reference and the float8 candidate of a
checkpoint of random weights at FLUX.1-dev's shapes, built and rendered on this machine by the
gate's own code (``build_pipeline``, ``render``), one pipeline at a time, with peak memory,
resident memory and step time set beside the published figures. The architecture is a
parameter: the plugin's tests run the same code at the embedded tiny size on a CPU.

Nothing is downloaded and nothing is written to the golden store; the random weights go to a
work folder that is deleted afterwards (about 32 GiB at FLUX.1-dev size).
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from quant_guard.budgets import step_stats
from quant_guard.checkpoints import ResolvedCheckpoint
from quant_guard.synthetic import Architecture

if TYPE_CHECKING:
    from diffsynth.pipelines.flux_image import FluxImagePipeline

    from quant_guard.config import CheckpointSpec
    from quant_guard.schemes import Scheme

PROMPT = "a red circle on a blue background at the top left"


@dataclass(frozen=True)
class Anchor:
    """A published figure for orientation (other code, other GPUs), never a limit."""

    precision: str  # "bf16" | "float8_e4m3fn"
    cpu_offload: bool
    figure: str
    source: str


ANCHORS = (
    Anchor("bf16", False, "36.2 GB peak", "diffusers FLUX.1-dev 1024², H100"),
    Anchor("float8_e4m3fn", False, "28.5 GB peak", "diffusers FLUX.1-dev fp8 layerwise casting, H100"),
    Anchor("float8_e4m3fn", True, "15.6 GB peak", "diffusers FLUX.1-dev fp8 layerwise + CPU offload, H100"),
    Anchor("float8_e4m3fn", True, "9.8 GB at load, 186 s / 20 steps", "source article, float8 DiT + CPU offload, "
                                                                        "RTX 3060 12 GB"),
)


@dataclass(frozen=True)
class Measurement:
    precision: str
    cpu_offload: bool
    memory_kind: str  # "cuda" (device memory) or "cpu-rss" (host: resident = process RSS, peak = growth)
    load_s: float
    resident_bytes: int | None = None  # allocated when the render began (the article's "at load")
    peak_bytes: int | None = None  # during the render
    median_step_s: float | None = None
    steps: int = 0
    error: str = ""  # e.g. out of memory; the other precision still runs


@dataclass(frozen=True)
class FullSizeRequest:
    architecture: Architecture
    device: str
    width: int = 1024
    height: int = 1024
    steps: int = 20
    seed: int = 0
    work_dir: Path | None = None  # None: a temporary folder


def build_under_plan(resolved: ResolvedCheckpoint, scheme: Scheme, device: str,
                     spec: CheckpointSpec | None) -> FluxImagePipeline:
    """The pipeline of ``scheme`` under the checkpoint's memory plan (the one the gate uses,
    ``quant_guard.memory_plan.plan_memory``); without a checkpoint, every component resident."""
    from quant_guard.memory_plan import checkpoint_plan
    from quant_guard.pipelines import build_pipeline

    plan = checkpoint_plan(spec, scheme, device)
    return build_pipeline(resolved, scheme, device, plan=plan)


def run_full_size(request: FullSizeRequest, spec: CheckpointSpec | None) -> list[Measurement]:
    """Write the random checkpoint, then build, render and release the bf16 and float8
    pipelines one after the other (never two DiTs at once); the folder is removed at the end."""
    from quant_guard.synthetic import register, write_random_checkpoint

    folder = Path(tempfile.mkdtemp(prefix="qg-doctor-", dir=request.work_dir))
    try:
        resolved = write_random_checkpoint(folder / "weights", request.architecture, device=request.device,
                                           seed=request.seed)
        register(request.architecture)
        from quant_guard.schemes import FLOAT8_E4M3FN, REFERENCE

        return [_measure(resolved, scheme, request, spec) for scheme in (REFERENCE, FLOAT8_E4M3FN)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _measure(resolved: ResolvedCheckpoint, scheme: Scheme, request: FullSizeRequest,
             spec: CheckpointSpec | None) -> Measurement:
    import torch

    from quant_guard.pipelines import LoadOutOfMemory
    from quant_guard.render import RenderRequest, render

    offload = bool(spec and spec.cpu_offload)
    kind = "cuda" if request.device.startswith("cuda") else "cpu-rss"
    started = time.perf_counter()
    pipe = None
    try:
        pipe = build_under_plan(resolved, scheme, request.device, spec)
        load_s = time.perf_counter() - started
        result = render(pipe, RenderRequest(PROMPT, request.seed, request.steps, request.width, request.height,
                                            3.5, resolved.t5_sequence_length))
    except (torch.OutOfMemoryError, MemoryError, LoadOutOfMemory) as exc:
        cause = exc.error if isinstance(exc, LoadOutOfMemory) else exc  # build_pipeline names what was loading
        return Measurement(scheme.id, offload, kind, time.perf_counter() - started,
                           error=f"out of memory: {str(cause).splitlines()[0]}")
    finally:
        del pipe
        gc.collect()
        if kind == "cuda":
            torch.cuda.empty_cache()
    stats = step_stats(result.step_times_s, 1)
    return Measurement(scheme.id, offload, result.memory.kind, load_s, result.memory.at_start_bytes,
                       result.memory.peak_bytes, stats.median_s if stats else None, len(result.step_times_s))


def anchors_for(precision: str, cpu_offload: bool) -> list[Anchor]:
    """The published figures of this precision in the same offload setting, else all of it."""
    same = [a for a in ANCHORS if a.precision == precision]
    return [a for a in same if a.cpu_offload == cpu_offload] or same


def _gb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e9:.1f} GB"


def format_measurements(request: FullSizeRequest, measurements: list[Measurement], device_name: str) -> str:
    """A Markdown table, measured beside published (GB = 10^9 bytes, as the published figures)."""
    host = any(m.memory_kind == "cpu-rss" for m in measurements)
    lines = ["", f"Random weights at {request.architecture.name} shapes, {request.width}x{request.height}, "
             f"{request.steps} steps, on {device_name}" + (" (host memory: resident = process RSS, peak = its growth "
                                                             "during the render)" if host else ""),
             "",
             "| run | cpu_offload | resident at render start | peak during render | median step | per 20 steps "
             "| published |",
             "|---|---|---|---|---|---|---|"]
    for m in measurements:
        anchors = "; ".join(f"{a.figure} ({a.source})" for a in anchors_for(m.precision, m.cpu_offload))
        if m.error:
            lines.append(f"| {m.precision} | {str(m.cpu_offload).lower()} | {m.error} | | | | {anchors} |")
            continue
        step = "-" if m.median_step_s is None else f"{m.median_step_s:.3f} s"
        twenty = "-" if m.median_step_s is None else f"{20 * m.median_step_s:.1f} s"
        lines.append(f"| {m.precision} | {str(m.cpu_offload).lower()} | {_gb(m.resident_bytes)} | {_gb(m.peak_bytes)} "
                     f"| {step} | {twenty} | {anchors} |")
    return "\n".join([*lines, ""])
