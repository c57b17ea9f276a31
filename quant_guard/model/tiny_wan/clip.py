"""Build and render the tiny Wan checkpoint outside the gate (its tests and
``benchmarks/wan_temporal.py``): ``model.pipelines.build_pipeline`` (memory plan, float8 storage or a
``diffsynth.core.quant`` method, the scheme check) builds the real ``WanVideoPipeline``, and a clip
comes back with each step's wall time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from quant_guard.config.schemes import Scheme
    from quant_guard.model.checkpoints import ResolvedCheckpoint
    from quant_guard.model.tiny.build import TinyFamilyFiles

PROMPT = "a red circle moving from left to right on a blue background"
SIZE = 64  # the smallest multiple of 16 (height/width division factor) that keeps a 4x4 latent patch grid
FRAMES = 5  # num_frames must be 4k+1 (time_division_factor 4, remainder 1): 5 frames -> 2 latent frames
STEPS = 3


def resolved(files: TinyFamilyFiles, dit: Path | None = None, scheme_id: str | None = None) -> ResolvedCheckpoint:
    """The tiny checkpoint as ``build_pipeline`` takes one; ``dit`` replaces scheme ``scheme_id``'s DiT."""
    from quant_guard.model.checkpoints import ResolvedCheckpoint

    own = {scheme_id: dit} if dit is not None and scheme_id is not None else {}
    return ResolvedCheckpoint("tiny-wan", dict(files.components()), own, 512, family="wan")


def build(files: TinyFamilyFiles, scheme: Scheme, *, dit: Path | None = None, device: str = "cpu") -> Any:
    """``build_pipeline`` of the tiny Wan with its DiT (or ``dit``) in ``scheme``; the scheme check has run."""
    from quant_guard.model.pipelines import build_pipeline

    return build_pipeline(resolved(files, dit, scheme.id), scheme, device)


@dataclass(frozen=True)
class Clip:
    frames: np.ndarray  # uint8, T x H x W x 3
    step_times_s: tuple[float, ...]


def render(pipe: Any, *, prompt: str = PROMPT, seed: int = 0, steps: int = STEPS, frames: int = FRAMES,
           size: int = SIZE, **kwargs: Any) -> Clip:
    """One clip as uint8 frames, with the wall time of each denoising step. cfg 1 (one DiT pass a
    step) and no VAE tiling unless ``kwargs`` say otherwise."""
    import numpy as np

    ticks: list[float] = []

    def timed(timesteps: Any) -> Iterator[Any]:
        ticks.append(time.perf_counter())
        for t in timesteps:
            yield t
            ticks.append(time.perf_counter())

    call = {"cfg_scale": 1.0, "tiled": False, **kwargs}
    video = pipe(prompt, seed=seed, height=size, width=size, num_frames=frames, num_inference_steps=steps,
                 progress_bar_cmd=timed, **call)
    steps_s = tuple(b - a for a, b in zip(ticks, ticks[1:]))
    return Clip(np.stack([np.asarray(frame.convert("RGB")) for frame in video]), steps_s)
