"""``quant-guard doctor --full-size``: the bf16 reference and the float8 candidate of a
checkpoint of random weights at a model family's full size (FLUX.1-dev's shapes by default,
``--family`` for another), built and rendered on this machine by the gate's own code
(``build_pipeline``, ``render``), one pipeline at a time, with peak memory, resident memory and
step time set beside the family's published figures. The architecture is a parameter: the
plugin's tests run the same code at each family's embedded tiny size on a CPU.

Nothing is downloaded and nothing is written to the golden store; the random weights go to a
work folder that is deleted afterwards (about 32 GiB at FLUX.1-dev size, 54 GiB at Qwen-Image's).
"""

from __future__ import annotations

import gc
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from quant_guard.judge.budgets import peak_figure, step_stats
from quant_guard.config.limits import Budget
from quant_guard.model.checkpoints import ResolvedCheckpoint
from quant_guard.model.families.base import DIT, Anchor, Architecture
from quant_guard.tools.synthetic import FULL_SIZE, architecture_family

if TYPE_CHECKING:
    from diffsynth.diffusion.base_pipeline import BasePipeline

    from quant_guard.config.project import CheckpointSpec
    from quant_guard.config.schemes import ComponentScheme, Scheme

PROMPT = "a red circle on a blue background at the top left"


# The default family's published figures at full size (``Architecture.published``); a measurement
# is shown beside its own family's (``published_for``), whatever size it ran at
ANCHORS: tuple[Anchor, ...] = FULL_SIZE.published


def published_for(arch: Architecture) -> tuple[Anchor, ...]:
    """The published figures of the family ``arch`` belongs to, at its full size."""
    return architecture_family(arch).full_size.published


@dataclass(frozen=True)
class Measurement:
    precision: str  # the scheme's id ("bf16" for the reference)
    cpu_offload: bool
    memory_kind: str  # "cuda" (device memory) or "cpu-rss" (host: resident = process RSS, peak = its peak)
    load_s: float
    resident_bytes: int | None = None  # allocated when the render began (the article's "at load")
    peak_bytes: int | None = None  # during the render
    median_step_s: float | None = None
    steps: int = 0
    error: str = ""  # e.g. out of memory; the other schemes still run
    load: str = "build"  # "build": a whole pipeline; "swap": only its DiT, into the previous pipeline
    host_planned_bytes: int | None = None  # the plan's host RAM at the peak of this load (host_memory.py)
    host_peak_bytes: int | None = None  # the process's measured peak RSS during this load
    scheme_kind: str = ""  # the scheme's storage dtype or method (what the published figures are filed under)
    targets: tuple[str, ...] = ()  # the components the scheme stores other than in bf16
    swapped: tuple[str, ...] = ()  # the components this load read ("swap": those that differ from the last scheme)
    component_bytes: tuple[tuple[str, int], ...] = ()  # each component's weights as stored during the render
    # the part of each component's weights on the render's device as its denoising loop began
    component_resident: tuple[tuple[str, int], ...] = ()
    frames: int = 1  # the frames the render returned (a video family's clip)


@dataclass(frozen=True)
class FullSizeRequest:
    architecture: Architecture
    device: str
    # None: the checkpoint's ``render`` size (its limits are for that size), else the family's default
    width: int | None = None
    height: int | None = None
    steps: int = 20
    seed: int = 0
    work_dir: Path | None = None  # None: a temporary folder
    # a video family's clip length; None: the checkpoint's ``render.frames``, else the family's default
    frames: int | None = None

    def settled(self, spec: CheckpointSpec | None) -> FullSizeRequest:
        """Size and clip length filled in from ``spec``'s render settings, else the family's (at
        tiny shapes: its embedded tiny's, not a real checkpoint's 1024x1024)."""
        from quant_guard.config.families import EMBEDDED, FAMILIES

        family = architecture_family(self.architecture).name
        tiny = [e.render for e in EMBEDDED.values() if e.family == family] if self.architecture.name == "tiny" else []
        render = spec.render if spec is not None else (tiny or [FAMILIES[family].render])[0]
        return replace(self, width=self.width or render.width, height=self.height or render.height,
                       frames=self.frames or render.frames)


