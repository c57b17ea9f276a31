"""The memory plan: where each component lives and computes in every mode, the vram_limit DiffSynth
gets, how the configuration spells it, and that the pipeline is built with exactly those fields."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from quant_guard.config import ConfigError, parse_config
from quant_guard.memory_plan import AUTO_MARGIN_BYTES, MODEL_COMPONENTS, ComponentPlacement, MemoryMode, plan_memory
from quant_guard.schemes import FLOAT8_E4M3FN, REFERENCE, Scheme

GIB = 2**30
F8, BF16 = "float8_e4m3fn", "bfloat16"


def _plan(scheme: Scheme, device: str, *, cpu_offload: bool, limit: int | None = None,
          total: int | None = 24 * GIB) -> dict[str, dict[str, str]]:
    plan = plan_memory(cpu_offload=cpu_offload, vram_limit_bytes=limit, scheme=scheme, device=device,
                       device_total_bytes=total)
    return {name: plan.components[name].model_config_fields() for name in MODEL_COMPONENTS}


def _fields(home: str, home_dtype: str, compute: str) -> dict[str, str]:
    return {"offload_dtype": home_dtype, "offload_device": home, "onload_dtype": home_dtype, "onload_device": home,
            "preparing_dtype": home_dtype, "preparing_device": compute,
            "computation_dtype": BF16, "computation_device": compute}


@pytest.mark.parametrize("cpu_offload", [False, True])
def test_on_a_cpu_everything_stays_in_host_memory_without_vram_limit(cpu_offload: bool) -> None:
    for scheme in (REFERENCE, FLOAT8_E4M3FN):
        plan = plan_memory(cpu_offload=cpu_offload, vram_limit_bytes=8 * GIB, scheme=scheme, device="cpu",
                           device_total_bytes=None)
        assert plan.mode is MemoryMode.CPU
        assert plan.vram_limit_bytes is None and plan.vram_limit_gib is None  # DiffSynth crashes with one on a CPU
    assert _plan(REFERENCE, "cpu", cpu_offload=cpu_offload) == dict.fromkeys(MODEL_COMPONENTS, {})
    assert _plan(FLOAT8_E4M3FN, "cpu", cpu_offload=cpu_offload) == {
        "dit": _fields("cpu", F8, "cpu"), "text_encoder_clip": {}, "text_encoder_t5": {}, "vae": {}}


def test_resident_on_cuda_every_component_lives_on_the_device() -> None:
    assert _plan(REFERENCE, "cuda", cpu_offload=False) == dict.fromkeys(MODEL_COMPONENTS, {})  # plain load
    assert _plan(FLOAT8_E4M3FN, "cuda", cpu_offload=False) == {
        "dit": _fields("cuda", F8, "cuda"), "text_encoder_clip": {}, "text_encoder_t5": {}, "vae": {}}
    plan = plan_memory(cpu_offload=False, vram_limit_bytes=None, scheme=FLOAT8_E4M3FN, device="cuda",
                       device_total_bytes=None)
    assert plan.mode is MemoryMode.RESIDENT and plan.vram_limit_bytes is None


@pytest.mark.parametrize("scheme, dit_dtype", [(REFERENCE, BF16), (FLOAT8_E4M3FN, F8)])
def test_cpu_offload_on_cuda_keeps_every_component_in_host_memory(scheme: Scheme, dit_dtype: str) -> None:
    """The reference and the candidate follow the same plan, only the DiT's stored dtype differs.
    Every onload device is "cpu": the prompt encoder is never onloaded by the pipeline."""
    assert _plan(scheme, "cuda", cpu_offload=True) == {
        "dit": _fields("cpu", dit_dtype, "cuda"), "text_encoder_clip": _fields("cpu", BF16, "cuda"),
        "text_encoder_t5": _fields("cpu", BF16, "cuda"), "vae": _fields("cpu", BF16, "cuda")}


def test_vram_limit_auto_is_the_total_minus_a_margin_and_an_explicit_one_wins() -> None:
    auto = plan_memory(cpu_offload=True, vram_limit_bytes=None, scheme=FLOAT8_E4M3FN, device="cuda",
                       device_total_bytes=12 * GIB)
    assert auto.mode is MemoryMode.CPU_OFFLOAD
    assert auto.vram_limit_bytes == 12 * GIB - AUTO_MARGIN_BYTES and auto.vram_limit_gib == 11.5
    fixed = plan_memory(cpu_offload=True, vram_limit_bytes=7 * GIB, scheme=REFERENCE, device="cuda",
                        device_total_bytes=80 * GIB)
    assert fixed.vram_limit_gib == 7.0
    assert "cpu-offload on cuda, vram_limit 7.00 GiB: dit cpu/bfloat16" in fixed.describe()
    with pytest.raises(ValueError, match="total memory of cuda"):
        plan_memory(cpu_offload=True, vram_limit_bytes=None, scheme=REFERENCE, device="cuda",
                    device_total_bytes=None)


def test_a_placement_stored_as_computed_is_a_plain_load() -> None:
    assert ComponentPlacement("cuda", BF16, "cuda").model_config_fields() == {}
    assert ComponentPlacement("cpu", BF16, "cuda").model_config_fields()["onload_device"] == "cpu"


# ---- configuration ---------------------------------------------------------------------------

def _checkpoint(tmp_path: Path, **extra: object) -> object:
    data = {"checkpoints": [{"id": "tiny", "embedded": "tiny", **extra}]}
    return parse_config(data, file=tmp_path / "qg.toml").checkpoints[0]


def test_config_keys(tmp_path: Path) -> None:
    default = _checkpoint(tmp_path)
    assert (default.cpu_offload, default.vram_limit_bytes) == (False, None)
    offload = _checkpoint(tmp_path, cpu_offload=True, vram_limit="7 GiB", limits={"resident_vram": "1 GiB"})
    assert (offload.cpu_offload, offload.vram_limit_bytes) == (True, 7 * GIB)
    assert offload.limits.resident_memory_bytes == GIB
    assert _checkpoint(tmp_path, cpu_offload=True, vram_limit="auto").vram_limit_bytes is None


@pytest.mark.parametrize("extra, message", [
    ({"vram_limit": "7 GiB"}, "vram_limit: applies only with cpu_offload = true"),
    ({"cpu_offload": True, "vram_limit": "7G"}, "vram_limit: unknown unit 'G'.*or \"auto\""),
    ({"cpu_offload": True, "vram_limit": 7}, "vram_limit: must be str"),
    ({"limits": {"resident_vram": "lots"}}, r"limits.resident_vram: cannot parse memory size"),
])
def test_bad_memory_settings_name_the_key(tmp_path: Path, extra: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _checkpoint(tmp_path, **extra)


def test_the_repository_checkpoint_plan_fits_its_own_limits() -> None:
    """majicflus: cpu_offload with a vram_limit under its peak limit, so that DiffSynth stops
    keeping layers on the device before the peak limit is reached."""
    from quant_guard.config import load_config

    spec = load_config(Path(__file__).parents[1] / "pyproject.toml").checkpoint("majicflus")
    assert spec.cpu_offload and spec.vram_limit_bytes is not None and spec.limits.peak_memory_bytes is not None
    assert spec.vram_limit_bytes < spec.limits.peak_memory_bytes
    plan = plan_memory(cpu_offload=spec.cpu_offload, vram_limit_bytes=spec.vram_limit_bytes,
                       scheme=REFERENCE, device="cuda", device_total_bytes=None)
    assert {p.home_device for p in plan.components.values()} == {"cpu"}  # goldens fit the same card


# ---- the plan reaches DiffSynth ----------------------------------------------------------------

def test_the_built_pipeline_follows_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``from_pretrained`` receives is the plan, field for field (dtypes as torch dtypes),
    and a DiT swap loads under the plan of its scheme."""
    import torch
    from diffsynth.pipelines.flux_image import FluxImagePipeline

    from quant_guard import pipelines
    from quant_guard.checkpoints import resolve_checkpoint
    from quant_guard.config import CheckpointSpec

    seen: list[tuple[list[dict[str, object]], object]] = []
    real = FluxImagePipeline.download_and_load_models

    def recording(self: object, model_configs: list[object], vram_limit: object = None) -> object:
        keys = ("offload_dtype", "offload_device", "onload_dtype", "onload_device", "preparing_dtype",
                "preparing_device", "computation_dtype", "computation_device")
        seen.append(([{k: getattr(c, k) for k in keys} for c in model_configs], vram_limit))
        return real(self, model_configs, vram_limit)

    monkeypatch.setattr(FluxImagePipeline, "download_and_load_models", recording)
    resolved = resolve_checkpoint(CheckpointSpec(id="tiny", embedded="tiny", components={}, device="cpu"))
    plan = plan_memory(cpu_offload=True, vram_limit_bytes=None, scheme=FLOAT8_E4M3FN, device="cpu",
                       device_total_bytes=None)
    pipe = pipelines.build_pipeline(resolved, FLOAT8_E4M3FN, "cpu", plan=plan)
    configs, vram_limit = seen[0]
    assert vram_limit is None
    assert configs[0]["offload_dtype"] == torch.float8_e4m3fn and configs[0]["computation_dtype"] == torch.bfloat16
    assert configs[0]["onload_device"] == "cpu" and configs[1]["offload_dtype"] is None  # CLIP: plain load
    assert {p.dtype for p in pipe.dit.parameters()} >= {torch.float8_e4m3fn}

    bf16 = plan_memory(cpu_offload=True, vram_limit_bytes=None, scheme=REFERENCE, device="cpu",
                       device_total_bytes=None)
    pipelines.swap_dit(pipe, resolved, REFERENCE, bf16)
    assert len(seen) == 2 and len(seen[1][0]) == 1 and seen[1][0][0]["offload_dtype"] is None
    assert {p.dtype for p in pipe.dit.parameters()} == {torch.bfloat16}
    with pytest.raises(ValueError, match="memory plan for bf16 on cpu"):
        pipelines.build_pipeline(resolved, FLOAT8_E4M3FN, "cpu", plan=bf16)


