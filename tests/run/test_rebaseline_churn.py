"""Re-baselining a scheme matrix without churn: an expected-metrics file stays byte for byte when
a new measurement is within its tolerance (another machine's kernels, another thread count), a
golden restored to the image its sidecar records keeps every scheme's expected metrics, and a
golden that really changes prints a command covering every scheme and lists what it dropped."""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from helpers import install_goldens, tree_digest

from quant_guard.config.thresholds import ExpectedSettings
from quant_guard.judge.checks import expected_moved

# The two quantized schemes whose expected files churned across machines (issue 24): NF4 moves most.
SCHEMES = 'schemes = ["bitsandbytes_nf4", "torchao_int8_w8a8"]'
NF4, INT8 = "tiny-bitsandbytes_nf4-red-circle-s0", "tiny-torchao_int8_w8a8-red-circle-s0"
FOLDER = Path("golden") / "tiny"
EVERY_FILE = ["tiny/red-circle-s0.bitsandbytes_nf4.expected.yml", "tiny/red-circle-s0.json",
              "tiny/red-circle-s0.png", "tiny/red-circle-s0.torchao_int8_w8a8.expected.yml"]


def _expected(root: Path, scheme: str) -> Path:
    return root / FOLDER / f"red-circle-s0.{scheme}.expected.yml"


# ---- the tolerance rule -------------------------------------------------------------------

RECORDED = {"lpips": 0.003056, "ssim": 0.986762, "psnr": 35.9682, "sharpness": 0.84}


def test_a_move_within_the_expected_tolerance_either_way_is_no_move() -> None:
    # NF4 on another CPU (issue 24): LPIPS 0.003056 -> 0.003207, PSNR 35.97 -> 35.74 dB
    other_cpu = {**RECORDED, "lpips": 0.003207, "psnr": 35.74}
    assert expected_moved(other_cpu, RECORDED, ExpectedSettings()) == []
    assert expected_moved(RECORDED, other_cpu, ExpectedSettings()) == []


@pytest.mark.parametrize(("name", "value", "line"), [
    ("lpips", 0.0095, "LPIPS 0.0031 -> 0.0095"),  # worse than expected * 1.1 + 0.005
    ("psnr", 37.2, "PSNR 35.97 -> 37.20"),  # better by more than 1 dB: keeping it would loosen the check
    ("sharpness", 0.78, "sharpness 0.8400 -> 0.7800"),  # a scorecard number, margin 0.05
    ("colour_hue_shift", 0.5, "hue shift absent -> 0.5000"),  # not recorded before
    ("psnr", math.inf, "PSNR 35.97 -> inf"),
])
def test_a_move_beyond_the_tolerance_or_a_new_number_is_named(name: str, value: float, line: str) -> None:
    assert expected_moved({**RECORDED, name: value}, RECORDED, ExpectedSettings()) == [line]


# ---- re-baselines through pytest ------------------------------------------------------------

