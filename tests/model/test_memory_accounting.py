"""Memory accounting on a CUDA device modelled by ``fake_cuda``: the real tiny checkpoint, the real
build, DiT swap, render and gate, and DiffSynth's own VRAM layers deciding what lives on the
device; only the device is fake. The candidate's figures are its own (the same in a check run and
in an update run, whatever rendered before), ``vram_limit`` decides how much stays on the device,
the peak counts the CUDA context and the allocator's reserve, out of memory is a verdict, and an
error during a render leaves a clean device for the next test."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_cuda import GIB, FakeCudaDevice
from helpers import ANY_IMAGE

from quant_guard.model import pipelines
from quant_guard.config.limits import Budget, PeakCounts
from quant_guard.run.cases import CaseResult, TestOverrides, Verdict, VisualCase
from quant_guard.config.project import CaseSpec, CheckpointSpec, RenderDefaults, parse_config
from quant_guard.run import case_plan
from quant_guard.run.gate import run_case
from quant_guard.model.render import RenderRequest, render
from quant_guard.config.schemes import FLOAT8_E4M3FN, REFERENCE, Scheme
from quant_guard.run.session import QuantGuardSession, RunSettings
from quant_guard.config.units import format_bytes

MIB = 2**20
RENDER = RenderDefaults(steps=2, width=64, height=64)
# The tiny checkpoint holds about 6 MiB of bf16 weights; its layers are KiB, so the device's
# segments are scaled down with them (PyTorch's are 2 MiB) and the limits are in KiB.
TOTAL, CONTEXT, SEGMENT = 64 * MIB, 300 * 2**10, 8 * 2**10
OFFLOAD_LIMIT = 600 * 2**10  # under what all layers of a component take


def _spec(checkpoint_id: str = "flux", **kwargs: Any) -> CheckpointSpec:
    # a short prompt: T5's 512x512 attention biases would dwarf the tiny weights
    return CheckpointSpec(id=checkpoint_id, embedded="tiny", components={}, device="cuda", render=RENDER,
                          thresholds=ANY_IMAGE, t5_sequence_length=8, **kwargs)


RESIDENT = _spec()
OFFLOAD = _spec(cpu_offload=True, vram_limit_bytes=OFFLOAD_LIMIT)


def _cases(spec: CheckpointSpec, n: int = 2) -> list[VisualCase]:
    return [VisualCase(spec, CaseSpec(id=f"c{i}", prompt="a red circle", seeds=(0,), steps=None, width=None,
                                      height=None, guidance=None, checkpoints=(spec.id,)), 0) for i in range(n)]


def _session(tmp_path: Path, *, update: bool) -> QuantGuardSession:
    config = parse_config({}, file=tmp_path / "qg.toml")
    return QuantGuardSession(config, RunSettings(update_golden=update, golden_dir=tmp_path / "golden",
                                                 report_dir=tmp_path / "report"))


def _figures(results: list[CaseResult]) -> list[tuple[int | None, ...]]:
    out = []
    for r in results:
        assert r.passed, r.reason
        assert r.candidate_render is not None
        m = r.candidate_render.memory
        out.append((m.at_start_bytes, m.peak_bytes, m.reserved_bytes, m.device_bytes))
    return out


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCudaDevice]:
    pipelines.prepare_diffsynth()
    import diffsynth.pipelines.flux_image  # noqa: F401 - imported for real before torch.cuda is faked

    device = FakeCudaDevice(TOTAL, context_bytes=CONTEXT, segment_bytes=SEGMENT)
    device.install(monkeypatch)
    # the fake models the device's memory, not its arithmetic: the judge's measures run on the CPU
    monkeypatch.setattr(case_plan, "judge_device", lambda device: "cpu")
    with device:
        yield device


@pytest.mark.parametrize("spec", [RESIDENT, OFFLOAD], ids=["resident", "cpu-offload"])
def test_the_candidate_figures_do_not_depend_on_what_ran_before(tmp_path: Path, gpu: FakeCudaDevice,
                                                                spec: CheckpointSpec) -> None:
    updating = _session(tmp_path, update=True)
    update_run = _figures([run_case(updating, vc, TestOverrides()) for vc in _cases(spec)])
    updating.release_pipelines()
    assert gpu.allocated == 0  # everything left the device

    checking = _session(tmp_path, update=False)
    check_run = _figures([run_case(checking, vc, TestOverrides()) for vc in _cases(spec)])
    candidate = checking.pipeline(spec, FLOAT8_E4M3FN)
    # resident: every weight of the candidate's pipeline is on the device, nothing else;
    # cpu-offload: every layer went back to host memory at the end of the render
    weights = gpu.bytes_of(candidate)
    assert gpu.allocated == weights
    assert (weights > 0) is (spec is RESIDENT)
    del candidate
    checking.release_pipelines()

    after_other = _session(tmp_path, update=False)
    other = after_other.pipeline(_spec("other"), REFERENCE)  # another checkpoint's bf16 pipeline rendered first
    render(other, RenderRequest("x", 0, 2, 64, 64, 3.5, 8))
    del other
    after_checkpoint = _figures([run_case(after_other, vc, TestOverrides()) for vc in _cases(spec, 1)])

    assert update_run == check_run == after_checkpoint * 2
    at_start, peak, reserved, device = check_run[0]
    assert at_start == weights and peak is not None and reserved is not None
    assert at_start < peak <= reserved and device == CONTEXT + reserved


def test_vram_limit_decides_how_much_stays_on_the_device(tmp_path: Path, gpu: FakeCudaDevice) -> None:
    """DiffSynth keeps a layer on the device after its forward only while the device's used memory
    is under ``vram_limit``: the render's peak grows with the limit, and with none ("auto" here:
    the fake device's total less 0.5 GiB) every layer of a component stays."""
    gpu.total = GIB
    peaks = []
    for limit in (0, OFFLOAD_LIMIT, None):
        session = _session(tmp_path, update=True)
        result = run_case(session, _cases(_spec(cpu_offload=True, vram_limit_bytes=limit), 1)[0], TestOverrides())
        assert result.passed and result.candidate_render is not None and result.memory_plan is not None
        memory = result.candidate_render.memory
        assert memory.at_start_bytes == 0  # cpu-offload: every weight lives in host memory between renders
        peaks.append(memory.peak_bytes)
        dit_bytes = result.candidate_render.dit_weight_bytes
        session.release_pipelines()
    assert peaks[0] < peaks[1] < peaks[2]
    assert peaks[1] < dit_bytes <= peaks[2]  # under a limit the DiT never is on the device whole; without, it is