def measured_schemes(spec: CheckpointSpec | None) -> list[Scheme]:
    """The bf16 reference, then every scheme of the checkpoint (float8 without one). A scheme
    with its own file of a component (the DiT's or another's) cannot run on random weights: that
    component is quantized on load here instead."""
    from quant_guard.config.schemes import DEFAULT_SCHEMES, REFERENCE

    schemes = spec.schemes if spec else DEFAULT_SCHEMES
    return [REFERENCE, *(_quantized_on_load(scheme) for scheme in schemes)]


def _quantized_on_load(scheme: Scheme) -> Scheme:
    """``scheme`` with every component's own file dropped, its method applied on load instead."""
    import dataclasses

    def on_load(c: ComponentScheme) -> ComponentScheme:
        if c.file is None:
            return c
        quantization = c.quantization and dataclasses.replace(c.quantization, load_prequantized=False)
        return dataclasses.replace(c, file=None, quantization=quantization)

    dit = on_load(scheme.dit_scheme)
    return dataclasses.replace(scheme, dit=None, quantization=dit.quantization,
                               others=tuple((name, on_load(c)) for name, c in scheme.others))


def run_full_size(request: FullSizeRequest, spec: CheckpointSpec | None) -> list[Measurement]:
    """Write the random checkpoint, then do what the gate's session does: build the bf16
    reference's pipeline and render, then swap in each scheme's DiT and render (never two DiTs
    at once); a failed load or render is recorded and the next scheme builds afresh. The folder
    is removed at the end."""
    from quant_guard.tools.synthetic import register, write_random_checkpoint

    request = request.settled(spec)
    folder = Path(tempfile.mkdtemp(prefix="qg-doctor-", dir=request.work_dir))
    try:
        resolved = write_random_checkpoint(folder / "weights", request.architecture, device=request.device,
                                           seed=request.seed)
        register(request.architecture)
        runner = _Runner(resolved, request, spec)
        try:
            return [runner.measure(scheme) for scheme in measured_schemes(spec)]
        finally:
            runner.release()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class _Runner:
    """One pipeline at a time, as ``session.QuantGuardSession.pipeline`` keeps it."""

    def __init__(self, resolved: ResolvedCheckpoint, request: FullSizeRequest, spec: CheckpointSpec | None) -> None:
        self.resolved, self.request, self.spec = resolved, request, spec
        self.pipe: BasePipeline | None = None
        self.loaded: Scheme | None = None  # the scheme ``pipe`` holds

    def release(self) -> None:
        from quant_guard.model.pipelines import release_memory

        self.pipe, self.loaded = None, None
        gc.collect()
        release_memory()

    def measure(self, scheme: Scheme) -> Measurement:
        import torch

        from quant_guard.config.families import FAMILIES
        from quant_guard.model.memory_plan import checkpoint_plan
        from quant_guard.model.pipelines import (LoadOutOfMemory, build_pipeline, changed_components,
                                                 planned_host_memory, swap_components)
        from quant_guard.model.render import RenderRequest, render

        request, offload = self.request, bool(self.spec and self.spec.cpu_offload)
        kind = "cuda" if request.device.startswith("cuda") else "cpu-rss"
        family = architecture_family(request.architecture)
        plan = checkpoint_plan(self.spec, scheme, request.device, family=family)
        host = planned_host_memory(self.resolved, scheme, plan)
        load = "swap" if self.pipe is not None else "build"
        # a swap reads the components whose storage differs from the last scheme's, as the session does
        swapped = (changed_components(self.resolved, self.loaded, scheme) if self.loaded is not None
                   else family.model_components)
        planned = host.peak_bytes if load == "build" else host.swap_peak_for(swapped)
        base = Measurement(scheme.id, offload, kind, 0.0, load=load, host_planned_bytes=planned,
                           scheme_kind="bf16" if scheme.is_reference else scheme.kind, targets=scheme.targets,
                           swapped=swapped)
        started = time.perf_counter()
        try:
            if self.pipe is None:
                self.pipe = build_pipeline(self.resolved, scheme, request.device, plan=plan)
            else:
                pipe, self.pipe = self.pipe, None  # a failed swap leaves a pipeline without those components
                swap_components(pipe, self.resolved, scheme, plan, swapped)
                self.pipe = pipe
            self.loaded = scheme
            build = self.pipe.qg_build_memory
            base = replace(base, host_peak_bytes=build.peak_bytes, load_s=time.perf_counter() - started)
            # the family's guidance as its DiffSynth example renders (true CFG doubles the DiT passes)
            guidance = FAMILIES[family.name].render.guidance
            assert request.width and request.height and request.frames  # run_full_size settled them
            result = render(self.pipe, RenderRequest(PROMPT, request.seed, request.steps, request.width,
                                                     request.height, guidance, self.resolved.t5_sequence_length,
                                                     frames=request.frames))
        except (torch.OutOfMemoryError, MemoryError, LoadOutOfMemory) as exc:
            cause = exc.error if isinstance(exc, LoadOutOfMemory) else exc  # build_pipeline names what was loading
            self.release()
            return replace(base, load_s=time.perf_counter() - started,
                           error=f"out of memory: {str(cause).splitlines()[0]}")
        except Exception as exc:  # noqa: BLE001 - e.g. a quantization backend missing here; the others still run
            self.release()
            return replace(base, load_s=time.perf_counter() - started,
                           error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        stats = step_stats(result.step_times_s, 1)
        # the peak the checkpoint's limit counts (device used by default), as the gate checks it
        counts = self.spec.limits.peak_counts if self.spec is not None else Budget().peak_counts
        return replace(base, memory_kind=result.memory.kind, resident_bytes=result.memory.at_start_bytes,
                       component_bytes=tuple(result.component_weight_bytes.items()),
                       component_resident=tuple(result.component_resident_bytes.items()),
                       peak_bytes=peak_figure(result.memory, counts)[0], median_step_s=stats.median_s if stats else None,
                       steps=len(result.step_times_s), frames=1 if result.frames is None else len(result.frames))


def anchors_for(precision: str, cpu_offload: bool, published: tuple[Anchor, ...] = ANCHORS) -> list[Anchor]:
    """The published figures of this precision in the same offload setting, else all of it."""
    same = [a for a in published if a.precision == precision]
    return [a for a in same if a.cpu_offload == cpu_offload] or same


def _gb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e9:.1f} GB"


