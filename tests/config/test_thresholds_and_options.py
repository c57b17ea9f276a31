"""Thresholds at every level and their precedence, the expected mode, the command line options,
the gpu marker and configuration errors, all through pytest itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from quant_guard.run.cases import expand_cases
from quant_guard.config.project import parse_config
from quant_guard.config.thresholds import EMBEDDED_THRESHOLDS, Thresholds

# The honest float8 candidate of the tiny checkpoint is far above PSNR 30 dB and far below
# 200 dB, so these two limits decide pass/fail deterministically on any machine.
IMPOSSIBLE_PSNR = 150.0
EASY_PSNR = 5.0


def _psnr_fail_line(limit: float, source: str = "threshold") -> str:
    return f"*PSNR * dB < min {limit:.2f} dB ({source}) FAIL*"


def test_defaults_pass(pytester: pytest.Pytester, baselined: Callable[..., Path]) -> None:
    pytester.runpytest().assert_outcomes(passed=1)


@pytest.mark.parametrize("where", ["checkpoint", "case"])
def test_config_thresholds_apply(pytester: pytest.Pytester, baselined: Callable[..., Path], where: str) -> None:
    table = f"thresholds = {{ psnr = {IMPOSSIBLE_PSNR} }}"
    baselined(**({"checkpoint_extra": table} if where == "checkpoint" else {"extra_case": table}))
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([_psnr_fail_line(IMPOSSIBLE_PSNR)])


def _checkpoint_thresholds(tmp_path: Path, checkpoint: dict[str, object], root: dict[str, object] | None = None) -> Thresholds:
    config = parse_config({**(root or {}), "checkpoints": [{"id": "tiny", "device": "cpu", **checkpoint}],
                           "cases": [{"id": "case", "prompt": "a red circle"}]}, file=tmp_path / "qg.toml")
    return expand_cases(config)[0].configured_thresholds(config.thresholds)


def test_embedded_tiny_brings_its_measured_thresholds(tmp_path: Path) -> None:
    measured = EMBEDDED_THRESHOLDS["tiny"]["float8_e4m3fn"].apply(Thresholds.DEFAULT)
    # stricter than the package defaults on every metric (benchmarks/tiny_quality.py)
    assert measured.lpips_max < Thresholds.DEFAULT.lpips_max
    assert measured.ssim_min > Thresholds.DEFAULT.ssim_min and measured.psnr_min > Thresholds.DEFAULT.psnr_min
    assert _checkpoint_thresholds(tmp_path, {"embedded": "tiny"}) == measured
    # the global table is less specific than the checkpoint: it does not loosen the tiny's limits
    assert _checkpoint_thresholds(tmp_path, {"embedded": "tiny"}, {"thresholds": {"lpips": 0.3}}) == measured
    # the checkpoint's own table wins, metric by metric
    own = _checkpoint_thresholds(tmp_path, {"embedded": "tiny", "thresholds": {"psnr": 20.0}})
    assert own == replace(measured, psnr_min=20.0)


def test_checkpoint_given_by_files_gets_the_package_defaults(tmp_path: Path) -> None:
    files = {name: str(tmp_path / f"{name}.safetensors")
             for name in ("dit", "text_encoder_clip", "text_encoder_t5", "vae")}
    files |= {name: str(tmp_path / name) for name in ("tokenizer_clip", "tokenizer_t5")}
    assert _checkpoint_thresholds(tmp_path, {"components": files}) == Thresholds.DEFAULT


def test_case_overrides_checkpoint(pytester: pytest.Pytester, baselined: Callable[..., Path]) -> None:
    baselined(checkpoint_extra=f"thresholds = {{ psnr = {IMPOSSIBLE_PSNR} }}",
              extra_case=f"thresholds = {{ psnr = {EASY_PSNR} }}")
    pytester.runpytest().assert_outcomes(passed=1)


def test_marker_overrides_config_and_cli_overrides_marker(pytester: pytest.Pytester,
                                                          baselined: Callable[..., Path]) -> None:
    pytester.makepyfile(test_visual=f"""
        import pytest

        @pytest.mark.qg_thresholds(psnr={IMPOSSIBLE_PSNR})
        def test_visual(qg_case, qg_gate):
            qg_gate.check(qg_case)
        """)
    marked = pytester.runpytest()
    marked.assert_outcomes(failed=1)
    marked.stdout.fnmatch_lines([_psnr_fail_line(IMPOSSIBLE_PSNR)])
    pytester.runpytest("--qg-psnr", str(EASY_PSNR)).assert_outcomes(passed=1)


def test_cli_lpips_limit(pytester: pytest.Pytester, baselined: Callable[..., Path]) -> None:
    result = pytester.runpytest("--qg-lpips", "0")
    # LPIPS of float8 vs bf16 is small but not exactly zero
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*LPIPS * > max 0.0000 (threshold) FAIL*"])


def test_bad_marker_keyword_is_a_usage_error(pytester: pytest.Pytester, baselined: Callable[..., Path]) -> None:
    pytester.makepyfile(test_visual="""
        import pytest

        @pytest.mark.qg_thresholds(lpipz=0.1)
        def test_visual(qg_case, qg_gate):
            qg_gate.check(qg_case)
        """)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*qg_thresholds takes only keywords lpips, ssim, psnr*unknown [[]'lpipz'[]]*"])


def test_expected_mode_holds_the_candidate_to_recorded_metrics(pytester: pytest.Pytester,
                                                               baselined: Callable[..., Path]) -> None:
    expected = pytester.path / "golden" / "tiny" / "red-circle-s0.expected.yml"
    # pretend the last baseline's candidate was nearly perfect: today's honest float8 is "worse"
    expected.write_text("lpips: 0.0\npsnr: 120.0\nssim: 1.0\n")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    # lpips limit = 0.0 * 1.1 + 0.005 margin; psnr limit = 120 - 1 dB margin
    result.stdout.fnmatch_lines(["*LPIPS * max 0.0050 (expected)*", _psnr_fail_line(119.0, "expected")])
    pytester.runpytest("--qg-no-expected").assert_outcomes(passed=1)


def test_help_lists_the_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines([
        "quant_guard: visual regression gate for quantized diffusion checkpoints:",
        "*--update-golden*", "*--qg-config=PATH*", "*--qg-golden-dir=DIR*", "*--qg-report-dir=DIR*",
        "*--qg-lpips=MAX*", "*--qg-ssim=MIN*", "*--qg-psnr=MIN_DB*", "*--qg-device=*", "*--qg-no-expected*",
        "*--qg-force*", "*--qg-reference=*",
    ])


def test_the_readme_names_every_option(pytester: pytest.Pytester) -> None:
    """Every option in the "quant_guard" --help group is in the README's Options section."""
    import re

    help_text = pytester.runpytest("--help").stdout.str()
    group = help_text.split("quant_guard: visual regression gate", 1)[1].split("\n\n", 1)[0]
    options = set(re.findall(r"^\s+(--[a-z-]+)", group, flags=re.M))
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Options", 1)[1].split("\n## ", 1)[0]
    assert {"--update-golden", "--qg-progress-interval", "--qg-shard"} <= options
    assert sorted(o for o in options if f"`{o}`" not in section) == []


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.gpu: needs a CUDA device*",
                                 "@pytest.mark.qg_thresholds(lpips=None, ssim=None, psnr=None, colour_delta_e_p95=None, *"])


def test_bad_cli_value_is_rejected(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--qg-ssim", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--qg-ssim must be between -1.0 and 1.0, got 2.0*"])


def test_config_error_names_file_and_key(pytester: pytest.Pytester, qg_project: Callable[..., Path]) -> None:
    qg_project(extra_case="seedz = [1]")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pyproject.toml: tool.quant_guard.cases[[]0[]].seedz: unknown key*"])


def test_qg_config_option_reads_another_file(pytester: pytest.Pytester, qg_project: Callable[..., Path]) -> None:
    qg_project()
    other = pytester.path / "other.toml"
    other.write_text((pytester.path / "pyproject.toml").read_text().replace("red-circle", "other-case"))
    result = pytester.runpytest("--qg-config", str(other), "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_visual[[]tiny-other-case-s0[]]*"])