def test_the_reference_render_is_measured_under_the_same_plan(tmp_path: Path, gpu: FakeCudaDevice) -> None:
    result = run_case(_session(tmp_path, update=True), _cases(OFFLOAD)[0], TestOverrides())
    assert result.reference_render is not None and result.candidate_render is not None
    assert result.memory_plan is not None and result.memory_plan.vram_limit_bytes == OFFLOAD_LIMIT
    assert result.reference_render.memory.at_start_bytes == 0  # the bf16 DiT lives in host memory too
    for memory in (result.reference_render.memory, result.candidate_render.memory):
        assert memory.reserved_bytes is not None and memory.device_bytes == CONTEXT + memory.reserved_bytes


def test_resident_and_peak_limits(tmp_path: Path, gpu: FakeCudaDevice) -> None:
    session = _session(tmp_path, update=True)
    tight = TestOverrides(peak_memory_bytes=MIB, resident_memory_bytes=MIB)
    result = run_case(session, _cases(RESIDENT)[0], tight)
    assert result.verdict is Verdict.BUDGET_FAILED and result.candidate_render is not None
    assert [(c.name, c.passed) for c in result.budget_checks] == [("peak VRAM (device used)", False),
                                                                  ("resident VRAM", False)]
    resident = result.candidate_render.memory.at_start_bytes
    assert f"resident VRAM {format_bytes(resident)} > max 1.00 MiB FAIL" in result.reason  # type: ignore[arg-type]


@pytest.mark.parametrize("counts, passes", [(PeakCounts.DEVICE, False), (PeakCounts.RESERVED, False),
                                            (PeakCounts.ALLOCATED, True)])
def test_the_peak_counts_the_context_and_the_allocators_reserve(tmp_path: Path, gpu: FakeCudaDevice,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 counts: PeakCounts, passes: bool) -> None:
    """A limit just above the allocated tensors' peak: the card needs more (the reserve, the
    context), so by default the limit fails; counting allocated tensors only, it passes."""
    probe = run_case(_session(tmp_path, update=True), _cases(RESIDENT, 1)[0], TestOverrides())
    assert probe.candidate_render is not None
    memory = probe.candidate_render.memory
    assert memory.peak_bytes is not None and memory.reserved_bytes is not None
    assert memory.peak_bytes < memory.reserved_bytes < memory.device_bytes == memory.reserved_bytes + CONTEXT  # type: ignore[operator]
    spec = _spec(limits=Budget(peak_memory_bytes=memory.peak_bytes + 256, peak_counts=counts))
    result = run_case(_session(tmp_path, update=False), _cases(spec, 1)[0], TestOverrides())
    assert result.passed is passes, result.reason