# Suggested limits: the largest measured figure among the schemes times a margin, so that
# run-to-run noise (another process on the runner, clocks) does not fail the gate but a real
# regression (a scheme that stops saving memory, a 2x slower step) does.
PEAK_MARGIN = 1.10
STEP_MARGIN = 1.15
RESIDENT_FLOOR = 2**28  # a resident figure near zero (cpu_offload) still gets 256 MiB of room


@dataclass(frozen=True)
class SuggestedLimits:
    peak_bytes: int | None
    resident_bytes: int | None
    step_time_s: float | None

    def toml(self) -> str:
        from quant_guard.config.units import format_bytes

        parts = []
        if self.peak_bytes is not None:
            parts.append(f'peak_vram = "{format_bytes(self.peak_bytes)}"')
        if self.resident_bytes is not None:
            parts.append(f'resident_vram = "{format_bytes(self.resident_bytes)}"')
        if self.step_time_s is not None:
            parts.append(f'step_time = "{self.step_time_s:.2f} s"')
        return ", ".join(parts)


def suggested_limits(measurements: list[Measurement]) -> SuggestedLimits | None:
    """From the candidates' renders (the limits apply to candidates): the largest peak and
    resident figure x ``PEAK_MARGIN`` and the slowest median step x ``STEP_MARGIN``."""
    done = [m for m in measurements if not m.error and m.precision != "bf16" and m.steps]
    if not done:
        return None

    def most(values: list[int | None]) -> int | None:
        known = [v for v in values if v is not None]
        return max(known) if known else None

    peak, resident = most([m.peak_bytes for m in done]), most([m.resident_bytes for m in done])
    steps = [m.median_step_s for m in done if m.median_step_s is not None]
    return SuggestedLimits(None if peak is None else _round_up(peak * PEAK_MARGIN),
                           None if resident is None else _round_up(max(resident * PEAK_MARGIN, RESIDENT_FLOOR)),
                           max(steps) * STEP_MARGIN if steps else None)


def _round_up(n: float) -> int:
    """Up to a whole 1/100 GiB (the precision format_bytes prints)."""
    step = 2**30 / 100
    return int(math.ceil(round(n / step, 6)) * step)  # round(): 9 GiB x 1.1 is 9.90 GiB, not 9.91


