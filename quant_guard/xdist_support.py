"""Running under pytest-xdist: one GPU per worker, and no timing limits on a shared device.

The controller counts the GPUs once and hands the count to each worker; a worker with index i
of n pins itself to the i-th visible GPU (``CUDA_VISIBLE_DEVICES``, set before torch touches
CUDA) when there are at least n GPUs. Workers that would share a device (several workers on
one GPU, or on the CPU) still check images and memory (each worker is its own process), but a
step-time limit is refused: it would measure contention, not the checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

GPU_COUNT_KEY = "qg_gpu_count"
OUTCOMES_KEY = "qg_golden_outcomes"  # a worker's golden write counts, summed on the controller


@dataclass(frozen=True)
class Placement:
    """Where this process sits among xdist workers (index 0 of 1 without xdist)."""

    worker_index: int = 0
    worker_count: int = 1
    gpu_count: int = 0

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


def placement(config: pytest.Config) -> Placement:
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is None:
        return Placement()
    index = int(str(workerinput["workerid"]).removeprefix("gw"))
    return Placement(index, int(workerinput["workercount"]), int(workerinput.get(GPU_COUNT_KEY, 0)))


def pin_gpu(where: Placement) -> None:
    """Restrict this worker to its own GPU. Must run before torch initialises CUDA."""
    if where.pinned_gpu is None:
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = [d.strip() for d in visible.split(",")] if visible else [str(i) for i in range(where.gpu_count)]
    os.environ["CUDA_VISIBLE_DEVICES"] = devices[where.pinned_gpu]


class ControllerHooks:
    """Registered on the xdist controller only (see plugin.pytest_configure): hands each worker
    the GPU count, and passes each finished worker's golden write counts to ``on_outcomes``."""

    def __init__(self, on_outcomes: Callable[[dict[str, int]], None]) -> None:
        self._gpu_count: int | None = None
        self._on_outcomes = on_outcomes

    def pytest_configure_node(self, node: Any) -> None:
        if self._gpu_count is None:
            self._gpu_count = _count_gpus()
        node.workerinput[GPU_COUNT_KEY] = self._gpu_count

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        outcomes = getattr(node, "workeroutput", {}).get(OUTCOMES_KEY)
        if outcomes:
            self._on_outcomes(outcomes)


def _count_gpus() -> int:
    import torch  # the controller renders nothing; counting does not create a CUDA context

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
