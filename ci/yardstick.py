"""How fast this machine is, in two numbers printed by .ci/run beside its wall times.

The suite's minutes depend on the machine as much as on the tests: the same commit's tests took
520 s on one 2-core CI machine and 848 s on another (issue 33). These two figures let a later
reader put two CI times side by side:

- python: a pure-Python loop (pytest, the gate's bookkeeping, DiffSynth's model building);
- torch: 3x3 convolutions on 64 channels, 2 torch threads (the tiny renders and LPIPS).

Each is the least wall time of 5 runs. Usage: python ci/yardstick.py
"""

from __future__ import annotations

import time
from collections.abc import Callable


def least_seconds(work: Callable[[], object], runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    torch.set_num_threads(2)
    image, weight = torch.randn(1, 64, 256, 256), torch.randn(64, 64, 3, 3)
    with torch.no_grad():
        conv_s = least_seconds(lambda: [F.conv2d(image, weight, padding=1) for _ in range(4)])
    python_s = least_seconds(lambda: sum(i * i for i in range(2_000_000)))
    print(f"ci: machine yardstick: python {python_s:.2f} s, torch {conv_s:.2f} s (least of 5; lower is faster)")


if __name__ == "__main__":
    main()