def format_measurements(request: FullSizeRequest, measurements: list[Measurement], device_name: str,
                        checks: dict[str, str] | None = None) -> str:
    """One Markdown table a runner admin can paste into an issue: every scheme, how it was
    loaded (a whole build or a DiT swap), host RAM planned and measured, device (or host) memory
    and step time of its render, the checkpoint's limits against it (``checks``: scheme id ->
    verdicts) and the published figures beside it (GB = 10^9 bytes, as the published figures)."""
    host = any(m.memory_kind == "cpu-rss" for m in measurements)
    family, published = architecture_family(request.architecture), published_for(request.architecture)
    size = f"{request.width}x{request.height}"
    clip = max((m.frames for m in measurements), default=1)
    size += f", {clip} frames" if clip > 1 else ""
    lines = ["", f"Random weights at {family.label} {request.architecture.name} shapes, {size}, "
             f"{request.steps} steps, on {device_name}" + (" (host memory: resident = process RSS at render start, "
                                                             "peak = its peak during the render)" if host else ""),
             "",
             "| scheme | load | host RAM planned | host RAM peak (measured) | cpu_offload | resident at render start "
             "| peak during render | median step | per 20 steps | limits | published |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in measurements:
        anchors = "; ".join(f"{a.figure} ({a.source})" for a in anchors_for(m.scheme_kind or m.precision,
                                                                              m.cpu_offload, published))
        verdicts = (checks or {}).get(m.precision, "")
        head = f"| {m.precision} | {m.load} | {_gb(m.host_planned_bytes)} | {_gb(m.host_peak_bytes)} | " \
               f"{str(m.cpu_offload).lower()} |"
        if m.error:
            lines.append(f"{head} {m.error} | | | | {verdicts} | {anchors} |")
            continue
        step = "-" if m.median_step_s is None else f"{m.median_step_s:.3f} s"
        twenty = "-" if m.median_step_s is None else f"{20 * m.median_step_s:.1f} s"
        lines.append(f"{head} {_gb(m.resident_bytes)} | {_gb(m.peak_bytes)} | {step} | {twenty} | {verdicts} "
                     f"| {anchors} |")
    lines += component_table(measurements)
    suggested = suggested_limits(measurements)
    if suggested is not None:
        lines += ["", f"Suggested limits (largest measured figure of the schemes x {PEAK_MARGIN:.2f} for memory, "
                      f"slowest median step x {STEP_MARGIN:.2f}; measured on {device_name}):",
                  "", f"    [tool.quant_guard.checkpoints.limits]  {suggested.toml()}"]
    return "\n".join([*lines, ""])


def component_table(measurements: list[Measurement]) -> list[str]:
    """Where a scheme quantizes more than the DiT: each component's weights as stored during each
    scheme's render, what each targeted component saves against the bf16 reference, the part of
    them on the render's device at its start where that is less (cpu_offload), and which
    components each load read. Nothing when every scheme quantizes the DiT alone."""
    from quant_guard.config.units import format_bytes

    if all(set(m.targets) <= {DIT} for m in measurements):
        return []
    reference = next((dict(m.component_bytes) for m in measurements if not m.targets and m.component_bytes), {})
    names = list(reference) or list(dict.fromkeys(n for m in measurements for n, _ in m.component_bytes))
    lines = ["", "Weights per component as stored during each render (saved: against the bf16 reference; "
                 "on device: the part on the render's device as its denoising loop began, where less):", "",
             "| scheme | quantizes | load read | " + " | ".join(names) + " | saved in all |",
             "|---|---|---|" + "---|" * len(names) + "---|"]
    for m in measurements:
        stored, resident = dict(m.component_bytes), dict(m.component_resident)
        if not stored:
            lines.append(f"| {m.precision} | {', '.join(m.targets) or 'nothing'} | {', '.join(m.swapped)} | "
                         + " | ".join("-" for _ in names) + " | - |")
            continue
        cells = []
        for name in names:
            cell = format_bytes(stored[name]) if name in stored else "-"
            if name in m.targets and name in stored and name in reference:
                cell += f" (saves {format_bytes(reference[name] - stored[name])})"
            if name in stored and resident.get(name, stored[name]) < stored[name]:
                cell += f", {format_bytes(resident[name])} on device"
            cells.append(cell)
        saved = sum(reference.get(n, v) - v for n, v in stored.items())
        lines.append(f"| {m.precision} | {', '.join(m.targets) or 'nothing'} | {', '.join(m.swapped)} | "
                     + " | ".join(cells) + f" | {format_bytes(saved)} |")
    return lines
