"""Running under pytest-xdist: one GPU per worker, and no timing limits on a shared device.

The controller counts the GPUs once, before any worker starts (``pytest_xdist_setupnodes``).
With at least as many GPUs as workers, each local worker is started with its own
``CUDA_VISIBLE_DEVICES`` in its process environment (execnet's ``env:`` spec), so nothing in
the worker (a plugin, a conftest, a test module) can see another GPU; the worker's own
``pytest_configure`` then checks that the pinning took and refuses to run when CUDA was
initialised with more devices visible. Workers that would share a device (several workers on
one GPU, or on the CPU) still check images and memory (each worker is its own process), but a
step-time limit is refused: it would measure contention, not the checkpoint.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

GPU_COUNT_KEY = "qg_gpu_count"
GPU_DEVICE_KEY = "qg_gpu_device"  # the CUDA_VISIBLE_DEVICES entry a worker owns
OUTCOMES_KEY = "qg_golden_outcomes"  # a worker's golden write counts, summed on the controller
VISIBLE = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class Placement:
    """Where this process sits among xdist workers (index 0 of 1 without xdist)."""

    worker_index: int = 0
    worker_count: int = 1
    gpu_count: int = 0
    gpu_device: str | None = None  # set by the controller when this worker owns a GPU

    @property
    def pinned_gpu(self) -> int | None:
        if self.worker_count > 1 and self.gpu_count >= self.worker_count:
            return self.worker_index
        return None

    def shares(self, device: str) -> bool:
        """Whether other workers of this run use the same device at the same time."""
        if self.worker_count <= 1:
            return False
        return not device.startswith("cuda") or self.pinned_gpu is None

    def refusal(self, device: str) -> str:
        what = "the CPU" if not device.startswith("cuda") else f"{self.gpu_count} GPU(s)"
        return (f"step-time limit refused: {self.worker_count} xdist workers share {what}, so step times would "
                "measure contention. Run without -n, or with at most one worker per GPU.")


# Every test of one golden (the same checkpoint, case and seed: one test per scheme) carries this
# group (plugin.pytest_generate_tests). Under --update-golden the run is distributed by group, so
# one worker owns each golden: it renders the bf16 reference once and writes it, instead of every
# worker that drew a scheme of that case rendering and writing the same file.
GOLDEN_GROUP_PREFIX = "qg-golden-"
# xdist modes that hand tests to whichever worker is free: replaced by "loadgroup" for an update
_FREE_MODES = frozenset({"load", "loadscope", "loadfile", "worksteal"})


def golden_group(checkpoint_id: str, case_id: str, seed: int) -> str:
    return f"{GOLDEN_GROUP_PREFIX}{checkpoint_id}-{case_id}-s{seed}"


def one_owner_per_golden(config: pytest.Config) -> None:
    """With --update-golden under xdist, distribute by golden (``--dist loadgroup``). The
    controller's scheduler reads ``dist``; each worker suffixes its test ids with their group when
    ``option.loadgroup`` is set (xdist's remote.py does this in its collection hook)."""
    if hasattr(config, "workerinput"):
        config.option.loadgroup = True
    elif getattr(config.option, "dist", "no") in _FREE_MODES:
        config.option.dist = "loadgroup"


class PinningError(pytest.UsageError):
    """A worker that should own one GPU sees several: CUDA was initialised before the pinning."""


def placement(config: pytest.Config) -> Placement:
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is None:
        return Placement()
    index = int(str(workerinput["workerid"]).removeprefix("gw"))
    return Placement(index, int(workerinput["workercount"]), int(workerinput.get(GPU_COUNT_KEY, 0)),
                     workerinput.get(GPU_DEVICE_KEY))


def gpu_assignment(worker_count: int, gpu_count: int, visible: str | None) -> list[str] | None:
    """The ``CUDA_VISIBLE_DEVICES`` entry of each worker, or None when the GPUs do not go round."""
    if worker_count <= 1 or gpu_count < worker_count:
        return None
    devices = [d.strip() for d in visible.split(",")] if visible else [str(i) for i in range(gpu_count)]
    return devices[:worker_count]


def pin_gpu(where: Placement) -> None:
    """Restrict this worker to its own GPU (normally already done by the controller when it
    started the worker; this covers workers it could not start with an environment)."""
    device = where.gpu_device
    if device is None:
        if where.pinned_gpu is None:
            return
        assignment = gpu_assignment(where.worker_count, where.gpu_count, os.environ.get(VISIBLE))
        device = assignment[where.pinned_gpu] if assignment else None
    if device is not None:
        os.environ[VISIBLE] = device


def check_pinned(where: Placement, worker_id: str = "this worker") -> None:
    """Refuse to run when this worker should own one GPU but torch initialised CUDA before the
    pinning: it would then run on GPU 0 beside the other workers while step-time limits stay
    allowed. Imports nothing: if torch is not imported yet, CUDA cannot be initialised."""
    if where.gpu_device is None and where.pinned_gpu is None:
        return
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return
    seen = int(torch.cuda.device_count())
    if seen != 1:
        raise PinningError(
            f"quant_guard: xdist worker {worker_id} should run on GPU {os.environ.get(VISIBLE)} alone, but CUDA was "
            f"initialised before the pinning and this process sees {seen} GPUs (something imported before "
            "pytest_configure touched CUDA, e.g. a conftest or a plugin). Do not initialise CUDA at import time, "
            f"set {VISIBLE} per worker yourself, or run without -n.")


class ControllerHooks:
    """Registered on the xdist controller only (see plugin.pytest_configure): pins each local
    worker to its GPU when it starts, hands each worker the GPU count and its device, and passes
    each finished worker's golden write counts to ``on_outcomes``."""

    def __init__(self, on_outcomes: Callable[[dict[str, Any]], None],
                 count_gpus: Callable[[], int] | None = None) -> None:
        self._count_gpus = count_gpus or _count_gpus
        self._gpu_count: int | None = None
        self._devices: dict[str, str] = {}  # worker id -> CUDA_VISIBLE_DEVICES entry
        self._on_outcomes = on_outcomes

    def _count(self) -> int:
        if self._gpu_count is None:
            self._gpu_count = self._count_gpus()
        return self._gpu_count

    def pytest_xdist_setupnodes(self, config: pytest.Config, specs: Sequence[Any]) -> None:
        assignment = gpu_assignment(len(specs), self._count(), os.environ.get(VISIBLE))
        if assignment is None:
            return
        for spec, device in zip(specs, assignment):
            self._devices[str(spec.id)] = device
            if spec.popen:  # a local process: its environment is set before it runs any Python of ours
                spec.env[VISIBLE] = device

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[GPU_COUNT_KEY] = self._count()
        device = self._devices.get(str(node.workerinput.get("workerid")))
        if device is not None:
            node.workerinput[GPU_DEVICE_KEY] = device

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        outcomes = getattr(node, "workeroutput", {}).get(OUTCOMES_KEY)
        if outcomes:
            self._on_outcomes(outcomes)


def _count_gpus() -> int:
    import torch  # the controller renders nothing; counting does not create a CUDA context

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
