"""The memory plan: where each component lives and computes in every mode, the vram_limit DiffSynth
gets, how the configuration spells it, and that the pipeline is built with exactly those fields."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import re

from quant_guard.config.project import ConfigError, parse_config
from quant_guard.model.host_memory import PROCESS_BYTES, HostPlan, host_plan
from quant_guard.model.families import default_family
from quant_guard.model.memory_plan import (
    AUTO_MARGIN_BYTES,
    ComponentPlacement,
    MemoryMode,
    plan_memory,
    torch_fields,
)
from quant_guard.config.schemes import FLOAT8_E4M3FN, REFERENCE, Quantization, Scheme
from quant_guard.config.sources import ComponentSource

GIB = 2**30
F8, BF16 = "float8_e4m3fn", "bfloat16"
MODEL_COMPONENTS = default_family().model_components  # FLUX.1's: dit, text_encoder_clip, text_encoder_t5, vae


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
    from quant_guard.config.project import load_config

    spec = load_config(Path(__file__).parents[2] / "pyproject.toml").checkpoint("majicflus")
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

    from quant_guard.model import pipelines
    from quant_guard.model.checkpoints import resolve_checkpoint
    from quant_guard.config.project import CheckpointSpec

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
    from quant_guard.judge.budgets import BudgetCheck
    from quant_guard.run.cases import CaseResult, Verdict, VisualCase
    from quant_guard.judge.budgets import RenderSummary
    from quant_guard.config.project import CaseSpec, CheckpointSpec
    from quant_guard.judge.budgets import MemoryStats
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
        "prepared_dtype": None, "plain": False}

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


# ---- host RAM ------------------------------------------------------------------------------------

# FLUX.1-dev's released files in bf16 (majicflus' DiT has the same shapes)
FLUX_BYTES = {"dit": int(22.2 * GIB), "text_encoder_clip": int(0.23 * GIB), "text_encoder_t5": int(9.1 * GIB),
              "vae": int(0.16 * GIB)}
NF4 = Scheme("nf4", quantization=Quantization("bitsandbytes_nf4"))
NF4_FILE = Scheme("nf4-file", quantization=Quantization("bitsandbytes_nf4", load_prequantized=True),
                  dit=ComponentSource(path=Path("dit-nf4.safetensors")))


def _host(scheme: Scheme, *, cpu_offload: bool = True, disk: bool = False, dit: int | None = None) -> HostPlan:
    plan = plan_memory(cpu_offload=cpu_offload, vram_limit_bytes=7 * GIB, scheme=scheme, device="cuda",
                       device_total_bytes=None, disk_offload=disk)
    return host_plan(plan, {**FLUX_BYTES, "dit": dit or FLUX_BYTES["dit"]}, prequantized_dit=scheme.dit is not None)


def test_host_ram_of_the_flux_plans_per_component() -> None:
    """What each component holds in host memory under each plan, as DiffSynth loads it."""
    rest = FLUX_BYTES["text_encoder_clip"] + FLUX_BYTES["text_encoder_t5"] + FLUX_BYTES["vae"]
    reference = _host(REFERENCE)
    assert reference.component("dit").resident_bytes == FLUX_BYTES["dit"]
    assert reference.weights_bytes == FLUX_BYTES["dit"] + rest  # about 31.7 GiB: DiT + T5 in host RAM
    assert reference.peak_bytes == PROCESS_BYTES + FLUX_BYTES["dit"] + rest
    assert _host(FLOAT8_E4M3FN).component("dit").resident_bytes == FLUX_BYTES["dit"] // 2
    # a method quantizing on load reads the whole bf16 DiT onto the host first
    nf4 = _host(NF4)
    assert nf4.component("dit").load_bytes == FLUX_BYTES["dit"]
    assert nf4.component("dit").resident_bytes == int(FLUX_BYTES["dit"] * 0.28)
    assert nf4.peak_bytes == PROCESS_BYTES + rest + FLUX_BYTES["dit"]
    # ... even when the DiT lives on the GPU (the plain path loads on "cpu" in bf16)
    resident_nf4 = _host(NF4, cpu_offload=False)
    assert resident_nf4.component("dit").load_bytes == FLUX_BYTES["dit"] and resident_nf4.weights_bytes == 0
    assert _host(REFERENCE, cpu_offload=False).peak_bytes == PROCESS_BYTES  # safe_open straight onto the GPU
    # a pre-quantized file is read as stored: no bf16 copy
    prequantized = _host(NF4_FILE, dit=int(6.5 * GIB))
    assert prequantized.component("dit").load_bytes == prequantized.component("dit").resident_bytes == int(6.5 * GIB)


def test_disk_offload_leaves_dit_and_t5_in_their_files_except_a_dit_quantized_on_load() -> None:
    disk = _host(REFERENCE, disk=True)
    assert disk.component("dit").load_bytes == disk.component("text_encoder_t5").load_bytes == 0
    assert disk.peak_bytes == PROCESS_BYTES + FLUX_BYTES["text_encoder_clip"] + FLUX_BYTES["vae"]
    assert _host(NF4, disk=True).component("dit").load_bytes == FLUX_BYTES["dit"]  # model.py:34-36 refuses disk
    plan = plan_memory(cpu_offload=True, vram_limit_bytes=None, scheme=FLOAT8_E4M3FN, device="cuda",
                       device_total_bytes=24 * GIB, disk_offload=True)
    assert plan.components["dit"].model_config_fields() == {
        "offload_dtype": "disk", "offload_device": "disk", "onload_dtype": "disk", "onload_device": "disk",
        "preparing_dtype": F8, "preparing_device": "cuda", "computation_dtype": BF16, "computation_device": "cuda"}
    assert plan.components["text_encoder_t5"].model_config_fields()["preparing_dtype"] == BF16
    assert plan.components["vae"].home_device == "cpu"
    assert torch_fields(plan.components["dit"].model_config_fields())["offload_dtype"] == "disk"
    assert "dit disk/float8_e4m3fn" in plan.describe()


def test_disk_offload_key(tmp_path: Path) -> None:
    assert _checkpoint(tmp_path, disk_offload=True).disk_offload is True
    assert _checkpoint(tmp_path).disk_offload is False
    with pytest.raises(ConfigError, match="disk_offload: must be bool"):
        _checkpoint(tmp_path, disk_offload="yes")


def test_machine_memory_is_bounded_by_the_cgroup_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import quant_guard.model.host_memory as host_memory

    (tmp_path / "memory.max").write_text(f"{GIB}\n")
    (tmp_path / "memory.current").write_text(f"{GIB // 4}\n")
    monkeypatch.setattr(host_memory, "_CGROUP", tmp_path)
    memory = host_memory.machine_memory()
    assert memory.total_bytes == GIB and memory.available_bytes == GIB - GIB // 4
    assert "cgroup memory.max" in memory.source
    (tmp_path / "memory.max").write_text("max\n")
    assert host_memory.machine_memory().total_bytes != GIB  # no limit: the machine's RAM


def test_a_load_that_would_not_fit_stops_before_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """build_pipeline and swap_dit check the plan's host RAM against what is available before
    DiffSynth reads a byte: the OOM killer would end the process with no verdict."""
    from diffsynth.pipelines.flux_image import FluxImagePipeline

    import quant_guard.model.host_memory as host_memory
    from quant_guard.model import pipelines
    from quant_guard.model.checkpoints import resolve_checkpoint
    from quant_guard.config.project import CheckpointSpec

    resolved = resolve_checkpoint(CheckpointSpec(id="tiny", embedded="tiny", components={}, device="cpu"))
    plan = plan_memory(cpu_offload=False, vram_limit_bytes=None, scheme=REFERENCE, device="cpu",
                       device_total_bytes=None)
    pipe = pipelines.build_pipeline(resolved, REFERENCE, "cpu", plan=plan)
    build = pipe.qg_build_memory  # the measured peak RSS of the build
    assert build.before_bytes and build.after_bytes and build.peak_bytes and build.peak_bytes >= build.after_bytes
    tight = host_memory.MachineMemory(4 * GIB, 2**20, "a test machine")
    monkeypatch.setattr(host_memory, "machine_memory", lambda: tight)

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("DiffSynth was asked to load")

    monkeypatch.setattr(FluxImagePipeline, "from_pretrained", no_load)
    monkeypatch.setattr(FluxImagePipeline, "download_and_load_models", no_load)
    with pytest.raises(pipelines.LoadOutOfMemory) as caught:
        pipelines.build_pipeline(resolved, REFERENCE, "cpu", plan=plan)
    message = str(caught.value)
    assert re.search(r"loading the bf16 pipeline of 'tiny' needs about [\d.]+ MiB more host RAM \(.*dit 3\.\d\d MiB, "
                     r".*\), but only 1\.00 MiB is available \(a test machine\); stopped before loading", message), message
    assert isinstance(caught.value.error, host_memory.HostMemoryShortfall)
    f8 = plan_memory(cpu_offload=False, vram_limit_bytes=None, scheme=FLOAT8_E4M3FN, device="cpu",
                     device_total_bytes=None)
    with pytest.raises(pipelines.LoadOutOfMemory, match=r"loading the float8_e4m3fn DiT of 'tiny' needs about "
                                                       r"1\.\d\d MiB more host RAM"):
        pipelines.swap_dit(pipe, resolved, FLOAT8_E4M3FN, f8)


def test_the_readme_shows_the_plan_per_card_size() -> None:
    """The README's "A real checkpoint" table is what ``host_memory.card_table`` computes for the
    repository's majicflus schemes at FLUX.1-dev size, and its figures follow the plan's rules."""
    from quant_guard.config.project import load_config
    from quant_guard.tools.doctor import full_size_file_bytes
    from quant_guard.model.host_memory import RENDER_HEADROOM, card_plan, card_table

    root = Path(__file__).parents[2]
    spec = load_config(root / "pyproject.toml").checkpoint("majicflus")
    sizes = {name: full_size_file_bytes()[name] for name in MODEL_COMPONENTS}
    schemes = (REFERENCE, *spec.schemes)
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### A real checkpoint"):readme.index("### Before the first nightly")]
    assert card_table(sizes, schemes) in section
    small = card_plan(12, sizes, schemes)
    assert small.cpu_offload and small.vram_limit_bytes == spec.vram_limit_bytes  # the repository's setting
    assert small.vram_peak_bytes["bf16"] == spec.vram_limit_bytes + RENDER_HEADROOM == spec.limits.peak_memory_bytes
    assert small.host_peak_bytes["bf16"] > 32 * 10**9 > small.host_peak_disk_bytes["bf16"]  # a 32 GB runner
    assert small.host_peak_disk_bytes["bitsandbytes_nf4"] > sizes["dit"]  # quantized on load: the bf16 copy
    big = card_plan(80, sizes, schemes)
    assert not big.cpu_offload and big.vram_peak_bytes["bf16"] == sum(sizes.values()) + RENDER_HEADROOM
