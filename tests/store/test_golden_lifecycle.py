"""The golden lifecycle driven through pytest itself: missing -> fail, --update-golden -> pass,
match -> pass, changed -> fail, re-update -> pass; stale goldens; the update counts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from quant_guard.store.golden import GoldenKey, GoldenStore

KEY = GoldenKey("tiny", "red-circle", 0)


def test_missing_golden_fails_with_the_command_that_creates_it(pytester: pytest.Pytester,
                                                               qg_project: Callable[..., Path]) -> None:
    qg_project(seeds="[0, 1, 2, 3]")
    result = pytester.runpytest()
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(["*tiny-red-circle-s0: no golden image *red-circle-s0.png. Create it with: pytest "
                                 "--update-golden 'test_visual.py::test_visual[[]tiny-red-circle-s0[]]'"])
    # the summary says it once for the run, not once per test
    result.stdout.fnmatch_lines(["*= quant_guard failures =*",
                                 "4 test(s) have no golden yet (tiny-red-circle-s0, tiny-red-circle-s1, "
                                 "tiny-red-circle-s2 and 1 more): make them with `pytest --update-golden` and the "
                                 "same selection, then commit the golden folder"])
    assert not [line for line in result.outlines if line.startswith("tiny-red-circle-s") and "no-golden" in line]


def test_update_then_check_passes_and_counts(pytester: pytest.Pytester, qg_project: Callable[..., Path]) -> None:
    root = qg_project(seeds="[0, 1]")
    first = pytester.runpytest("--update-golden")
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(["quant_guard: goldens 2 created, 0 updated, 0 unchanged"])
    for seed in (0, 1):
        stem = root / "golden" / "tiny" / f"red-circle-s{seed}"
        meta = json.loads(stem.with_suffix(".json").read_text())
        assert meta["seed"] == seed and meta["steps"] == 4 and meta["width"] == 64
        assert meta["environment"]["torch"] and meta["environment"]["diffsynth"]
        assert set(meta["checkpoint_hashes"]) >= {"dit", "vae", "text_encoder_clip", "text_encoder_t5"}
        assert stem.with_suffix(".expected.yml").exists()
    pytester.runpytest().assert_outcomes(passed=2)
    again = pytester.runpytest("--update-golden")
    again.assert_outcomes(passed=2)
    again.stdout.fnmatch_lines(["quant_guard: goldens 0 created, 0 updated, 2 unchanged"])


def test_changed_golden_fails_as_unknown_change_then_update_repairs(pytester: pytest.Pytester,
                                                                    qg_project: Callable[..., Path]) -> None:
    # its own update, not the session's baseline: "unknown reason" needs the golden's recorded
    # environment to be this moment's (a test before may leave CUBLAS_WORKSPACE_CONFIG set)
    root = qg_project()
    pytester.runpytest("--update-golden").assert_outcomes(passed=1)
    store = GoldenStore(root / "golden")
    golden = store.load(KEY, width=64, height=64)
    # a consistent golden (sidecar matches) whose pixels differ: what a changed reference looks
    # like; the candidate still matches the bf16 render of this run, but nothing recorded changed,
    # so it is not blamed on the environment
    changed = (255 - golden.image).astype(np.uint8)
    store.write(KEY, changed, {k: v for k, v in golden.metadata.items() if k != "image_sha256"}, None)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*the bf16 render changed for an unknown reason: the golden no longer reproduces here*",
        "*candidate vs golden * FAIL (LPIPS > 0.008 threshold; SSIM < 0.975 threshold; PSNR < 34 dB threshold; "
        "ΔE p95 > 3 threshold)",
        "*bf16 now vs golden (drift) * FAIL (LPIPS > 0.001 drift tolerance; PSNR < 50 dB drift tolerance)",
        "*candidate vs bf16 now * ok",
        "*pytest --update-golden 'test_visual.py::test_visual[[]tiny-red-circle-s0[]]'*",
        "*golden:*golden/tiny/red-circle-s0.png*",
        "*candidate:*qg-report/tiny/red-circle-s0/candidate.png*",
        "*reference:*qg-report/tiny/red-circle-s0/reference.png*",
        "*tiny-red-circle-s0: image-failed: *",
    ])
    repaired = pytester.runpytest("--update-golden")
    repaired.assert_outcomes(passed=1)
    repaired.stdout.fnmatch_lines(["quant_guard: goldens 0 created, 1 updated, 0 unchanged"])
    pytester.runpytest().assert_outcomes(passed=1)


def test_stale_golden_names_the_changed_parameter(pytester: pytest.Pytester, baselined: Callable[..., Path]) -> None:
    baselined(steps=6)  # the golden's are 4
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*golden/tiny/red-circle-s0.png is stale, made with other parameters:*",
                                 "*steps: 4 -> 6*",
                                 "*Re-baseline with: pytest --update-golden "
                                 "'test_visual.py::test_visual[[]tiny-red-circle-s0[]]'"])


def test_golden_without_valid_sidecar_is_not_trusted(pytester: pytest.Pytester,
                                                     baselined: Callable[..., Path]) -> None:
    root = pytester.path
    sidecar = root / "golden" / "tiny" / "red-circle-s0.json"
    sidecar.write_text("{not json")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*golden sidecar *red-circle-s0.json is not valid JSON*"])


def test_update_never_adopts_a_failing_candidate_as_expected(pytester: pytest.Pytester,
                                                             qg_project: Callable[..., Path]) -> None:
    """--update-golden refreshes the golden (the bf16 truth) whatever the candidate does, but a
    candidate that fails its thresholds fails the run and its metrics are not recorded: no new
    expected file, and one recorded by an earlier passing update stays as it was."""
    from helpers import STRICT_CASE

    root = qg_project(extra_case=STRICT_CASE)
    strict = root / "golden" / "tiny" / "strict-s0"
    first = pytester.runpytest("--update-golden")
    first.assert_outcomes(passed=1, failed=1)
    first.stdout.fnmatch_lines([
        "*this failing candidate's metrics were not recorded as expected*",
        "quant_guard: goldens 2 created, 0 updated, 0 unchanged; expected metrics not recorded for 1 failing candidate",
    ])
    assert strict.with_suffix(".png").exists() and not strict.with_suffix(".expected.yml").exists()
    assert (root / "golden" / "tiny" / "red-circle-s0.expected.yml").exists()

    # a loose run records the strict case's metrics; a failing re-update then leaves them alone
    pytester.runpytest("--update-golden", "--qg-psnr", "0").assert_outcomes(passed=2)
    recorded = strict.with_suffix(".expected.yml").read_bytes()
    again = pytester.runpytest("--update-golden")
    again.assert_outcomes(passed=1, failed=1)
    again.stdout.fnmatch_lines(["*; expected metrics not recorded for 1 failing candidate"])
    assert strict.with_suffix(".expected.yml").read_bytes() == recorded
