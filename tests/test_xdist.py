"""pytest-xdist: worker placement on GPUs, and step-time limits refused on a shared device."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from quant_guard.xdist_support import Placement, pin_gpu


def test_placement_pins_one_gpu_per_worker_when_there_are_enough() -> None:
    assert Placement(1, 2, gpu_count=2).pinned_gpu == 1
    assert Placement(1, 2, gpu_count=2).shares("cuda") is False
    assert Placement(1, 3, gpu_count=2).pinned_gpu is None
    assert Placement(1, 3, gpu_count=2).shares("cuda") is True
    assert Placement(0, 2, gpu_count=4).shares("cpu") is True  # all workers share the CPU
    assert Placement().shares("cpu") is False  # no xdist: nothing shared


def test_pin_gpu_respects_an_existing_visible_device_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    pin_gpu(Placement(worker_index=1, worker_count=3, gpu_count=3))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    pin_gpu(Placement(worker_index=0, worker_count=2, gpu_count=1))  # too few GPUs: leave it alone
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_two_workers_on_the_cpu_refuse_step_time_limits_but_check_images(
        pytester: pytest.Pytester, qg_project: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two workers on two cores: no oversubscription
    qg_project(seeds="[0, 1]")
    pytester.runpytest("--update-golden").assert_outcomes(passed=2)
    pytester.runpytest_subprocess("-n", "2").assert_outcomes(passed=2)
    refused = pytester.runpytest_subprocess("-n", "2", "--qg-max-step-time", "10 min")
    refused.assert_outcomes(failed=2)
    refused.stdout.fnmatch_lines(["*step-time limit refused: 2 xdist workers share the CPU*"])


def test_shards_partition_the_suite(pytester: pytest.Pytester, qg_project: Callable[..., Path]) -> None:
    qg_project(seeds="[0, 1, 2, 3, 4]")
    seen: list[str] = []
    for index in (1, 2, 3):
        result = pytester.runpytest("--collect-only", "-q", "--qg-shard", f"{index}/3")
        seen += [line for line in result.outlines if "::test_visual[" in line]
    assert sorted(seen) == sorted(f"test_visual.py::test_visual[tiny-red-circle-s{s}]" for s in range(5))
    bad = pytester.runpytest("--qg-shard", "4/3")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
