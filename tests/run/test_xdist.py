"""pytest-xdist: worker placement on GPUs, and step-time limits refused on a shared device."""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable
from pathlib import Path

import execnet
import pytest
from run_support import XdistCheck

from quant_guard.run.xdist_support import (
    GPU_COUNT_KEY,
    GPU_DEVICE_KEY,
    ControllerHooks,
    PinningError,
    Placement,
    check_pinned,
    pin_gpu,
)


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


@pytest.mark.slow
def test_two_workers_on_the_cpu_refuse_step_time_limits_but_check_images(xdist_check: XdistCheck) -> None:
    """Without a step-time limit, two workers on the CPU check images (red-circle seeds 0 and 1
    pass); with one, the same tests fail, refused."""
    passing = ["tiny-red-circle-s0", "tiny-red-circle-s1"]
    xdist_check.parallel.assert_outcomes(passed=3, failed=1)  # the strict case fails on its PSNR
    checked = {r["id"]: r for r in xdist_check.results("xdist")["results"]}
    assert [checked[i]["verdict"] for i in passing] == ["passed", "passed"]
    refused = xdist_check.refused
    refused.assert_outcomes(failed=2)
    refused.stdout.fnmatch_lines(["*step-time limit refused: 2 xdist workers share the CPU*"])
    records = xdist_check.results("refused")["results"]
    assert [r["id"] for r in records] == passing
    assert all(r["verdict"] == "error" and "step-time limit refused" in r["reason"] for r in records), records


