"""What quant_guard costs on top of the work it cannot avoid.

Prints two tables:
1. the wall time of the visual suite (``pytest tests/visual`` in a subprocess) against the raw
   work for the same cases in a fresh interpreter too: importing DiffSynth, loading the float8
   pipeline and rendering each case (its in-process breakdown is printed as well). The suite runs
   twice over: with the pytest plugins a user of quant_guard gets (those of its own dependencies:
   the headline, which the README's 1.25x target refers to) and with every installed plugin,
   including those only the project's ``test`` extra brings (pytest-xdist, hypothesis);
2. the cost of the metrics per image pair at 512x512 and 1024x1024.

Run: ``.venv/bin/python benchmarks/harness_overhead.py`` (CPU; add ``--device cuda`` on a GPU).
Numbers depend on the machine: compare rows of one run, not runs of different machines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_only_plugins() -> list[str]:
    """The pytest11 entry points installed here that a user of quant_guard does not get: those of
    distributions outside quant_guard's runtime dependencies (the project's ``test`` extra brings
    pytest-xdist and hypothesis; hypothesis' terminal summary imports all of hypothesis, which
    pytest assertion-rewrites as a plugin's package: about 1 s when no bytecode is cached)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    needed, todo = set(), ["quant_guard"]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in needed:
            continue
        needed.add(name)
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):  # no extras: a plain install
                todo.append(req.name)
    return sorted({ep.name for dist in md.distributions() if canonicalize_name(dist.metadata["Name"]) not in needed
                   for ep in dist.entry_points if ep.group == "pytest11"})


def suite_wall_time(*extra: str, runs: int = 2) -> float:
    """The fastest of ``runs`` runs of ``pytest tests/visual`` (wall time, interpreter included)."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "tests/visual", "-q", "-p", "no:cacheprovider", *extra],
                              cwd=ROOT, capture_output=True, text=True)
        best = min(best, time.perf_counter() - start)
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            raise SystemExit("the visual suite failed; fix it before benchmarking")
    return best


def raw_work(device: str) -> dict[str, float]:
    """The unavoidable work, timed in this (fresh) process: one pipeline, each scheme's DiT loaded
    into it in turn (what the session does), every case rendered by its scheme."""
    t0 = time.perf_counter()
    from quant_guard.run.cases import expand_cases
    from quant_guard.model.checkpoints import resolve_checkpoint
    from quant_guard.config.project import load_config
    from quant_guard.model.pipelines import build_pipeline, default_plan, swap_dit
    from quant_guard.model.render import RenderRequest, render

    import diffsynth.pipelines.flux_image  # noqa: F401
    t_import = time.perf_counter() - t0

    config = load_config(ROOT / "pyproject.toml")
    cases = [vc for vc in expand_cases(config) if "gpu" not in vc.checkpoint.marks]
    resolved = resolve_checkpoint(cases[0].checkpoint)
    t_load = t_render = 0.0
    pipe, loaded = None, None
    for vc in cases:  # scheme-major, as the suite runs them
        t0 = time.perf_counter()
        if pipe is None:
            pipe = build_pipeline(resolved, vc.scheme, device)
        elif vc.scheme != loaded:
            swap_dit(pipe, resolved, vc.scheme, default_plan(vc.scheme, device))
        loaded = vc.scheme
        t_load += time.perf_counter() - t0
        request = RenderRequest(vc.case.prompt, vc.seed, vc.steps, vc.width, vc.height, vc.guidance,
                                resolved.t5_sequence_length)
        t0 = time.perf_counter()
        render(pipe, request)
        t_render += time.perf_counter() - t0
    schemes = len({vc.scheme.id for vc in cases})
    return {"import torch+diffsynth": t_import, f"load the pipeline, {schemes} scheme DiTs": t_load,
            f"render {len(cases)} cases": t_render, "cases": float(len(cases))}


def raw_wall_time(device: str, runs: int = 2) -> tuple[dict[str, float], float]:
    """The raw work in a fresh interpreter, like the suite: its own breakdown and the process's
    wall time. The wall time is the fair comparison: a process that imported torch and DiffSynth
    spends over a second more at exit tearing them down, which the suite pays and an in-process
    timer never sees."""
    best: tuple[dict[str, float], float] = ({}, float("inf"))
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--raw-only", "--device", device], cwd=ROOT,
                              capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
        if wall < best[1]:
            best = (json.loads(proc.stdout.strip().splitlines()[-1]), wall)
    return best


def metric_costs() -> list[tuple[int, float, float, float]]:
    import numpy as np

    from quant_guard.judge.metrics import compare_images, lpips_distance, psnr, ssim

    rng = np.random.default_rng(0)
    rows = []
    for size in (512, 1024):
        a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        b = np.clip(a.astype(int) + rng.integers(-8, 9, a.shape), 0, 255).astype(np.uint8)
        compare_images(a, b)  # warm-up: model build, allocations
        timings = []
        for fn in (lpips_distance, ssim, psnr, compare_images):
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn(a, b)
                runs.append(time.perf_counter() - t0)
            timings.append(statistics.median(runs))
        rows.append((size, timings[0], timings[1], timings[3]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--raw-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.raw_only:  # the child process of raw_wall_time
        print(json.dumps(raw_work(args.device)))
        return
    test_only = test_only_plugins()
    suite = suite_wall_time()
    without = suite_wall_time(*(arg for name in test_only for arg in ("-p", f"no:{name}")))
    raw, raw_total = raw_wall_time(args.device)
    print("\n1. visual suite vs raw DiffSynth work (same cases, each scheme's DiT; fastest of 2 runs each)")
    for name, value in raw.items():
        if name != "cases":
            print(f"   {'raw, in the process: ' + name:<66} {value:8.2f} s")
    print(f"   {'raw, in the process, total':<66} {sum(v for k, v in raw.items() if k != 'cases'):8.2f} s")
    print(f"   {'raw, the whole process (interpreter start and exit included)':<66} {raw_total:8.2f} s")
    for label, wall in (("pytest tests/visual, a user's install (the 1.25x target)", without),
                        ("pytest tests/visual, every plugin of the test extra too", suite)):
        print(f"   {label:<66} {wall:8.2f} s  = {wall / raw_total:.2f} x raw, "
              f"overhead {(wall - raw_total) / raw['cases']:.2f} s per case")
    print(f"   (a user's install: without {', '.join(test_only) or 'nothing'}"
          + ("; PYTHONDONTWRITEBYTECODE is set, so pytest assertion-rewrites every plugin's modules on every run"
             if sys.dont_write_bytecode else "") + ")")
    print("\n2. metrics per image pair (median of 3, after one warm-up)")
    print(f"   {'size':>6} {'LPIPS':>9} {'SSIM':>9} {'all three':>10}")
    for size, lp, ss, total in metric_costs():
        print(f"   {size:>6} {lp:8.3f}s {ss:8.3f}s {total:9.3f}s")


if __name__ == "__main__":
    main()
