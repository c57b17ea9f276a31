"""Peak and resident memory of a candidate render are its own: the same in a check run and in an
update run, whatever rendered before, on a CUDA device modelled by ``fake_cuda`` (the session,
the DiT swap, the render's accounting and the gate are the real ones). Out of memory at load or
at render is an out-of-memory verdict with the figures, and the next test goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import ANY_IMAGE
from fake_cuda import ACTIVATION_BYTES, DIT_BYTES, ENCODER_BYTES, GIB, FakeCudaDevice, FakePipeline, fake_build

from quant_guard import pipelines
from quant_guard.cases import CaseResult, TestOverrides, Verdict, VisualCase
from quant_guard.config import CaseSpec, CheckpointSpec, RenderDefaults, parse_config
from quant_guard.gate import run_case
from quant_guard.schemes import REFERENCE, Scheme
from quant_guard.render import RenderRequest, render
from quant_guard.session import QuantGuardSession, RunSettings

RENDER = RenderDefaults(steps=3, width=64, height=64)
RESIDENT = CheckpointSpec(id="flux", embedded="tiny", components={}, device="cuda", render=RENDER)
OFFLOAD = CheckpointSpec(id="flux", embedded="tiny", components={}, device="cuda", cpu_offload=True,
                         vram_limit_bytes=7 * GIB, render=RENDER)
OTHER = CheckpointSpec(id="other", embedded="tiny", components={}, device="cuda", render=RENDER)


def _cases(spec: CheckpointSpec) -> list[VisualCase]:
    return [VisualCase(spec, CaseSpec(id=f"c{i}", prompt="a red circle", seeds=(0,), steps=None, width=None,
                                      height=None, guidance=None, checkpoints=(spec.id,)), 0) for i in range(2)]


def _session(tmp_path: Path, *, update: bool) -> QuantGuardSession:
    config = parse_config({}, file=tmp_path / "qg.toml")
    return QuantGuardSession(config, RunSettings(update_golden=update, golden_dir=tmp_path / "golden",
                                                 report_dir=tmp_path / "report"))


def _figures(results: list[CaseResult]) -> list[tuple[int | None, int | None]]:
    out = []
    for r in results:
        assert r.passed, r.reason
        assert r.candidate_render is not None
        out.append((r.candidate_render.memory.at_start_bytes, r.candidate_render.memory.peak_bytes))
    return out


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> FakeCudaDevice:
    # 40 GiB: the encoders and both DiTs (43 GiB) never fit together
    device = FakeCudaDevice(40 * GIB)
    device.install(monkeypatch)
    monkeypatch.setattr(pipelines, "build_pipeline", fake_build(device))
    return device


@pytest.mark.parametrize("spec, resident, peak", [
    (RESIDENT, ENCODER_BYTES + DIT_BYTES[torch.float8_e4m3fn],
     ENCODER_BYTES + DIT_BYTES[torch.float8_e4m3fn] + ACTIVATION_BYTES),
    (OFFLOAD, 0, 7 * GIB + ACTIVATION_BYTES),  # layers kept on the device up to vram_limit, then activations
], ids=["resident", "cpu-offload"])
def test_the_candidate_figures_do_not_depend_on_what_ran_before(tmp_path: Path, gpu: FakeCudaDevice,
                                                                spec: CheckpointSpec, resident: int,
                                                                peak: int) -> None:
    cases = _cases(spec)
    updating = _session(tmp_path, update=True)
    update_run = _figures([run_case(updating, vc, TestOverrides()) for vc in cases])
    updating.release_pipelines()
    assert gpu.allocated == 0  # everything left the device

    check_run = _figures([run_case(_session(tmp_path, update=False), vc, TestOverrides()) for vc in cases])

    after_other = _session(tmp_path, update=False)
    other = after_other.pipeline(OTHER, REFERENCE)  # another checkpoint's bf16 pipeline rendered first
    render(other, RenderRequest("x", 0, 3, 64, 64, 3.5, 8))
    del other
    after_checkpoint = _figures([run_case(after_other, vc, TestOverrides()) for vc in cases])

    assert update_run == check_run == after_checkpoint == [(resident, peak)] * 2
    # never two DiTs on the device: at most the encoders, the bf16 DiT and one render's activations
    assert gpu.high_water <= ENCODER_BYTES + DIT_BYTES[torch.bfloat16] + ACTIVATION_BYTES


def test_the_reference_render_is_measured_under_the_same_plan(tmp_path: Path, gpu: FakeCudaDevice) -> None:
    result = run_case(_session(tmp_path, update=True), _cases(OFFLOAD)[0], TestOverrides())
    assert result.reference_render is not None and result.memory_plan is not None
    assert result.reference_render.memory.at_start_bytes == 0  # the bf16 DiT lives in host memory too
    assert result.reference_render.memory.peak_bytes == 7 * GIB + ACTIVATION_BYTES
    assert result.memory_plan.vram_limit_bytes == 7 * GIB


def test_resident_and_peak_limits(tmp_path: Path, gpu: FakeCudaDevice) -> None:
    session = _session(tmp_path, update=True)
    tight = TestOverrides(peak_memory_bytes=20 * GIB, resident_memory_bytes=20 * GIB)
    result = run_case(session, _cases(RESIDENT)[0], tight)
    assert result.verdict is Verdict.BUDGET_FAILED
    assert [(c.name, c.passed) for c in result.budget_checks] == [("peak VRAM", False), ("resident VRAM", False)]
    assert "resident VRAM 21.00 GiB > max 20.00 GiB FAIL" in result.reason


def test_out_of_memory_at_render_is_a_verdict_and_the_next_test_goes_on(tmp_path: Path, gpu: FakeCudaDevice,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    gpu.total = ENCODER_BYTES + DIT_BYTES[torch.bfloat16] + GIB  # the bf16 reference loads, its render does not fit
    left_after_release: list[int] = []
    real_release = pipelines.release_memory

    def recording_release() -> None:
        real_release()
        left_after_release.append(gpu.allocated)

    monkeypatch.setattr(pipelines, "release_memory", recording_release)
    session = _session(tmp_path, update=True)
    first, second = (run_case(session, vc, TestOverrides()) for vc in _cases(RESIDENT))
    for result in (first, second):
        assert result.verdict is Verdict.OUT_OF_MEMORY
        lines = result.reason.splitlines()
        assert lines[0].startswith("out of memory while rendering (OutOfMemoryError: CUDA out of memory.")
        assert lines[1] == ("  allocated 32.00 GiB, reserved 32.00 GiB, peak 32.00 GiB, "
                            "device free 1.00 GiB of 33.00 GiB")
        assert lines[2].startswith("  memory plan: resident on cuda: dit cuda/float8_e4m3fn")
    # released while the verdict is made, not only once the failed render's frames are gone
    assert left_after_release == [0, 0]


def test_out_of_memory_while_swapping_the_dit_is_not_a_loading_failure(tmp_path: Path, gpu: FakeCudaDevice,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    session = _session(tmp_path, update=True)
    real = FakePipeline.download_and_load_models
    calls = {"n": 0}

    def oom_on_the_first_swap(self: FakePipeline, configs: list[Any], vram_limit: Any = None) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # 1 = the build's DiT, 2 = the first swap
            raise RuntimeError("CUDA error: out of memory")
        return real(self, configs, vram_limit)

    monkeypatch.setattr(FakePipeline, "download_and_load_models", oom_on_the_first_swap)
    first, second = (run_case(session, vc, TestOverrides()) for vc in _cases(RESIDENT))
    assert first.verdict is Verdict.OUT_OF_MEMORY
    assert first.reason.startswith("out of memory while loading the float8_e4m3fn DiT of 'flux' "
                                   "(RuntimeError: CUDA error: out of memory)")
    assert second.verdict is Verdict.UPDATED


def test_out_of_memory_while_building_is_not_a_loading_failure(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The real build on the tiny CPU checkpoint, DiffSynth's loader raising torch.OutOfMemoryError once."""
    import torch
    from diffsynth.pipelines.flux_image import FluxImagePipeline

    real = FluxImagePipeline.download_and_load_models
    calls = {"n": 0}

    def oom_once(self: Any, configs: Any, vram_limit: Any = None) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real(self, configs, vram_limit)

    monkeypatch.setattr(FluxImagePipeline, "download_and_load_models", oom_once)
    spec = CheckpointSpec(id="tiny", embedded="tiny", components={}, device="cpu", render=RENDER, thresholds=ANY_IMAGE)
    session = _session(tmp_path, update=True)
    first, second = (run_case(session, vc, TestOverrides()) for vc in _cases(spec))
    assert first.verdict is Verdict.OUT_OF_MEMORY
    assert first.reason.startswith("out of memory while loading the bf16 pipeline of 'tiny' "
                                   "(OutOfMemoryError: CUDA out of memory. Tried to allocate 9.00 GiB)")
    assert "memory plan: cpu on cpu" in first.reason and "host RSS" in first.reason
    assert second.verdict is Verdict.UPDATED