def test_out_of_memory_at_render_is_a_verdict_and_the_next_test_goes_on(tmp_path: Path, gpu: FakeCudaDevice,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    probe = _session(tmp_path, update=True)
    probe.pipeline(RESIDENT, REFERENCE)
    loaded = gpu.used()
    probe.release_pipelines()
    gpu.total = loaded + SEGMENT  # the bf16 reference loads, its render does not fit
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
        assert re.fullmatch(r"  allocated \S+ \S+, reserved \S+ \S+, peak \S+ \S+, device free \S+ \S+ of "
                            + re.escape(format_bytes(gpu.total)), lines[1])
        assert lines[2].startswith("  memory plan: resident on cuda: dit cuda/float8_e4m3fn")
    # released while the verdict is made, not only once the failed render's frames are gone
    assert left_after_release == [0, 0]


def test_out_of_memory_while_swapping_the_dit_is_not_a_loading_failure(tmp_path: Path, gpu: FakeCudaDevice,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from diffsynth.pipelines.flux_image import FluxImagePipeline

    real = FluxImagePipeline.download_and_load_models
    calls = {"n": 0}

    def oom_on_the_first_swap(self: Any, configs: list[Any], vram_limit: Any = None) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # 1 = the build, 2 = the first swap
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real(self, configs, vram_limit)

    monkeypatch.setattr(FluxImagePipeline, "download_and_load_models", oom_on_the_first_swap)
    session = _session(tmp_path, update=True)
    first, second = (run_case(session, vc, TestOverrides()) for vc in _cases(RESIDENT))
    assert first.verdict is Verdict.OUT_OF_MEMORY
    assert first.reason.startswith("out of memory while loading the float8_e4m3fn DiT of 'flux' "
                                   "(OutOfMemoryError: CUDA out of memory. Tried to allocate 9.00 GiB)")
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


def test_an_error_during_a_render_leaves_a_clean_device(tmp_path: Path, gpu: FakeCudaDevice,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A render that raises after DiffSynth kept the VAE's layers on the device (its final offload
    never runs): the error is the test's verdict, and the next test starts from an empty device."""
    from diffsynth.pipelines.flux_image import FluxImagePipeline

    gpu.total = GIB
    spec = _spec(cpu_offload=True)  # vram_limit "auto" (0.5 GiB here): every layer stays on the device after its forward
    first, second = _cases(spec)
    updating = _session(tmp_path, update=True)
    assert [run_case(updating, vc, TestOverrides()).verdict for vc in (first, second)] == [Verdict.UPDATED] * 2
    updating.release_pipelines()

    real = FluxImagePipeline.vae_output_to_image
    calls = {"n": 0}

    def fails_once(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom in the VAE output")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FluxImagePipeline, "vae_output_to_image", fails_once)
    session = _session(tmp_path, update=False)
    failed = run_case(session, first, TestOverrides())
    assert failed.verdict is Verdict.ERROR and "boom in the VAE output" in failed.reason
    assert gpu.allocated == 0
    passed = run_case(session, second, TestOverrides(resident_memory_bytes=0))
    assert passed.verdict is Verdict.PASSED, passed.reason
    assert passed.candidate_render is not None and passed.candidate_render.memory.at_start_bytes == 0


@pytest.mark.parametrize("spec, mode, dit_home, limit", [
    (RESIDENT, "resident", "cuda", None), (OFFLOAD, "cpu-offload", "cpu", OFFLOAD_LIMIT),
], ids=["resident", "cpu-offload"])
def test_check_and_update_runs_load_every_dit_under_the_checkpoint_plan(
        tmp_path: Path, gpu: FakeCudaDevice, monkeypatch: pytest.MonkeyPatch, spec: CheckpointSpec, mode: str,
        dit_home: str, limit: int | None) -> None:
    loads: list[tuple[str, str, str, str, int | None]] = []
    build, swap = pipelines.build_pipeline, pipelines.swap_components

    def note(how: str, scheme: Scheme, plan: Any) -> None:
        dit = plan.components["dit"]
        homes = {plan.components[c].home_device for c in ("text_encoder_clip", "text_encoder_t5", "vae")}
        assert homes == {dit_home} and plan.mode.value == mode
        loads.append((how, scheme.id, dit.home_device, dit.home_dtype, plan.vram_limit_bytes))

    def noting_build(checkpoint: Any, scheme: Scheme, device: str, *, plan: Any) -> Any:
        note("build", scheme, plan)
        return build(checkpoint, scheme, device, plan=plan)

    def noting_swap(pipe: Any, checkpoint: Any, scheme: Scheme, plan: Any, names: tuple[str, ...]) -> None:
        assert names == ("dit",)  # a DiT-only scheme swaps the DiT alone
        note("swap", scheme, plan)
        swap(pipe, checkpoint, scheme, plan, names)

    monkeypatch.setattr(pipelines, "build_pipeline", noting_build)
    monkeypatch.setattr(pipelines, "swap_components", noting_swap)
    for vc in _cases(spec):
        assert run_case(_session(tmp_path, update=True), vc, TestOverrides()).passed
    reference = ("build", "bf16", dit_home, "bfloat16", limit)
    assert loads == [reference, ("swap", "float8_e4m3fn", dit_home, "float8_e4m3fn", limit)] * 2
    loads.clear()
    assert run_case(_session(tmp_path, update=False), _cases(spec)[0], TestOverrides()).passed
    assert loads == [("build", "float8_e4m3fn", dit_home, "float8_e4m3fn", limit)]


def test_the_report_shows_the_figure_the_peak_limit_counted() -> None:
    from quant_guard.judge.budgets import BudgetCheck
    from quant_guard.judge.budgets import MemoryStats, RenderSummary
    from quant_guard.report.records import to_jsonable
    from quant_guard.report.view import build_view

    memory = MemoryStats("cuda", 9 * GIB, reserved_bytes=9 * GIB + MIB, at_start_bytes=0, device_bytes=10 * GIB)
    result = CaseResult(_cases(OFFLOAD)[0], Verdict.BUDGET_FAILED, "budget exceeded",
                        candidate_render=RenderSummary(step_times_s=(1.0,), total_s=1.0, memory=memory,
                                                       dit_weight_bytes=0),
                        budget_checks=(BudgetCheck("peak VRAM (device used)", 10.0 * GIB, 9.5 * GIB, "bytes"),))
    data = to_jsonable(result)
    assert data["candidate_render"]["memory"]["device_bytes"] == 10 * GIB
    record = {**data, "id": "flux-c0-s0", "checkpoint": "flux", "case": "c0", "seed": 0, "prompt": "p",
              "scheme": "float8_e4m3fn", "limits": to_jsonable(OFFLOAD.limits), "passed": False, "outcome": "failed"}
    rows = {row.cells[0].text: [c.text for c in row.cells[1:]] for row in build_view({"results": [record]}).cases[0].budget}
    assert rows["peak VRAM, candidate"] == ["10.00 GiB (device used); allocated 9.00 GiB",
                                            "peak VRAM (device used) ≤ 9.50 GiB", "FAIL"]


def test_the_doctors_full_size_run_measures_the_peak_its_limit_counts(tmp_path: Path, gpu: FakeCudaDevice,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``doctor --full-size`` compares the checkpoint's peak limit with the figure the gate would:
    the device's used memory by default (context + the allocator's reserve), not the allocated
    tensors alone, so the doctor cannot call a card big enough that the gate then fails on."""
    from quant_guard.tools import synthetic
    from quant_guard.tools.full_size import FullSizeRequest, run_full_size
    from quant_guard.tools.synthetic import ARCHITECTURES

    # the random weights are drawn on the host (a CUDA generator is not part of the modelled device)
    write = synthetic.write_random_checkpoint
    monkeypatch.setattr(synthetic, "write_random_checkpoint", lambda *a, **k: write(*a, **{**k, "device": "cpu"}))

    request = FullSizeRequest(ARCHITECTURES["tiny"], "cuda", width=64, height=64, steps=2, work_dir=tmp_path)
    last = run_full_size(request, RESIDENT)[-1]
    assert not last.error and last.peak_bytes is not None
    assert gpu.max_memory_allocated() < gpu.max_memory_reserved()
    assert last.peak_bytes == CONTEXT + gpu.max_memory_reserved()  # the last render's device figure
    assert dict(last.component_resident) == dict(last.component_bytes) and last.component_bytes  # all on the device
    offloaded = run_full_size(FullSizeRequest(ARCHITECTURES["tiny"], "cuda", width=64, height=64, steps=1,
                                              work_dir=tmp_path), OFFLOAD)[-1]
    assert not offloaded.error and offloaded.component_bytes == last.component_bytes
    assert dict(offloaded.component_resident) == dict.fromkeys(dict(last.component_bytes), 0)  # all in host memory


# ---- every family's embedded tiny under the same plans --------------------------------------------

FAMILY_TINIES = ("tiny-qwen-image", "tiny-z-image", "tiny-flux2")


def _family_spec(embedded: str, **kwargs: Any) -> CheckpointSpec:
    from dataclasses import replace as replaced

    from quant_guard.config.families import EMBEDDED

    own = EMBEDDED[embedded]
    return CheckpointSpec(id=embedded, embedded=embedded, components={}, family=own.family, device="cuda",
                          render=replaced(own.render, steps=2), thresholds=ANY_IMAGE, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("embedded", FAMILY_TINIES)
def test_every_family_follows_its_memory_plan(tmp_path: Path, embedded: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """DiffSynth's own VRAM management of each family decides what lives on the (fake) device:
    resident, every weight of the candidate's pipeline stays on it; with ``cpu_offload`` nothing is
    there when a render begins, and ``vram_limit`` decides how much of the DiT stays during one."""
    from quant_guard.model.families import embedded_family

    family = embedded_family(embedded)
    assert family.tiny is not None
    pipelines.prepare_diffsynth(family)  # the family's DiffSynth modules, imported for real before torch.cuda is faked
    family.pipeline_type()
    device = FakeCudaDevice(GIB, context_bytes=CONTEXT, segment_bytes=SEGMENT)
    device.install(monkeypatch)
    monkeypatch.setattr(case_plan, "judge_device", lambda device: "cpu")
    with device:
        resident = _family_spec(embedded)
        session = _session(tmp_path / "resident", update=True)
        result = run_case(session, _cases(resident, 1)[0], TestOverrides())
        assert result.passed, result.reason
        assert result.candidate_render is not None
        weights = device.bytes_of(session.pipeline(resident, FLOAT8_E4M3FN))
        assert weights > 0 and result.candidate_render.memory.at_start_bytes == weights
        session.release_pipelines()
        assert device.allocated == 0

        peaks = []
        for limit in (0, OFFLOAD_LIMIT, None):
            session = _session(tmp_path / f"offload-{limit}", update=True)
            result = run_case(session, _cases(_family_spec(embedded, cpu_offload=True, vram_limit_bytes=limit), 1)[0],
                              TestOverrides())
            assert result.passed and result.candidate_render is not None, result.reason
            memory = result.candidate_render.memory
            assert memory.at_start_bytes == 0  # every weight lives in host memory between renders
            peaks.append(memory.peak_bytes)
            dit_bytes = result.candidate_render.dit_weight_bytes
            session.release_pipelines()
        # the render's peak grows with the limit (a stage other than the denoising loop, such as the
        # VAE decode, may set it under a small one); without a limit the whole DiT is on the device at
        # once, under one never all the pipeline's weights
        assert peaks[0] <= peaks[1] < peaks[2]
        assert dit_bytes <= peaks[2] and peaks[1] < weights


def test_the_render_records_each_components_weights_on_the_device(tmp_path: Path, gpu: FakeCudaDevice) -> None:
    """As the denoising loop begins: resident, every component's weights are on the device (a T5
    stored in float8 with half the bytes of its bf16 self); under ``cpu_offload`` DiffSynth keeps
    every weight in host memory until a layer's forward moves it, so none is on the device."""
    from quant_guard.config.schemes import ComponentScheme

    t5_float8 = Scheme("t5-float8", others=(("text_encoder_t5", ComponentScheme("float8_e4m3fn")),))
    request = RenderRequest("a red circle", 0, 2, 64, 64, 3.5, 8)
    summaries = {}
    for spec, schemes in ((RESIDENT, (REFERENCE, t5_float8)), (OFFLOAD, (t5_float8,))):
        session = _session(tmp_path, update=True)  # resident: the T5 swapped in the bf16 pipeline
        for scheme in schemes:
            summaries[spec.cpu_offload, scheme.id] = render(session.pipeline(spec, scheme), request).summary()
        session.release_pipelines()
    bf16, t5_f8, offloaded = summaries[False, "bf16"], summaries[False, "t5-float8"], summaries[True, "t5-float8"]
    assert set(bf16.component_resident_bytes) == {"dit", "text_encoder_clip", "text_encoder_t5", "vae"}
    for resident in (bf16, t5_f8):
        assert resident.component_resident_bytes == resident.component_weight_bytes
        assert sum(resident.component_resident_bytes.values()) <= resident.memory.at_start_bytes  # type: ignore[operator]
    assert t5_f8.component_resident_bytes["text_encoder_t5"] * 2 == bf16.component_resident_bytes["text_encoder_t5"]
    assert t5_f8.component_resident_bytes["dit"] == bf16.component_resident_bytes["dit"] > 0
    assert offloaded.component_weight_bytes == t5_f8.component_weight_bytes  # stored alike, wherever it lives
    assert offloaded.component_resident_bytes == dict.fromkeys(bf16.component_resident_bytes, 0)