# ---- the report ------------------------------------------------------------------------------

def test_the_plan_and_the_resident_figure_reach_results_json_and_the_html_view() -> None:
    from quant_guard.budgets import BudgetCheck
    from quant_guard.cases import CaseResult, Verdict, VisualCase
    from quant_guard.render import RenderSummary
    from quant_guard.config import CaseSpec, CheckpointSpec
    from quant_guard.render import MemoryStats
    from quant_guard.report.html import render_index
    from quant_guard.report.records import to_jsonable
    from quant_guard.report.view import build_view

    spec = CheckpointSpec(id="flux", embedded="tiny", components={}, device="cuda", cpu_offload=True,
                          vram_limit_bytes=7 * GIB)
    vc = VisualCase(spec, CaseSpec(id="c", prompt="p", seeds=(0,), steps=None, width=None, height=None,
                                   guidance=None, checkpoints=("flux",)), 0)
    plan = plan_memory(cpu_offload=True, vram_limit_bytes=7 * GIB, scheme=FLOAT8_E4M3FN,
                       device="cuda", device_total_bytes=None)
    render = RenderSummary(step_times_s=(1.0, 1.0), total_s=2.0, dit_weight_bytes=11 * GIB,
                           memory=MemoryStats("cuda", 9 * GIB, at_start_bytes=GIB // 2))
    result = CaseResult(vc, Verdict.BUDGET_FAILED, "budget exceeded", candidate_render=render, memory_plan=plan,
                        budget_checks=(BudgetCheck("peak VRAM", 9.0 * GIB, 10.0 * GIB, "bytes"),
                                       BudgetCheck("resident VRAM", 0.5 * GIB, 0.25 * GIB, "bytes")))
    data = to_jsonable(result)
    assert data["memory_plan"]["mode"] == "cpu-offload" and data["memory_plan"]["vram_limit_gib"] == 7.0
    assert data["memory_plan"]["components"]["text_encoder_t5"] == {
        "home_device": "cpu", "home_dtype": "bfloat16", "compute_device": "cuda", "compute_dtype": "bfloat16",
        "plain": False}

    record = {**data, "id": "flux-c-s0", "checkpoint": "flux", "case": "c", "seed": 0, "prompt": "p",
              "scheme": "float8_e4m3fn", "limits": to_jsonable(spec.limits), "passed": False, "outcome": "failed"}
    budget = build_view({"results": [record]}).cases[0].budget
    rows = {row.cells[0].text: [c.text for c in row.cells[1:]] for row in budget}
    assert rows["resident VRAM at render start, candidate"] == ["512.00 MiB", "resident VRAM ≤ 256.00 MiB", "FAIL"]
    assert rows["peak VRAM, candidate"] == ["9.00 GiB", "peak VRAM ≤ 10.00 GiB", "ok"]
    assert rows["memory plan"][0].startswith("cpu-offload on cuda: dit in cpu (float8_e4m3fn), "
                                             "text_encoder_clip in cpu")
    assert rows["memory plan"][1] == "vram_limit 7.00 GiB"
    page = render_index({"results": [record]})
    assert "resident VRAM at render start, candidate" in page and "cpu-offload on cuda: dit in cpu" in page


def test_resident_limit_from_config_marker_and_command_line(pytester: pytest.Pytester,
                                                             qg_project: Callable[..., Path]) -> None:
    qg_project(checkpoint_extra='limits = { resident_vram = "1 TiB" }')
    pytester.runpytest("--update-golden").assert_outcomes(passed=1)
    pytester.makepyfile(test_visual="""
        import pytest

        @pytest.mark.resident_vram_budget("1 KiB")
        def test_visual(qg_case, qg_gate):
            qg_gate.check(qg_case)
        """)
    result = pytester.runpytest()  # the marker overrides the config
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*budget exceeded:*", "*resident RSS * > max 1.00 KiB FAIL*"])
    pytester.runpytest("--qg-max-resident-vram", "1 TiB").assert_outcomes(passed=1)  # the command line wins
    assert "--qg-max-resident-vram=SIZE" in pytester.runpytest("--help").stdout.str()
    pytester.runpytest("--markers").stdout.fnmatch_lines(['@pytest.mark.resident_vram_budget("8 GiB")*'])
