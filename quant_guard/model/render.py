"""Render one fixed-seed image (or a video family's clip) through a DiffSynth pipeline and measure
it: per-step times and peak memory of that render alone.

The pipeline's call keywords for a request are its model family's (``families/``, e.g. FLUX.1's
``embedded_guidance``).

Per-step time: a DiffSynth pipeline's ``__call__`` wraps its denoising loop in ``progress_bar_cmd``;
a generator that timestamps around each ``yield`` sees every step (hooks on ``pipe.dit`` never
fire: the forward is the pipeline's ``model_fn``, e.g. FLUX.1's ``model_fn_flux_image``). On CUDA
the device is synchronised first.

Memory: on CUDA, right before the render, the cached blocks are handed back and the peak
statistics reset (a peak taken without the reset includes the load); ``memory_allocated`` then
is the memory resident when the render began, ``max_memory_allocated`` after it the peak of
allocated tensors during it. Tensors are not all a card must hold: the caching allocator
reserves more than it hands out (rounding, cached and fragmented blocks: ``max_memory_reserved``)
and the CUDA context, cuBLAS/cuDNN workspaces outside the allocator and other processes take
device memory too. So the peak the device itself reports as used is recorded as well: what the
device reported used when the render began (NVML through ``torch.cuda.device_memory_used``
where available, else ``mem_get_info``) minus the allocator's reserve then, plus the reserve's
peak. The session keeps one pipeline with one DiT (session.py), so the figures are this
pipeline's own whatever ran before. On CPU the figures are what the host must provide: the
process's RSS when the render began and its peak RSS during the render (Linux: writing "5" to
/proc/self/clear_refs resets the VmHWM high-water mark right before the render). Where that reset
is impossible the peak is not measured, and ``MemoryStats.note`` says why, rather than reporting
a high-water mark that includes earlier work.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quant_guard.judge.budgets import MemoryStats, RenderSummary
from quant_guard.model import host_memory
from quant_guard.model.families import family_of_pipeline

if TYPE_CHECKING:
    import numpy as np
    from diffsynth.diffusion.base_pipeline import BasePipeline

    from quant_guard.model.progress import StepCallback


@dataclass(frozen=True)
class RenderRequest:
    """What a render is asked for. A model family maps the fields it uses to its pipeline's call
    keywords (``ModelFamily.call_arguments``); a later family's own (negative prompt, cfg scale,
    frames) become more fields here, with defaults."""

    prompt: str
    seed: int
    steps: int
    width: int
    height: int
    guidance: float
    t5_sequence_length: int
    frames: int = 1  # a video family's clip length (``num_frames``)
    fps: int = 0  # a clip's playback rate: recorded with its golden, never passed to the pipeline


@dataclass(frozen=True)
class Render:
    image: np.ndarray  # uint8, H x W x 3; a clip's first frame
    step_times_s: tuple[float, ...]
    total_s: float
    memory: MemoryStats
    nonfinite_fraction: float  # share of NaN/Inf values in the VAE output, before the uint8 cast
    dit_weight_bytes: int  # the DiT's weights as stored while the denoising loop ran
    load_peak_rss_bytes: int | None = None  # as in RenderSummary
    component_weight_bytes: dict[str, int] = field(default_factory=dict)  # as in RenderSummary
    component_resident_bytes: dict[str, int] = field(default_factory=dict)  # as in RenderSummary
    frames: np.ndarray | None = None  # uint8, T x H x W x 3: a video family's clip; None for an image

    @property
    def pixels(self) -> np.ndarray:
        """What the golden stores and the judge compares: the clip (of 2 frames or more), else the image."""
        return self.image if self.frames is None or len(self.frames) < 2 else self.frames

    def summary(self) -> RenderSummary:
        return RenderSummary(step_times_s=self.step_times_s, total_s=self.total_s, memory=self.memory,
                             dit_weight_bytes=self.dit_weight_bytes, load_peak_rss_bytes=self.load_peak_rss_bytes,
                             component_weight_bytes=dict(self.component_weight_bytes),
                             component_resident_bytes=dict(self.component_resident_bytes))


class _StepTimer:
    """Stands in for tqdm as ``progress_bar_cmd``: records the wall time of each step, and each
    component's weight bytes (stored, and on the computation device) once the denoising loop has
    started (after the pipeline's onload for it)."""

    def __init__(self, synchronize: Any, pipe: BasePipeline, on_step: StepCallback | None = None) -> None:
        self.synchronize = synchronize
        self.pipe = pipe
        self.on_step = on_step
        self.times: list[float] = []
        self.dit_bytes = 0
        self.component_bytes: dict[str, int] = {}
        self.resident_bytes: dict[str, int] = {}

    def __call__(self, iterable: Iterable[Any]) -> Iterator[Any]:
        from quant_guard.model.scheme_check import stored_bytes

        self.dit_bytes = stored_bytes(self.pipe.dit)
        self.component_bytes = component_bytes(self.pipe)
        self.resident_bytes = component_bytes(self.pipe, on=self.pipe.device)
        total = len(iterable) if isinstance(iterable, Sized) else None
        first_start: float | None = None
        for item in iterable:
            self.synchronize()
            start = time.perf_counter()
            first_start = start if first_start is None else first_start
            yield item  # the pipeline runs one denoising step before asking for the next item
            self.synchronize()
            end = time.perf_counter()
            self.times.append(end - start)
            if self.on_step is not None:  # between the timed windows: never part of a step time
                self.on_step(len(self.times), total, end - first_start)


def component_bytes(pipe: BasePipeline, *, on: Any = None) -> dict[str, int]:
    """Bytes each model component of the pipeline's family stores (every model its file provides);
    with ``on`` a device, the part of them that lives on it now."""
    from quant_guard.model.scheme_check import resident_bytes, stored_bytes

    def measure(module: Any) -> int:
        return stored_bytes(module) if on is None else resident_bytes(module, on)

    out = {}
    for c in family_of_pipeline(pipe).components:
        modules = [m for attribute, _ in c.models or ((c.attribute, ""),)
                   if (m := getattr(pipe, attribute, None)) is not None]
        if modules or not c.optional:  # Wan2.1's pipeline has no second DiT: no column for it
            out[c.name] = sum(measure(m) for m in modules)
    return out


def render(pipe: BasePipeline, request: RenderRequest, *, on_step: StepCallback | None = None) -> Render:
    """``on_step`` is called after each denoising step, outside the timed part of the step."""
    import numpy as np
    import torch

    family = family_of_pipeline(pipe)
    cuda = str(pipe.device).startswith("cuda")
    synchronize = torch.cuda.synchronize if cuda else (lambda: None)
    timer = _StepTimer(synchronize, pipe, on_step)
    nonfinite: list[float] = []
    decode = family.decode_method
    to_image = getattr(pipe, decode)

    def checked_to_image(vae_output: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        # NaN/Inf become arbitrary bytes in the uint8 cast; count them before it happens
        nonfinite.append(1.0 - torch.isfinite(vae_output).float().mean().item())
        return to_image(vae_output, *args, **kwargs)

    start_mem = _start_memory(cuda)
    started = time.perf_counter()
    setattr(pipe, decode, checked_to_image)  # instance attribute shadows the method for this call
    try:
        output = pipe(**family.call_kwargs(request), rand_device="cpu", progress_bar_cmd=timer)
        synchronize()
    finally:
        delattr(pipe, decode)
    total = time.perf_counter() - started
    memory = _end_memory(cuda, start_mem)
    # a video pipeline returns its frames as a list of PIL images (vae_output_to_video)
    frames = (np.stack([np.asarray(f.convert("RGB"), dtype=np.uint8) for f in output])
              if isinstance(output, list) else None)
    array = frames[0].copy() if frames is not None else np.asarray(output.convert("RGB"), dtype=np.uint8).copy()
    loaded = getattr(pipe, "qg_build_memory", None)  # set by pipelines.build_pipeline / swap_dit
    return Render(image=array, step_times_s=tuple(timer.times), total_s=total, memory=memory,
                  nonfinite_fraction=max(nonfinite, default=0.0), dit_weight_bytes=timer.dit_bytes,
                  component_weight_bytes=timer.component_bytes, component_resident_bytes=timer.resident_bytes,
                  load_peak_rss_bytes=getattr(loaded, "peak_bytes", None), frames=frames)


@dataclass(frozen=True)
class _Start:
    at_start: int | None  # allocated (CUDA) / RSS (CPU)
    reset: bool  # the peak statistic was reset
    outside_allocator: int | None = None  # CUDA: device memory used that the caching allocator does not hold


def _start_memory(cuda: bool) -> _Start:
    """Memory in use as the render begins, and whether the peak statistic was reset."""
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # the reserved peak then starts from what is referenced
        torch.cuda.reset_peak_memory_stats()
        used = device_used()
        outside = None if used is None else max(0, used - int(torch.cuda.memory_reserved()))
        return _Start(int(torch.cuda.memory_allocated()), True, outside)
    return _Start(host_memory.rss_field("VmRSS"), host_memory.reset_peak_rss())


def device_used() -> int | None:
    """Bytes the current CUDA device reports as used, by every process: NVML where torch can reach
    it, else the driver's free/total; None where neither answers."""
    import torch

    try:
        return int(torch.cuda.device_memory_used())
    except Exception:  # noqa: BLE001 - no pynvml / amdsmi, or an old torch: ask the driver instead
        pass
    try:
        free, total = torch.cuda.mem_get_info()
    except Exception:  # noqa: BLE001 - a figure the budget then reports as not measured
        return None
    return int(total) - int(free)


def _end_memory(cuda: bool, start: _Start) -> MemoryStats:
    at_start, reset = start.at_start, start.reset
    if cuda:
        import torch

        reserved = int(torch.cuda.max_memory_reserved())
        device = None if start.outside_allocator is None else start.outside_allocator + reserved
        return MemoryStats("cuda", int(torch.cuda.max_memory_allocated()), reserved_bytes=reserved,
                           at_start_bytes=at_start, device_bytes=device,
                           note=None if device is not None else "device used memory not measured: neither NVML "
                                                                 "nor cudaMemGetInfo answered")
    if not reset:
        return MemoryStats("cpu-rss", None, at_start_bytes=at_start,
                           note=f"peak RSS not measured: {host_memory.CLEAR_REFS} cannot be written here (not "
                                "Linux, or not permitted), so the process's high-water mark would include earlier work")
    peak = host_memory.rss_field("VmHWM")
    note = None if peak is not None else f"peak RSS not measured: no VmHWM in {host_memory.STATUS}"
    return MemoryStats("cpu-rss", peak, at_start_bytes=at_start, note=note)


    return None
