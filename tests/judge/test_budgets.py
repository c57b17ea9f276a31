"""Hard limits: unit parsing into budgets, their precedence, the failure section, and that the
float8 candidate really stores the DiT in half the bytes. Limits are deliberately tight or
loose so the outcome never depends on this machine's speed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from quant_guard.judge.budgets import check_budget, step_stats
from quant_guard.config.limits import Budget, PeakCounts, StepStatistic
from quant_guard.judge.budgets import MemoryStats, RenderSummary


def _summary(times: tuple[float, ...], peak: int | None = 1000, kind: str = "cuda", *, reserved: int | None = None,
             device: int | None = None) -> RenderSummary:
    memory = MemoryStats(kind, peak, reserved_bytes=reserved, device_bytes=device)
    return RenderSummary(step_times_s=times, total_s=sum(times), memory=memory, dit_weight_bytes=0)


def test_step_stats_drop_warmup_and_pick_the_statistic() -> None:
    stats = step_stats((9.0, 1.0, 2.0, 3.0, 10.0), warmup_steps=1)
    assert stats is not None
    assert (stats.median_s, stats.max_s, stats.mean_s, stats.measured_steps) == (2.5, 10.0, 4.0, 4)
    assert step_stats((5.0,), warmup_steps=1).median_s == 5.0  # type: ignore[union-attr]  # too short to drop


def test_check_budget_against_limits() -> None:
    summary = _summary((9.0, 1.0, 2.0, 3.0), peak=900, reserved=950, device=1000)
    checks = check_budget(summary, Budget(peak_memory_bytes=999, step_time_s=2.0))
    assert [(c.name, c.passed) for c in checks] == [("peak VRAM (device used)", False), ("step time (median)", True)]
    assert checks[0].describe() == "peak VRAM (device used) 1000 B > max 999 B FAIL"
    by_max = check_budget(summary, Budget(step_time_s=2.0, statistic=StepStatistic.MAX))
    assert by_max[0].name == "step time (max)" and not by_max[0].passed
    assert check_budget(_summary((1.0,), kind="cpu-rss"), Budget(peak_memory_bytes=10**6))[0].name == "peak RSS"
    assert check_budget(summary, Budget()) == []


@pytest.mark.parametrize("counts, device, expected", [
    (PeakCounts.DEVICE, 1000, ("peak VRAM (device used)", 1000.0)),
    (PeakCounts.DEVICE, None, ("peak VRAM (reserved)", 950.0)),  # the device's figure not measured
    (PeakCounts.RESERVED, 1000, ("peak VRAM (reserved)", 950.0)),
    (PeakCounts.ALLOCATED, 1000, ("peak VRAM (allocated)", 900.0)),
])
def test_the_peak_limit_applies_to_the_figure_it_counts(counts: PeakCounts, device: int | None,
                                                        expected: tuple[str, float]) -> None:
    summary = _summary((1.0,), peak=900, reserved=950, device=device)
    (check,) = check_budget(summary, Budget(peak_memory_bytes=940, peak_counts=counts))
    assert (check.name, check.value) == expected and check.passed is (expected[1] <= 940)
    # on a CPU every choice is the process's peak RSS
    (rss,) = check_budget(_summary((1.0,), peak=900, kind="cpu-rss"), Budget(peak_memory_bytes=940, peak_counts=counts))
    assert (rss.name, rss.value) == ("peak RSS", 900.0)


def test_peak_vram_counts_is_a_validated_config_key(tmp_path: Path) -> None:
    from quant_guard.config.project import ConfigError, parse_config

    def limits(extra: dict[str, str]) -> Budget:
        raw = {"checkpoints": [{"id": "t", "embedded": "tiny", "limits": {"peak_vram": "1 GiB", **extra}}]}
        return parse_config(raw, file=tmp_path / "qg.toml").checkpoint("t").limits

    assert limits({}).peak_counts is PeakCounts.DEVICE
    assert limits({"peak_vram_counts": "allocated"}).peak_counts is PeakCounts.ALLOCATED
    with pytest.raises(ConfigError, match=r"peak_vram_counts: must be one of device, reserved, allocated, got 'vram'"):
        limits({"peak_vram_counts": "vram"})


def test_override_precedence() -> None:
    config = Budget(peak_memory_bytes=10, step_time_s=1.0)
    marker = config.override(step_time_s=2.0)
    cli = marker.override(peak_memory_bytes=5)
    assert (cli.peak_memory_bytes, cli.step_time_s) == (5, 2.0)


def test_tight_step_time_fails_with_its_own_section(pytester: pytest.Pytester,
                                                    baselined: Callable[..., Path]) -> None:
    tight = pytester.runpytest("--qg-max-step-time", "1 us")
    tight.assert_outcomes(failed=1)
    tight.stdout.fnmatch_lines(["*tiny-red-circle-s0: budget exceeded:*", "*step time (median) * > max 1.0 us FAIL*",
                                "*Captured quant_guard budget call*"])
    assert "candidate differs" not in tight.stdout.str()  # the image itself is fine
    pytester.runpytest("--qg-max-step-time", "10 min", "--qg-max-vram", "1 TiB").assert_outcomes(passed=1)


def test_budget_markers_and_config_limits(pytester: pytest.Pytester, qg_project: Callable[..., Path]) -> None:
    qg_project(checkpoint_extra='limits = { step_time = "1 ns", peak_vram = "1 TiB" }')
    pytester.runpytest("--update-golden").assert_outcomes(failed=1)  # config limit applies to updates too
    pytester.makepyfile(test_visual="""
        import pytest

        @pytest.mark.step_time_budget("10 min")
        def test_visual(qg_case, qg_gate):
            qg_gate.check(qg_case)
        """)
    pytester.runpytest().assert_outcomes(passed=1)  # the marker overrides the config
    result = pytester.runpytest("--qg-max-step-time", "1 ns")  # the command line overrides the marker
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*step time (median) * > max 1 ns FAIL*"])


def test_bad_budget_marker_is_a_usage_error(pytester: pytest.Pytester, qg_project: Callable[..., Path]) -> None:
    qg_project()
    pytester.makepyfile(test_visual="""
        import pytest

        @pytest.mark.vram_budget("10 G")
        def test_visual(qg_case, qg_gate):
            qg_gate.check(qg_case)
        """)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*vram_budget: unknown unit 'G' in memory size '10 G'*"])


def test_bad_unit_on_the_command_line(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--qg-max-vram", "10GB!")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--qg-max-vram*cannot parse memory size '10GB!'*"])


def test_a_limit_on_a_figure_that_was_not_measured_is_an_error_not_a_pass() -> None:
    from quant_guard.judge.budgets import BudgetNotMeasurable

    unmeasured = RenderSummary(step_times_s=(1.0,), total_s=1.0, dit_weight_bytes=0,
                               memory=MemoryStats("cpu-rss", None, at_start_bytes=2**30,
                                                  note="peak RSS not measured: /proc/self/clear_refs cannot be written"))
    with pytest.raises(BudgetNotMeasurable, match=r"a peak RSS limit of 1.00 GiB is set, .*clear_refs cannot be"):
        check_budget(unmeasured, Budget(peak_memory_bytes=2**30))
    assert check_budget(unmeasured, Budget(resident_memory_bytes=2**31))[0].describe().startswith("resident RSS")


def test_the_cpu_figure_is_the_process_peak_rss_of_the_render(pytester: pytest.Pytester,
                                                              baselined: Callable[..., Path]) -> None:
    """On a CPU the peak is what the host must provide for the render (hundreds of MiB with torch
    loaded), so a limit below that fails and one above passes; without the high-water-mark reset
    the figure is reported as not measured and a limit on it is an error."""
    import json

    import quant_guard.model.host_memory as host_memory

    tight = pytester.runpytest("--qg-max-vram", "100 MiB")
    tight.assert_outcomes(failed=1)
    tight.stdout.fnmatch_lines(["*peak RSS * > max 100.00 MiB FAIL*"])
    record = json.loads((pytester.path / "qg-report" / "results.json").read_text())["results"][0]
    memory = record["candidate_render"]["memory"]
    assert memory["kind"] == "cpu-rss" and memory["peak_bytes"] >= memory["at_start_bytes"] > 100 * 2**20
    # the peak RSS of the build that loaded the candidate's DiT is recorded with each render
    assert record["candidate_render"]["load_peak_rss_bytes"] > 100 * 2**20
    pytester.runpytest("--qg-max-vram", "64 GiB").assert_outcomes(passed=1)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(host_memory, "CLEAR_REFS", pytester.path / "no-such-dir" / "clear_refs")
        unmeasured = pytester.runpytest("--qg-max-vram", "64 GiB")
        unmeasured.assert_outcomes(failed=1)
        unmeasured.stdout.fnmatch_lines(["*a peak RSS limit of 64.00 GiB is set, but peak RSS could not be measured:*"])
        pytester.runpytest().assert_outcomes(passed=1)  # no limit: the report just says it was not measured
    record = json.loads((pytester.path / "qg-report" / "results.json").read_text())["results"][0]
    assert record["candidate_render"]["memory"]["peak_bytes"] is None
    assert "cannot be written here" in record["candidate_render"]["memory"]["note"]
    assert record["candidate_render"]["load_peak_rss_bytes"] is None  # not a figure that includes earlier work


def test_float8_candidate_stores_the_dit_in_half_the_bytes(tmp_path: Path) -> None:
    """Measured while each render's denoising loop runs. A silent upcast to bf16 (a known
    DiffSynth pitfall) would make the two equal."""
    from quant_guard.run.cases import TestOverrides, VisualCase
    from quant_guard.config.project import CaseSpec, CheckpointSpec, RenderDefaults, parse_config
    from quant_guard.run.gate import run_case
    from quant_guard.run.session import QuantGuardSession, RunSettings

    config = parse_config({}, file=tmp_path / "qg.toml")
    session = QuantGuardSession(config, RunSettings(update_golden=True, golden_dir=tmp_path / "golden",
                                                    report_dir=tmp_path / "report"))
    checkpoint = CheckpointSpec(id="tiny", embedded="tiny", components={}, device="cpu",
                                render=RenderDefaults(steps=2, width=64, height=64))
    case = CaseSpec(id="c", prompt="a red circle", seeds=(0,), steps=None, width=None, height=None,
                    guidance=None, checkpoints=("tiny",))
    result = run_case(session, VisualCase(checkpoint, case, 0), TestOverrides())
    assert result.reference_render is not None and result.candidate_render is not None, result.reason
    bf16 = result.reference_render.dit_weight_bytes
    float8 = result.candidate_render.dit_weight_bytes
    assert bf16 > 1_000_000
    assert float8 <= 0.5 * bf16 * 1.01, (float8, bf16)


def test_missing_vram_map_entry_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without DiffSynth's VRAM-management entry for the DiT class, its float8 weights are
    silently upcast to bf16: the pipeline builder refuses that instead."""
    from diffsynth.configs import VRAM_MANAGEMENT_MODULE_MAPS

    from quant_guard.model.checkpoints import CheckpointError, resolve_checkpoint
    from quant_guard.config.project import CheckpointSpec
    from quant_guard.config.schemes import FLOAT8_E4M3FN
    from quant_guard.model.pipelines import build_pipeline

    ckpt = resolve_checkpoint(CheckpointSpec(id="tiny", embedded="tiny", components={}))
    build_pipeline(ckpt, FLOAT8_E4M3FN, "cpu")  # registers the tiny classes with DiffSynth
    monkeypatch.delitem(VRAM_MANAGEMENT_MODULE_MAPS, "quant_guard.model.tiny.architecture.TinyFluxDiT")
    with pytest.raises(CheckpointError, match="found a plain Linear.*DiffSynth did not apply float8 storage to this model class"):
        build_pipeline(ckpt, FLOAT8_E4M3FN, "cpu")