@pytest.mark.parametrize("spec, mode, dit_home, limit", [
    (RESIDENT, "resident", "cuda", None), (OFFLOAD, "cpu-offload", "cpu", 7 * GIB),
], ids=["resident", "cpu-offload"])
def test_check_and_update_runs_load_every_dit_under_the_checkpoint_plan(
        tmp_path: Path, gpu: FakeCudaDevice, monkeypatch: pytest.MonkeyPatch, spec: CheckpointSpec, mode: str,
        dit_home: str, limit: int | None) -> None:
    loads: list[tuple[str, str, str, str, int | None]] = []
    build, swap = pipelines.build_pipeline, pipelines.swap_dit

    def note(how: str, scheme: Scheme, plan: Any) -> None:
        dit = plan.components["dit"]
        homes = {plan.components[c].home_device for c in ("text_encoder_clip", "text_encoder_t5", "vae")}
        assert homes == {dit_home} and plan.mode.value == mode
        loads.append((how, scheme.id, dit.home_device, dit.home_dtype, plan.vram_limit_bytes))

    def noting_build(checkpoint: Any, scheme: Scheme, device: str, *, plan: Any) -> Any:
        note("build", scheme, plan)
        return build(checkpoint, scheme, device, plan=plan)

    def noting_swap(pipe: Any, checkpoint: Any, scheme: Scheme, plan: Any) -> None:
        note("swap", scheme, plan)
        swap(pipe, checkpoint, scheme, plan)

    monkeypatch.setattr(pipelines, "build_pipeline", noting_build)
    monkeypatch.setattr(pipelines, "swap_dit", noting_swap)
    for vc in _cases(spec):
        assert run_case(_session(tmp_path, update=True), vc, TestOverrides()).passed
    reference = ("build", "bf16", dit_home, "bfloat16", limit)
    assert loads == [reference, ("swap", "float8_e4m3fn", dit_home, "float8_e4m3fn", limit)] * 2
    loads.clear()
    assert run_case(_session(tmp_path, update=False), _cases(spec)[0], TestOverrides()).passed
    assert loads == [("build", "float8_e4m3fn", dit_home, "float8_e4m3fn", limit)]