@pytest.mark.slow
def test_update_golden_under_xdist_gives_each_golden_one_worker(
        pytester: pytest.Pytester, qg_project: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two schemes per golden, two goldens, two workers: every test of one golden runs on the
    worker that owns it (--dist loadgroup), so each golden is rendered and written once."""
    import re

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    qg_project(seeds="[0, 1]", steps=2, checkpoint_extra='schemes = ["float8_e4m3fn", "torchao_int8_w8a16"]')
    result = pytester.runpytest_subprocess("-n", "2", "-v", "--update-golden", "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    owners: dict[str, set[str]] = {}
    for line in result.outlines:
        found = re.search(r"\[(gw\d)\].* PASSED .*test_visual\[tiny-\w+-red-circle-(s\d)\]", line)
        if found:
            owners.setdefault(found.group(2), set()).add(found.group(1))
    assert set(owners) == {"s0", "s1"} and all(len(w) == 1 for w in owners.values()), result.outlines
    result.stdout.fnmatch_lines(["*quant_guard: goldens 2 created, 0 updated, 0 unchanged*"])


def test_shards_partition_the_suite(pytester: pytest.Pytester, qg_project: Callable[..., Path]) -> None:
    qg_project(seeds="[0, 1, 2, 3, 4]")
    seen: list[str] = []
    for index in (1, 2, 3):
        result = pytester.runpytest("--collect-only", "-q", "--qg-shard", f"{index}/3")
        seen += [line for line in result.outlines if "::test_visual[" in line]
    assert sorted(seen) == sorted(f"test_visual.py::test_visual[tiny-red-circle-s{s}]" for s in range(5))
    bad = pytester.runpytest("--qg-shard", "4/3")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR


# ---- pinning before anything touches CUDA ---------------------------------------------------------

def test_controller_starts_each_local_worker_with_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,6")
    hooks = ControllerHooks(lambda outcomes: None, count_gpus=lambda: 3)
    specs = [execnet.XSpec(f"id=gw{i}//popen") for i in range(3)]
    hooks.pytest_xdist_setupnodes(config=None, specs=specs)  # type: ignore[arg-type]
    assert [spec.env["CUDA_VISIBLE_DEVICES"] for spec in specs] == ["2", "3", "6"]
    node = types.SimpleNamespace(workerinput={"workerid": "gw1"})
    hooks.pytest_configure_node(node)
    assert node.workerinput[GPU_COUNT_KEY] == 3 and node.workerinput[GPU_DEVICE_KEY] == "3"

    too_many = [execnet.XSpec(f"id=gw{i}//popen") for i in range(4)]
    ControllerHooks(lambda outcomes: None, count_gpus=lambda: 3).pytest_xdist_setupnodes(
        config=None, specs=too_many)  # type: ignore[arg-type]
    assert all("CUDA_VISIBLE_DEVICES" not in spec.env for spec in too_many)  # 4 workers, 3 GPUs: shared


def _fake_torch(initialized: bool, count: int) -> types.ModuleType:
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(is_initialized=lambda: initialized,  # type: ignore[attr-defined]
                                       device_count=lambda: count)
    return torch


@pytest.mark.parametrize("torch_state, refused", [
    (None, False),  # torch not imported: CUDA cannot be initialised yet
    ((False, 4), False),  # imported, CUDA not initialised: the pinned variable will apply
    ((True, 1), False),  # initialised after the pinning
    ((True, 4), True),  # initialised before it: every device visible
])
def test_worker_refuses_when_the_pinning_did_not_take(monkeypatch: pytest.MonkeyPatch,
                                                      torch_state: tuple[bool, int] | None, refused: bool) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    if torch_state is None:
        monkeypatch.delitem(sys.modules, "torch", raising=False)
    else:
        monkeypatch.setitem(sys.modules, "torch", _fake_torch(*torch_state))
    where = Placement(1, 2, gpu_count=4, gpu_device="1")
    if refused:
        with pytest.raises(PinningError, match="xdist worker gw1 should run on GPU 1 alone, but CUDA was "
                                               "initialised before the pinning and this process sees 4 GPUs"):
            check_pinned(where, "gw1")
    else:
        check_pinned(where, "gw1")
    check_pinned(Placement(0, 2, gpu_count=1), "gw0")  # not pinned (GPUs shared): nothing to check


# A stand-in for torch on a machine with two GPUs, installed by the inner project's conftest: CUDA
# "initialises" while the conftest is imported, with the devices visible at that moment; with
# FAKE_CUDA_BEFORE_PIN=1 it models an initialisation that happened before any pinning.
FAKE_CUDA_CONFTEST = """
import os, sys, types

visible = None if os.environ.get("FAKE_CUDA_BEFORE_PIN") else os.environ.get("CUDA_VISIBLE_DEVICES")
count = len(visible.split(",")) if visible else 2
torch = types.ModuleType("torch")
torch.cuda = types.SimpleNamespace(is_available=lambda: True, is_initialized=lambda: True,
                                   device_count=lambda: count)
sys.modules["torch"] = torch
"""

PINNED_TEST = """
import os, sys

def test_pinned_before_the_conftest_ran():
    worker = os.environ["PYTEST_XDIST_WORKER"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == {"gw0": "0", "gw1": "1"}[worker]
    assert sys.modules["torch"].cuda.device_count() == 1
"""


@pytest.mark.slow
def test_workers_are_pinned_before_a_conftest_touches_cuda(pytester: pytest.Pytester,
                                                            qg_project: Callable[..., Path],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    qg_project()
    pytester.makeconftest(FAKE_CUDA_CONFTEST)
    pytester.makepyfile(test_pinned=PINNED_TEST)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("FAKE_CUDA_BEFORE_PIN", raising=False)
    pytester.runpytest_subprocess("-n", "2", "--dist", "each", "test_pinned.py").assert_outcomes(passed=2)

    monkeypatch.setenv("FAKE_CUDA_BEFORE_PIN", "1")
    refused = pytester.runpytest_subprocess("-n", "2", "test_pinned.py")
    assert refused.ret != 0
    refused.stdout.fnmatch_lines(["*xdist worker gw* should run on GPU * alone, but CUDA was initialised before "
                                  "the pinning and this process sees 2 GPUs*"])