@pytest.mark.slow
def test_rebaselines_on_other_kernels_and_thread_counts_change_no_file(
        pytester: pytest.Pytester, qg_project: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24: the first re-baseline uses this process's threads and the CPU's best kernels; the
    second one thread and ATen's portable kernels (what another CPU's kernel choice does to the
    renders: NF4's LPIPS moves by about 1e-4, the bf16 golden by PSNR ~54 dB, within the drift
    tolerance). The second changes no file: the golden is within drift, every scheme's expected
    numbers within their tolerance."""
    root = qg_project(checkpoint_extra=SCHEMES)
    pytester.runpytest("--update-golden").assert_outcomes(passed=2)
    before = tree_digest(root / "golden")
    assert sorted(before) == EVERY_FILE

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")  # read once, when torch is imported
    second = pytester.runpytest_subprocess("--update-golden", "-p", "no:cacheprovider")
    second.assert_outcomes(passed=2)
    assert tree_digest(root / "golden") == before
    second.stdout.fnmatch_lines(["quant_guard: goldens 0 created, 0 updated, 1 unchanged*",
                                 "quant_guard: expected metrics 0 recorded, 2 unchanged (within tolerance)"])


def _baselined(qg_project: Callable[..., Path], baseline: Callable[..., Path]) -> Path:
    """The project with both schemes, its golden and expected files made once per session (what
    ``--update-golden`` writes: the slow test above runs that update itself)."""
    root = qg_project(checkpoint_extra=SCHEMES)
    install_goldens(baseline(checkpoint_extra=SCHEMES), root)
    assert sorted(tree_digest(root / "golden")) == EVERY_FILE
    return root


def test_an_expected_file_is_rewritten_only_beyond_its_tolerance(
        pytester: pytest.Pytester, qg_project: Callable[..., Path], baseline: Callable[..., Path]) -> None:
    root = _baselined(qg_project, baseline)
    nf4 = _expected(root, "bitsandbytes_nf4")
    data = yaml.safe_load(nf4.read_text())
    # what another machine recorded: within the tolerance of this one's numbers
    nf4.write_text(yaml.safe_dump({**data, "lpips": data["lpips"] + 0.001, "psnr": data["psnr"] - 0.5}))
    near = nf4.read_bytes()
    kept = pytester.runpytest("--update-golden")
    kept.assert_outcomes(passed=2)
    kept.stdout.fnmatch_lines(["quant_guard: goldens 0 created, 0 updated, 1 unchanged",
                               "quant_guard: expected metrics 0 recorded, 2 unchanged (within tolerance)"])
    assert nf4.read_bytes() == near

    nf4.write_text(yaml.safe_dump({**data, "lpips": data["lpips"] + 0.05}))  # far off: re-recorded, and said
    rewritten = pytester.runpytest("--update-golden")
    rewritten.stdout.fnmatch_lines(["quant_guard: expected metrics 1 recorded, 1 unchanged (within tolerance)",
                                    f"  rewrote {FOLDER}/red-circle-s0.bitsandbytes_nf4.expected.yml "
                                    "(LPIPS 0.05* -> 0.00*)"])
    assert yaml.safe_load(nf4.read_text()) == data


def _printed_command(result: pytest.RunResult, verb: str) -> list[str]:
    line = next(line for line in result.outlines if f"{verb} with: " in line)
    return shlex.split(line.split(f"{verb} with: ", 1)[1].strip())


def test_restoring_a_truncated_golden_keeps_every_schemes_expected_file(
        pytester: pytest.Pytester, qg_project: Callable[..., Path], baseline: Callable[..., Path]) -> None:
    """Issue 26: the command printed for a truncated golden covers both schemes; running it writes
    the PNG back with the bytes its sidecar records, so neither scheme's expected file is dropped."""
    root = _baselined(qg_project, baseline)
    expected = {p: p.read_bytes() for p in (_expected(root, "bitsandbytes_nf4"), _expected(root, "torchao_int8_w8a8"))}
    png = root / FOLDER / "red-circle-s0.png"
    png.write_bytes(png.read_bytes()[:200])

    damaged = pytester.runpytest()
    damaged.assert_outcomes(failed=2)
    command = _printed_command(damaged, "Re-create it")
    assert command[:2] == ["pytest", "--update-golden"]
    assert sorted(command[2:]) == [f"test_visual.py::test_visual[{NF4}]", f"test_visual.py::test_visual[{INT8}]"]

    restored = pytester.runpytest(*command[1:3])  # the float8-only way of issue 26: just the first test
    restored.assert_outcomes(passed=1)
    restored.stdout.fnmatch_lines(["quant_guard: goldens 0 created, 1 updated, 0 unchanged",
                                   "quant_guard: expected metrics 0 recorded, 1 unchanged (within tolerance)"])
    assert "dropped" not in restored.stdout.str()
    assert {p: p.read_bytes() for p in expected} == expected
    pytester.runpytest().assert_outcomes(passed=2)


def test_a_changed_golden_lists_the_expected_files_it_dropped(
        pytester: pytest.Pytester, qg_project: Callable[..., Path], baseline: Callable[..., Path]) -> None:
    """A golden that really changes (other steps) drops every scheme's expected metrics: a run of
    one scheme names the other's file as dropped, and the printed command re-baselines both."""
    root = _baselined(qg_project, baseline)
    qg_project(checkpoint_extra=SCHEMES, steps=5)
    stale = pytester.runpytest()
    stale.assert_outcomes(failed=2)
    command = _printed_command(stale, "Re-baseline")
    assert sorted(command[2:]) == [f"test_visual.py::test_visual[{NF4}]", f"test_visual.py::test_visual[{INT8}]"]

    one = pytester.runpytest("--update-golden", f"test_visual.py::test_visual[{NF4}]")
    one.assert_outcomes(passed=1)
    one.stdout.fnmatch_lines([
        "quant_guard: goldens 0 created, 1 updated, 0 unchanged",
        "quant_guard: expected metrics 1 recorded, 0 unchanged (within tolerance)",
        f"  rewrote {FOLDER}/red-circle-s0.bitsandbytes_nf4.expected.yml (its golden changed; re-recorded*",
        f"  dropped {FOLDER}/red-circle-s0.torchao_int8_w8a8.expected.yml (its golden changed; this run did not*",
    ])
    assert not _expected(root, "torchao_int8_w8a8").exists()

    both = pytester.runpytest(*command[1:])
    both.assert_outcomes(passed=2)
    both.stdout.fnmatch_lines(["quant_guard: expected metrics 1 recorded, 1 unchanged (within tolerance)"])
    assert _expected(root, "torchao_int8_w8a8").exists()


def test_the_command_outside_pytest_selects_every_scheme_of_the_case_and_seed() -> None:
    """The sensitivity sweep's re-baseline hint (no pytest item): a -k expression of every scheme's id."""
    import tomllib

    from helpers import project_toml
    from quant_guard.run.cases import expand_cases
    from quant_guard.config.project import parse_config
    from quant_guard.run.case_plan import update_command

    text = project_toml(seeds="[0, 1]", checkpoint_extra=SCHEMES)
    cases = expand_cases(parse_config(tomllib.loads(text)["tool"]["quant_guard"], file=Path("pyproject.toml")))
    int8_s0 = next(vc for vc in cases if vc.id == INT8)
    assert update_command(int8_s0, None) == f'pytest --update-golden -k "{INT8} or {NF4}"'
