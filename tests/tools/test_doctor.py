"""quant-guard doctor: the machine and checkpoint report, the plausibility of limits on a
(fake) GPU, and the --full-size run, executed here at the tiny size through the same code
(random weights written, bf16 and float8 pipelines built by build_pipeline, rendered by render,
one at a time, under the checkpoint's memory plan)."""

from __future__ import annotations

import gc
import json
import re
import weakref
from pathlib import Path
from typing import Any

import pytest

from helpers import sparse_safetensors
from quant_guard.cli import main as cli_main
from quant_guard.config.families import FAMILIES
from quant_guard.config.project import CheckpointSpec, ComponentSource, RenderDefaults
from quant_guard.config.limits import Budget
from quant_guard.tools.doctor import (
    CheckpointFiles,
    Gpu,
    Measured,
    Status,
    checkpoint_files,
    disk_findings,
    find_config,
    limit_findings,
    scheme_file_findings,
)
from quant_guard.tools.full_size import FullSizeRequest, Measurement
from quant_guard.tools.synthetic import ARCHITECTURES, FULL_SIZE

FLUX_DEV, TINY = FULL_SIZE, ARCHITECTURES["tiny"]

GIB = 2**30
# FLUX.1-dev's released files in bf16: DiT, CLIP-L, T5-XXL encoder, VAE
FLUX_FILES = CheckpointFiles({"dit": int(22.2 * GIB), "text_encoder_clip": int(0.23 * GIB),
                              "text_encoder_t5": int(9.1 * GIB), "vae": int(0.16 * GIB),
                              "tokenizer_clip": 2**20, "tokenizer_t5": 2**21}, ())


def real_spec(*, cpu_offload: bool = False, peak: str | None = None, step_time: float | None = None,
              components: dict[str, ComponentSource] | None = None) -> CheckpointSpec:
    from quant_guard.config.units import parse_bytes

    return CheckpointSpec(id="flux", embedded=None, components=components or {}, device="cuda", marks=("gpu",),
                          cpu_offload=cpu_offload, render=RenderDefaults(steps=20, width=1024, height=1024),
                          limits=Budget(peak_memory_bytes=parse_bytes(peak) if peak else None, step_time_s=step_time))


def texts(findings: list[Any], status: Status | None = None) -> list[str]:
    return [f"{f.topic}: {f.text}" for f in findings if status is None or f.status is status]


# ---- plausibility of limits -----------------------------------------------------------------------

def test_a_12_gb_gpu_cannot_hold_a_flux_checkpoint_without_offload() -> None:
    gpu = [Gpu(0, "Fake RTX 3060", 12 * GIB)]
    findings = limit_findings(real_spec(peak="10 GiB"), FLUX_FILES, gpu)
    failed = texts(findings, Status.FAIL)
    assert any(t.startswith("goldens: the bf16 reference's weights (31.69 GiB) do not fit") for t in failed)
    assert any(t.startswith("weights: the float8_e4m3fn candidate's weights (20.59 GiB) do not fit this GPU; set "
                            "cpu_offload = true") for t in failed)
    offloaded = limit_findings(real_spec(peak="10 GiB", cpu_offload=True), FLUX_FILES, gpu)
    assert texts(offloaded, Status.FAIL) == []
    assert any("depends on what the memory plan onloads; measure with --full-size" in t for t in texts(offloaded))


def test_limits_against_an_80_gb_gpu() -> None:
    gpu = [Gpu(0, "Fake H100", 80 * GIB)]
    too_low = limit_findings(real_spec(peak="10 GiB"), FLUX_FILES, gpu)
    assert texts(too_low, Status.FAIL) == [
        "peak_vram: 10.00 GiB is below the float8_e4m3fn candidate's weights (20.59 GiB) plus activations"]
    fine = limit_findings(real_spec(peak="40 GiB"), FLUX_FILES, gpu)
    assert texts(fine, Status.OK) == ["peak_vram: 40.00 GiB leaves room above the weights (20.59 GiB)"]
    above = limit_findings(real_spec(peak="100 GiB"), FLUX_FILES, gpu)
    assert texts(above, Status.WARN) == ["peak_vram: 100.00 GiB is above this GPU's memory: it can never fail here"]


def test_a_gpu_checkpoint_on_a_machine_without_cuda_fails() -> None:
    assert texts(limit_findings(real_spec(), FLUX_FILES, []), Status.FAIL) == [
        "device: needs CUDA (device 'cuda' or marked gpu); torch sees none here"]


def _measured(peak_gib: float, median_s: float, *, error: str = "", size: int = 1024) -> Measured:
    request = FullSizeRequest(FLUX_DEV, "cuda", width=size, height=size)
    return Measured(request, [Measurement("bf16", True, "cuda", 60.0, int(24 * GIB), int(26 * GIB), 1.0, 20),
                              Measurement("float8_e4m3fn", True, "cuda", 40.0, int(peak_gib * GIB) // 2,
                                          int(peak_gib * GIB), median_s, 20, error=error)])


def test_measured_candidate_against_the_limits() -> None:
    gpu = [Gpu(0, "Fake 16 GB", 16 * GIB)]
    spec = real_spec(peak="10 GiB", step_time=9.5, cpu_offload=True)
    ok = limit_findings(spec, FLUX_FILES, gpu, _measured(9.0, 8.0))
    assert texts(ok, Status.OK) == [
        "peak_vram: float8_e4m3fn: limit 10.00 GiB, 9.00 GiB measured at flux.1-dev size, 1024x1024",
        "step_time: float8_e4m3fn: limit 9.50 s, median 8.00 s measured at flux.1-dev size, 1024x1024"]
    assert texts(ok, Status.UNCHECKED) == []  # every limit was measured
    over = limit_findings(spec, FLUX_FILES, gpu, _measured(11.0, 12.0))
    assert [t.split(",")[0] for t in texts(over, Status.FAIL)] == ["peak_vram: float8_e4m3fn: limit 10.00 GiB",
                                                                   "step_time: float8_e4m3fn: limit 9.50 s"]
    oom = limit_findings(spec, FLUX_FILES, gpu, _measured(11.0, 1.0, error="out of memory: CUDA out of memory"))
    assert texts(oom, Status.FAIL) == ["measured: float8_e4m3fn: out of memory: CUDA out of memory (measured at "
                                       "flux.1-dev size, 1024x1024)"]
    other_size = limit_findings(spec, FLUX_FILES, gpu, _measured(11.0, 12.0, size=512))
    assert texts(other_size, Status.FAIL) == [] and any("not compared" in t for t in texts(other_size))
    # what was not measured is not vouched for
    assert [t.split(":")[0] for t in texts(other_size, Status.UNCHECKED)] == ["peak_vram", "step_time"]


# ---- files and disk ---------------------------------------------------------------------------------

def test_missing_files_are_estimated_at_flux_size_against_free_disk(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import quant_guard.tools.doctor as doctor

    monkeypatch.setenv("DIFFSYNTH_MODEL_BASE_PATH", str(tmp_path / "models"))
    vae = tmp_path / "models" / "org" / "flux" / "ae.safetensors"
    vae.parent.mkdir(parents=True)
    vae.write_bytes(b"x" * 1000)
    components = {name: ComponentSource(model_id="org/flux", origin_file_pattern=f"{name}.safetensors")
                  for name in FAMILIES["flux"].components}
    components["vae"] = ComponentSource(model_id="org/flux", origin_file_pattern="ae.safetensors")
    spec = real_spec(components=components)
    files = checkpoint_files(spec)
    assert files.present_bytes == {"vae": 1000} and "vae" not in files.missing and "dit" in files.missing
    monkeypatch.setattr(doctor, "_free_bytes", lambda folder: 10 * GIB)
    [short] = disk_findings(spec, files)
    assert short.status is Status.FAIL
    assert re.match(r"missing dit, text_encoder_clip, text_encoder_t5, tokenizer_clip, tokenizer_t5: "
                    r"about 31\.\d\d GiB to download at FLUX\.1-dev size; 10\.00 GiB free at .*models$",
                    short.text), short.text
    monkeypatch.setattr(doctor, "_free_bytes", lambda folder: 100 * GIB)
    assert disk_findings(spec, files)[0].status is Status.OK


def test_a_missing_local_file_is_a_failure_not_a_download(tmp_path: Path, tiny_files: dict[str, Path]) -> None:
    """A component given as a local path that does not exist is named as missing (DiffSynth
    downloads only model_id components); the checkpoint's other files are fine."""
    nope = tmp_path / "models" / "nope" / "flux1-dev.safetensors"
    components = {name: ComponentSource(path=tiny_files[name]) for name in FAMILIES["flux"].components}
    components["dit"] = ComponentSource(path=nope)
    spec = real_spec(components=components)
    findings = disk_findings(spec, checkpoint_files(spec))
    assert texts(findings) == [f"files: dit: local file {nope} does not exist"]
    assert [f.status for f in findings] == [Status.FAIL]


def test_every_schemes_own_file_is_checked(tmp_path: Path, tiny_files: dict[str, Path]) -> None:
    """Each scheme's dit file: missing, damaged or of another float8 dtype is a FAIL naming the
    scheme and the file, as the gate would say it; a good one is ok; a model_id still to download
    is only named."""
    import dataclasses

    from quant_guard.config.schemes import Quantization, Scheme

    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(tiny_files["dit"].read_bytes()[:100])
    schemes = (Scheme("f8-missing", storage_dtype="float8_e4m3fn", dit=ComponentSource(path=tmp_path / "nope.safetensors")),
               Scheme("f8-cut", storage_dtype="float8_e4m3fn", dit=ComponentSource(path=truncated)),
               Scheme("nf4-file", quantization=Quantization("bitsandbytes_nf4", load_prequantized=True),
                      dit=ComponentSource(path=tiny_files["dit"])),
               Scheme("hub", quantization=Quantization("bitsandbytes_nf4", load_prequantized=True),
                      dit=ComponentSource(model_id="org/none", origin_file_pattern="x.safetensors")),
               Scheme("plain", storage_dtype="float8_e5m2"))
    spec = dataclasses.replace(real_spec(), schemes=schemes)
    found = {f.topic: (f.status, f.text) for f in scheme_file_findings(spec)}
    assert set(found) == {"scheme f8-missing", "scheme f8-cut", "scheme nf4-file", "scheme hub"}
    assert found["scheme f8-missing"] == (Status.FAIL, f"checkpoint 'flux' scheme 'f8-missing' DiT: file "
                                                       f"{tmp_path / 'nope.safetensors'} does not exist")
    assert found["scheme f8-cut"][0] is Status.FAIL and "is truncated" in found["scheme f8-cut"][1]
    assert found["scheme nf4-file"][0] is Status.OK and str(tiny_files["dit"]) in found["scheme nf4-file"][1]
    assert found["scheme hub"] == (Status.INFO, "org/none:x.safetensors: to download")


def test_doctor_is_not_ready_when_a_schemes_file_is_missing(tmp_path: Path, tiny_files: dict[str, Path],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The whole command: a typo in one scheme's dit path is a problem, not "ready"."""
    components = "\n".join(f'{name} = "{path.as_posix()}"' for name, path in tiny_files.items())
    config = tmp_path / "qg.toml"
    config.write_text(f"""[tool.quant_guard]
[[tool.quant_guard.checkpoints]]
id = "files"
device = "cpu"
schemes = ["float8_e4m3fn", {{ id = "f8-file", storage = "float8_e4m3fn", dit = "dit-typo.safetensors" }}]
[tool.quant_guard.checkpoints.components]
{components}
""")
    assert cli_main(["doctor", "--qg-config", str(config)]) == 1
    out = capsys.readouterr().out
    assert re.search(rf"\[FAIL\] scheme f8-file +checkpoint 'files' scheme 'f8-file' DiT: file "
                     rf"{re.escape(str(tmp_path / 'dit-typo.safetensors'))} does not exist", out), out
    assert out.rstrip().endswith("doctor: 1 problem(s)")


def test_find_config_like_the_plugin(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[tool.quant_guard]\ngolden_dir = 'g'\n")
    assert find_config(None, project / "sub") == project / "pyproject.toml"
    (project / "pyproject.toml").write_text("[tool.pytest.ini_options]\nqg_config = 'qg.toml'\n")
    assert find_config(None, project / "sub") == project / "qg.toml"
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert find_config(None, project) is None
    assert find_config(tmp_path / "other.toml", project) == tmp_path / "other.toml"


# ---- the whole command ---------------------------------------------------------------------------------

def test_doctor_reports_a_gpu_checkpoint_without_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    import quant_guard.tools.doctor as doctor
    from quant_guard.model.host_memory import MachineMemory

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("DIFFSYNTH_MODEL_BASE_PATH", str(tmp_path / "models"))
    monkeypatch.setattr(doctor, "machine_memory", lambda: MachineMemory(128 * GIB, 100 * GIB, "test"))
    # the disk too: a runner with less free space than Qwen-Image's 54 GiB would add a problem
    monkeypatch.setattr(doctor, "_free_bytes", lambda folder: 1000 * GIB)
    from quant_guard.config.project import load_config

    config = Path(__file__).resolve().parents[2] / "pyproject.toml"  # the repository's: tinies + gpu checkpoints
    assert cli_main(["doctor", "--qg-config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "[warn] CUDA           torch sees no CUDA device" in out
    gpu = [c.id for c in load_config(config).checkpoints if "gpu" in c.marks]
    assert "majicflus" in gpu and len(gpu) > 1  # FLUX.1 and the other families' full-size checkpoints
    for checkpoint in gpu:  # each of them, whatever its family, is planned and reported
        assert re.search(rf"^checkpoint {checkpoint} \[gpu\]\n(.*\n)*  \[FAIL\] device         needs CUDA", out, re.M)
    assert "  [  ok] LPIPS weights" in out and out.rstrip().endswith(f"doctor: {len(gpu)} problem(s)")


TINY_PLAN_CONFIG = """
[tool.quant_guard]
golden_dir = "golden"

[[tool.quant_guard.checkpoints]]
id = "tiny-files"
device = "cpu"
cpu_offload = {offload}
disk_offload = {disk}
schemes = {schemes}
render = {{ steps = 3, size = "64x64" }}
limits = {{ {limits} }}
[tool.quant_guard.checkpoints.components]
{components}

[[tool.quant_guard.cases]]
id = "c"
prompt = "a red circle"
seeds = [0]
"""
# every scheme kind that runs on a CPU: float8 storage, an 8-bit and a 4-bit method
CPU_SCHEMES = ("float8_e4m3fn", "torchao_int8_w8a16", "bitsandbytes_nf4")


def _tiny_plan_config(tmp_path: Path, *, offload: bool = False, disk: bool = False,
                      schemes: tuple[str, ...] = CPU_SCHEMES, limits: str = 'peak_vram = "3 GiB"') -> Path:
    from quant_guard.model.tiny.build import ensure_tiny_checkpoint

    tiny = ensure_tiny_checkpoint()
    components = "\n".join(f'{name} = "{getattr(tiny, name)}"' for name in FAMILIES["flux"].components)
    config = tmp_path / "qg.toml"
    config.write_text(TINY_PLAN_CONFIG.format(offload=str(offload).lower(), disk=str(disk).lower(),
                                              schemes=json.dumps(list(schemes)), limits=limits, components=components))
    return config


def _full_size(config: Path, tmp_path: Path) -> tuple[int, str]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    code = cli_main(["doctor", "--qg-config", str(config), "--full-size", "--shapes", "tiny", "--device", "cpu",
                     "--size", "64x64", "--steps", "3", "--work-dir", str(work)])
    assert list(work.iterdir()) == []  # the random weights are gone
    return code, ""


def _rows(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in ("bf16", *CPU_SCHEMES):
            rows[cells[0]] = cells
    return rows


@pytest.mark.parametrize("offload, disk", [(False, False), (True, True)])
def test_full_size_runs_the_gate_code_at_tiny_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], offload: bool,
                                                   disk: bool) -> None:
    """The bf16 reference is built, then every configured scheme's DiT is swapped in, as the
    session does (never two pipelines or two DiTs), under the checkpoint's plan (disk offload
    included); each row carries the planned and measured host RAM, the render's figures and
    the limits' verdicts, and the suggested limits follow the table."""
    import quant_guard.model.pipelines as pipelines
    from quant_guard.model.memory_plan import plan_memory
    from quant_guard.config.schemes import REFERENCE

    config = _tiny_plan_config(tmp_path, offload=offload, disk=disk)
    loads: list[tuple[str, str, Any, int]] = []  # (build|swap, scheme, plan, pipelines alive before it)
    alive: list[weakref.ref[Any]] = []
    real_build, real_swap = pipelines.build_pipeline, pipelines.swap_components

    def build(resolved: Any, scheme: Any, device: str, *, plan: Any = None) -> Any:
        gc.collect()
        loads.append(("build", scheme.id, plan, sum(ref() is not None for ref in alive)))
        assert resolved.id == "synthetic-tiny" and device == "cpu"
        pipe = real_build(resolved, scheme, device, plan=plan)
        alive.append(weakref.ref(pipe))
        return pipe

    def swap(pipe: Any, resolved: Any, scheme: Any, plan: Any, names: tuple[str, ...]) -> None:
        gc.collect()
        assert names == ("dit",)  # DiT-only schemes: the DiT alone is read again
        loads.append(("swap", scheme.id, plan, sum(ref() is not None for ref in alive)))
        real_swap(pipe, resolved, scheme, plan, names)

    monkeypatch.setattr(pipelines, "build_pipeline", build)
    monkeypatch.setattr(pipelines, "swap_components", swap)
    code, _ = _full_size(config, tmp_path)
    out = capsys.readouterr().out
    assert code == 0, out
    from quant_guard.config.project import load_config

    spec = load_config(config).checkpoint("tiny-files")
    expected_plans = [plan_memory(cpu_offload=offload, vram_limit_bytes=None, scheme=scheme, device="cpu",
                                  device_total_bytes=None, disk_offload=disk) for scheme in (REFERENCE, *spec.schemes)]
    assert [(kind, scheme, plan) for kind, scheme, plan, _ in loads] == [
        ("build", "bf16", expected_plans[0]),
        *[("swap", s.id, plan) for s, plan in zip(spec.schemes, expected_plans[1:])]]
    assert {n for *_, n in loads} == {0, 1}  # one pipeline: built once, its DiT swapped
    if disk:
        assert expected_plans[1].components["dit"].home_device == "disk"
        assert expected_plans[2].components["dit"].home_device == "cpu"  # quantized on load: DiffSynth refuses disk
    assert not (tmp_path / "golden").exists()
    assert "full size: tiny (FLUX.1) under checkpoint tiny-files's memory plan" in out
    rows = _rows(out)
    assert list(rows) == ["bf16", *CPU_SCHEMES], out
    gb = r"\d+\.\d GB"
    for scheme, cells in rows.items():
        assert cells[1] == ("build" if scheme == "bf16" else "swap")
        assert re.fullmatch(gb, cells[2]) and re.fullmatch(gb, cells[3]), cells  # host RAM planned, measured
        assert cells[4] == str(offload).lower()
        assert re.fullmatch(gb, cells[5]) and re.fullmatch(gb, cells[6]), cells
        assert re.fullmatch(r"\d+\.\d{3} s", cells[7]) and re.fullmatch(r"\d+\.\d s", cells[8])
        assert "host_ram ok" in cells[9]
        assert ("peak_vram ok" in cells[9]) is (scheme != "bf16")  # limits apply to candidates
    assert "36.2 GB peak (diffusers FLUX.1-dev 1024², H100)" in rows["bf16"][10], out
    assert ("9.8 GB at load, 186 s / 20 steps" in rows["float8_e4m3fn"][10]) is offload
    suggested = re.search(r'limits\]  peak_vram = "([\d.]+) GiB", resident_vram = "[\d.]+ GiB", '
                          r'step_time = "([\d.]+) s"', out)
    assert suggested, out
    peaks = [m for m in re.findall(r"\| (\d+\.\d) GB \| \d+\.\d{3} s", out)]
    # the table rounds to 0.1 GB: the suggestion is at least the candidates' largest peak x 1.10
    assert float(suggested.group(1)) * 2**30 / 1e9 >= (max(float(p) for p in peaks[1:]) - 0.05) * 1.10
    assert "[  ok] peak_vram" in out and "[todo]" not in out
    assert out.rstrip().endswith("doctor: ready")


def test_suggested_limits_are_the_candidates_largest_figures_times_a_margin() -> None:
    from quant_guard.tools.full_size import PEAK_MARGIN, RESIDENT_FLOOR, STEP_MARGIN, suggested_limits

    runs = [Measurement("bf16", True, "cuda", 60.0, 30 * GIB, 33 * GIB, 20.0, 20),  # the reference: no limit
            Measurement("float8_e4m3fn", True, "cuda", 40.0, 0, 9 * GIB, 8.0, 20),
            Measurement("bitsandbytes_nf4", True, "cuda", 40.0, GIB // 10, 8 * GIB, 9.0, 20),
            Measurement("torchao_fp8_w8a16", True, "cuda", 40.0, error="out of memory: CUDA")]
    limits = suggested_limits(runs)
    assert limits is not None
    assert limits.peak_bytes == pytest.approx(9 * GIB * PEAK_MARGIN, abs=GIB / 100)
    assert limits.resident_bytes >= RESIDENT_FLOOR and limits.resident_bytes < RESIDENT_FLOOR + GIB / 100
    assert limits.step_time_s == pytest.approx(9.0 * STEP_MARGIN)
    assert limits.toml() == 'peak_vram = "9.90 GiB", resident_vram = "256.00 MiB", step_time = "10.35 s"'
    assert suggested_limits(runs[:1]) is None and suggested_limits(runs[3:]) is None


def test_full_size_fails_each_limit_it_measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Every limit is checked against the measurement: resident, peak, step time, and the
    host RAM of the build against the machine's memory."""
    import quant_guard.tools.doctor as doctor
    from quant_guard.model.host_memory import MachineMemory

    monkeypatch.setattr(doctor, "machine_memory", lambda: MachineMemory(2**20, 2**20, "a 1 MiB test machine"))
    config = _tiny_plan_config(tmp_path, schemes=("float8_e4m3fn",),
                               limits='peak_vram = "1 MiB", resident_vram = "1 MiB", step_time = "1 us"')
    code, _ = _full_size(config, tmp_path)
    out = capsys.readouterr().out
    assert code == 1, out
    failed = {line.split()[1] for line in out.splitlines() if line.startswith("  [FAIL]")}
    assert {"peak_vram", "resident_vram", "step_time", "host_ram"} <= failed, out
    assert re.search(r"\[FAIL\] host_ram +bf16 build: peak RSS [\d.]+ [KMG]iB of 1.00 MiB", out), out
    cells = _rows(out)["float8_e4m3fn"]
    assert all(f"{topic} FAIL" in cells[9] for topic in ("host_ram", "peak_vram", "resident_vram", "step_time"))


# ---- FLUX.1-dev shapes without the weights ---------------------------------------------------------------

def test_flux_dev_shapes_are_flux_dev_and_diffsynth_recognises_their_files(tmp_path: Path) -> None:
    from diffsynth.configs import MODEL_CONFIGS
    from diffsynth.core.loader import hash_model_file

    from quant_guard.tools.synthetic import file_bytes, register, state_shapes

    sizes = file_bytes(FLUX_DEV)
    assert 11.8e9 < sizes["dit"] / 2 < 12.0e9  # FLUX.1-dev's DiT: 11.9 B parameters
    assert 4.7e9 < sizes["text_encoder_t5"] / 2 < 4.8e9  # T5-XXL encoder, 4.76 B
    assert 1.2e8 < sizes["text_encoder_clip"] / 2 < 1.3e8  # CLIP-L text model
    register(FLUX_DEV)
    register(FLUX_DEV)  # idempotent
    models = "diffsynth.models"
    expected = {"dit": {("flux_dit", f"{models}.flux_dit.FluxDiT")},
                "text_encoder_clip": {("flux_text_encoder_clip", f"{models}.flux_text_encoder_clip.FluxTextEncoderClip")},
                "text_encoder_t5": {("flux_text_encoder_t5", f"{models}.flux_text_encoder_t5.FluxTextEncoderT5")},
                "vae": {("flux_vae_encoder", f"{models}.flux_vae.FluxVAEEncoder"),
                        ("flux_vae_decoder", f"{models}.flux_vae.FluxVAEDecoder")}}
    for name, tensors in state_shapes(FLUX_DEV).items():
        path = tmp_path / f"{name}.safetensors"
        sparse_safetensors(path, tensors)
        model_hash = hash_model_file(str(path))
        matches = [(c["model_name"], c["model_class"]) for c in MODEL_CONFIGS if c["model_hash"] == model_hash]
        assert len(matches) == len(set(matches)) and set(matches) == expected[name], name


def test_tiny_shapes_are_the_embedded_checkpoint() -> None:
    from quant_guard.tools.synthetic import state_shapes
    from quant_guard.model.tiny.architecture import clip_kwargs
    from quant_guard.judge.scenes import T5_SEQUENCE_LENGTH
    from quant_guard.model.tiny.build import ensure_tiny_checkpoint
    from safetensors import safe_open

    clip = next(c for c in TINY.classes if c.component == "text_encoder_clip")
    assert dict(clip.kwargs) == clip_kwargs() and TINY.t5_sequence_length == T5_SEQUENCE_LENGTH
    tiny = ensure_tiny_checkpoint()
    for name, tensors in state_shapes(TINY).items():
        with safe_open(str(getattr(tiny, name)), framework="pt") as f:
            shipped = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        if name == "text_encoder_t5":  # the tiny file stores the tied embedding table twice
            assert shipped.pop("encoder.embed_tokens.weight") == shipped["shared.weight"]
        assert shipped == {k: s for k, (s, _) in tensors.items()}


# ---- the plain command on a GPU runner: host RAM, unmeasured limits, the torch build -------------------

def _fake_gpu_runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ram_gib: float) -> Path:
    import quant_guard.tools.doctor as doctor
    from quant_guard.model.host_memory import MachineMemory

    monkeypatch.setattr(doctor, "gpus", lambda: [Gpu(0, "Fake RTX 4090", 24 * GIB)])  # what the gpu plans are for
    monkeypatch.setattr(doctor, "machine_findings", lambda devices: [])
    monkeypatch.setattr(doctor, "machine_memory", lambda: MachineMemory(int(ram_gib * GIB), int(ram_gib * GIB), "test"))
    monkeypatch.setattr(doctor, "_free_bytes", lambda folder: 1000 * GIB)
    monkeypatch.setenv("DIFFSYNTH_MODEL_BASE_PATH", str(tmp_path / "models"))
    return Path(__file__).resolve().parents[2] / "pyproject.toml"  # tinies + majicflus (gpu, cpu_offload) + others


def test_plain_doctor_does_not_call_an_unmeasured_offload_plan_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = _fake_gpu_runner(monkeypatch, tmp_path, 64)
    assert cli_main(["doctor", "--qg-config", str(config)]) == 0
    out = capsys.readouterr().out
    section = out[out.index("checkpoint majicflus"):]
    section = section[:section.index("\ncheckpoint ")] if "\ncheckpoint " in section else section
    todo = [line.split()[1] for line in section.splitlines() if line.startswith("  [todo]")]
    assert todo == ["peak_vram", "resident_vram", "step_time"], out
    assert "doctor: ready" not in out
    every_todo = sum(line.startswith("  [todo]") for line in out.splitlines())
    assert out.rstrip().endswith(f"{every_todo} check(s) marked todo need a measurement: run quant-guard doctor "
                                 "--full-size on this runner before calling it ready")
    # the plan's host RAM, per scheme, at FLUX.1-dev size (nothing downloaded yet)
    assert re.search(r"\[info\] host_ram +bf16: 33\.\d\d GiB at the peak of loading", section), section
    assert re.search(r"\[info\] host_ram +bitsandbytes_nf4: 33\.\d\d GiB at the peak of loading, 1\d\.\d\d GiB once "
                     r"loaded", section), section
    assert re.search(r"\[  ok\] host_ram +the largest, bf16, 33\.\d\d GiB at its peak, fits this machine's 64\.00 GiB",
                     section), section


def test_plain_doctor_fails_a_plan_larger_than_the_runners_ram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = _fake_gpu_runner(monkeypatch, tmp_path, 32)
    assert cli_main(["doctor", "--qg-config", str(config)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"\[FAIL\] host_ram +the bf16 pipeline needs about 33\.\d\d GiB of host RAM at the peak of its "
                     r"load, this machine has 32\.00 GiB: the run would stop before loading it; set disk_offload = "
                     r"true", out), out


def test_a_plan_already_on_disk_offload_is_not_told_to_set_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The repository's Wan 14B checkpoint has disk_offload on; its int8 scheme still quantizes a
    bf16 DiT in host memory (about 29 GiB): on a 16 GiB runner the remedy is a larger one."""
    config = _fake_gpu_runner(monkeypatch, tmp_path, 16)
    assert cli_main(["doctor", "--qg-config", str(config)]) == 1
    out = capsys.readouterr().out
    section = out[out.index("checkpoint wan2.1-t2v-14b"):]
    assert re.search(r"\[FAIL\] host_ram +the \S+ pipeline needs about \d+\.\d\d GiB of host RAM .* before loading "
                     r"it; use a larger runner \(disk_offload is on already\)", section), section


def test_torch_cuda_build_against_the_driver_and_the_requested_build() -> None:
    from quant_guard.tools.doctor import cuda_build_findings

    [old_driver] = cuda_build_findings("13.0", "570.86.15", None)
    assert old_driver.status is Status.FAIL and "needs an NVIDIA driver >= 580.65.06; this one is 570.86.15" in \
        old_driver.text and "QG_TORCH_CUDA=cu12x" in old_driver.text
    assert [f.status for f in cuda_build_findings("12.6", "570.86.15", "cu126")] == [Status.OK]
    assert [f.status for f in cuda_build_findings("13.0", "580.95.05", None)] == [Status.OK]
    wrong = cuda_build_findings("13.0", "580.95.05", "cu126")
    assert wrong[0].status is Status.FAIL and "QG_TORCH_CUDA=cu126 asks for a CUDA 12.6 build" in wrong[0].text
    assert cuda_build_findings(None, None, "cpu") == []
    assert cuda_build_findings("12.8", None, "cpu")[0].status is Status.FAIL


def test_doctor_reports_whether_the_text_check_can_read(monkeypatch: pytest.MonkeyPatch) -> None:
    import pytesseract

    from quant_guard.config.project import parse_config
    from quant_guard.tools.doctor import ocr_findings

    def config(expect: bool) -> Any:
        case = {"id": "sign", "prompt": "a sign", **({"expect_text": ["NEON CITY"]} if expect else {})}
        return parse_config({"checkpoints": [{"id": "tiny", "embedded": "tiny"}], "cases": [case]},
                            file=Path("/p/pyproject.toml"))

    (ok,) = ocr_findings(config(True))
    assert ok.status is Status.OK and re.fullmatch(r"Tesseract \d+\.\d+.* \(pytesseract [\d.]+\); 1 case\(s\) expect text",
                                                   ok.text), ok.text
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "no-such-tesseract")
    (missing,) = ocr_findings(config(True))
    assert missing.status is Status.FAIL and missing.text.startswith("case(s) sign expect text, but the Tesseract OCR")
    assert "apt-get install tesseract-ocr" in missing.text and "quant_guard[text]" in missing.text
    (unused,) = ocr_findings(config(False))
    assert unused.status is Status.WARN and unused.text.startswith("no case expects text yet")


# ---- schemes that quantize more than the DiT ------------------------------------------------------

T5 = "text_encoder_t5"


def test_a_schemes_own_file_of_another_component_is_checked(tmp_path: Path, tiny_files: dict[str, Path]) -> None:
    """Like the DiT's: a component's own file missing, of another float8 dtype or still to download
    is named under the scheme and the component; a good one is ok."""
    import dataclasses

    from quant_guard.config.schemes import ComponentScheme, Scheme
    from quant_guard.tools.quantize import quantize_file

    f8, e5 = tmp_path / "t5-f8.safetensors", tmp_path / "t5-e5.safetensors"
    quantize_file(tiny_files[T5], f8, dtype="float8_e4m3fn")
    quantize_file(tiny_files[T5], e5, dtype="float8_e4m3fn".replace("e4m3fn", "e5m2"))

    def t5_file(scheme_id: str, source: ComponentSource) -> Scheme:
        return Scheme(scheme_id, storage_dtype="float8_e4m3fn",
                      others=((T5, ComponentScheme("float8_e4m3fn", file=source)),))

    schemes = (t5_file("t5-good", ComponentSource(path=f8)),
               t5_file("t5-missing", ComponentSource(path=tmp_path / "nope.safetensors")),
               t5_file("t5-e5", ComponentSource(path=e5)),
               t5_file("t5-hub", ComponentSource(model_id="org/none", origin_file_pattern="t5.safetensors")),
               Scheme("t5-plain", others=((T5, ComponentScheme("float8_e4m3fn")),)))
    spec = dataclasses.replace(real_spec(), schemes=schemes)
    found = {f.topic: (f.status, f.text) for f in scheme_file_findings(spec)}
    assert set(found) == {f"scheme t5-{k} {T5}" for k in ("good", "missing", "e5", "hub")}
    assert found[f"scheme t5-good {T5}"][0] is Status.OK and str(f8) in found[f"scheme t5-good {T5}"][1]
    assert found[f"scheme t5-missing {T5}"] == (Status.FAIL, f"checkpoint 'flux' scheme 't5-missing' {T5}: file "
                                                             f"{tmp_path / 'nope.safetensors'} does not exist")
    assert found[f"scheme t5-e5 {T5}"][0] is Status.FAIL and "float8_e4m3fn" in found[f"scheme t5-e5 {T5}"][1]
    assert found[f"scheme t5-hub {T5}"] == (Status.INFO, "org/none:t5.safetensors: to download")


def test_the_plan_says_per_component_what_a_component_scheme_changes_and_saves(tmp_path: Path,
                                                                                tiny_files: dict[str, Path]) -> None:
    """At FLUX.1-dev size (nothing downloaded): a DiT-float8 + T5-int8 + VAE-float8 scheme halves
    each, the CLIP unchanged; a scheme's own pre-quantized T5 file is read as stored, at its size on disk,
    in the host-RAM plan (not the bf16 T5's)."""
    import dataclasses

    from quant_guard.config.schemes import ComponentScheme, Quantization, Scheme
    from quant_guard.tools.doctor import checkpoint_host_plans, component_findings, planned_component_bytes

    int8 = ComponentScheme(quantization=Quantization("torchao_int8_w8a16"))
    both = Scheme("dit-t5", storage_dtype="float8_e4m3fn",
                  others=((T5, int8), ("vae", ComponentScheme("float8_e4m3fn"))))
    own = tmp_path / "t5-f8.safetensors"
    own.write_bytes(b"\0" * 12345)
    t5_own = Scheme("t5-own", others=((T5, ComponentScheme("float8_e4m3fn", file=ComponentSource(path=own))),))
    spec = dataclasses.replace(real_spec(), schemes=(Scheme("float8_e4m3fn", storage_dtype="float8_e4m3fn"), both,
                                                     t5_own))
    planned = planned_component_bytes(spec, FLUX_FILES, both)
    assert planned == {"dit": int(22.2 * GIB) // 2, "text_encoder_clip": int(0.23 * GIB),
                       T5: int(int(9.1 * GIB) * 0.5), "vae": int(0.16 * GIB) // 2}
    found = texts(component_findings(spec, FLUX_FILES))
    assert found == [
        "components: dit-t5: dit 22.20 GiB -> 11.10 GiB (saves 11.10 GiB); text_encoder_t5 9.10 GiB -> 4.55 GiB "
        "(saves 4.55 GiB); vae 163.84 MiB -> 81.92 MiB (saves 81.92 MiB); weights 31.69 GiB -> 15.96 GiB",
        "components: t5-own: text_encoder_t5 9.10 GiB -> 12.06 KiB (saves 9.10 GiB); weights 31.69 GiB -> 22.59 GiB"]
    plans = checkpoint_host_plans(spec, FLUX_FILES, "cpu")
    assert plans["t5-own"].component(T5).how == "pre-quantized file read as stored"
    assert plans["t5-own"].component(T5).load_bytes == 12345
    assert plans["bf16"].component(T5).load_bytes > 9 * GIB


def test_full_size_swaps_and_tabulates_each_component_a_scheme_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """At the tiny size: a T5-only scheme after float8 reads the DiT (back to bf16) and the T5 alone;
    the component table shows each component's stored bytes and what the targeted ones save."""
    import quant_guard.model.pipelines as pipelines

    config = _tiny_plan_config(tmp_path)
    text = config.read_text().replace(
        f"schemes = {json.dumps(list(CPU_SCHEMES))}",
        'schemes = ["float8_e4m3fn", { id = "t5-int8", components = { text_encoder_t5 = "torchao_int8_w8a16" } }, '
        '{ id = "t5-vae-f8", components = { text_encoder_t5 = "float8_e4m3fn", vae = "float8_e4m3fn" } }]')
    config.write_text(text)
    swaps: list[tuple[str, tuple[str, ...]]] = []
    real_swap = pipelines.swap_components

    def swap(pipe: Any, resolved: Any, scheme: Any, plan: Any, names: tuple[str, ...]) -> None:
        swaps.append((scheme.id, names))
        real_swap(pipe, resolved, scheme, plan, names)

    monkeypatch.setattr(pipelines, "swap_components", swap)
    code, _ = _full_size(config, tmp_path)
    out = capsys.readouterr().out
    assert code == 0, out
    assert swaps == [("float8_e4m3fn", ("dit",)), ("t5-int8", ("dit", T5)), ("t5-vae-f8", (T5, "vae"))]
    table = out[out.index("Weights per component"):]
    rows = {cells[0]: cells for line in table.splitlines() if line.startswith("| ")
            for cells in [[c.strip() for c in line.strip().strip("|").split("|")]]}
    head = rows["scheme"]
    assert head[:3] == ["scheme", "quantizes", "load read"] and head[3:-1] == list(FAMILIES["flux"].model_components)
    col = {name: head.index(name) for name in head[3:-1]}
    bf16, f8, t5, both = rows["bf16"], rows["float8_e4m3fn"], rows["t5-int8"], rows["t5-vae-f8"]
    assert t5[1:3] == [T5, f"dit, {T5}"] and both[1:3] == [f"{T5}, vae", f"{T5}, vae"]
    assert "(saves" in f8[col["dit"]] and "(saves" not in f8[col[T5]]
    assert t5[col["dit"]] == bf16[col["dit"]] and "(saves" in t5[col[T5]] and t5[col["vae"]] == bf16[col["vae"]]
    assert "(saves" in both[col[T5]] and "(saves" in both[col["vae"]] and both[col["dit"]] == bf16[col["dit"]]
    assert bf16[-1] == "0 B" and both[-1] != "0 B"
    assert "B on device" not in table  # a CPU render computes in host memory: every weight is where it computes


def test_the_component_table_says_what_was_on_the_device_at_render_start() -> None:
    """Under cpu_offload a component with less on the device than it stores says how much; a
    resident one (everything on the device) and a run that did not measure it say nothing more."""
    from quant_guard.tools.full_size import component_table

    bf16 = {"dit": 4 * GIB, T5: 2 * GIB, "vae": GIB}
    t5_f8 = {**bf16, T5: GIB}

    def measured(precision: str, targets: tuple[str, ...], stored: dict[str, int],
                 resident: dict[str, int] | None) -> Measurement:
        return Measurement(precision, True, "cuda", 1.0, 0, 0, 1.0, 2, targets=targets, swapped=("dit",),
                           component_bytes=tuple(stored.items()),
                           component_resident=tuple((resident if resident is not None else {}).items()))

    lines = component_table([measured("bf16", (), bf16, bf16),
                             measured("t5-f8", (T5,), t5_f8, {"dit": 0, T5: 0, "vae": GIB}),
                             measured("old", (T5,), t5_f8, None)])
    rows = {r[0]: r for line in lines if line.startswith("| ") for r in [[c.strip() for c in line.strip("| ").split("|")]]}
    assert rows["t5-f8"][3:6] == ["4.00 GiB, 0 B on device", "1.00 GiB (saves 1.00 GiB), 0 B on device", "1.00 GiB"]
    assert rows["bf16"][3:6] == ["4.00 GiB", "2.00 GiB", "1.00 GiB"]
    assert rows["old"][3:6] == ["4.00 GiB", "1.00 GiB (saves 1.00 GiB)", "1.00 GiB"]


def test_the_limits_count_every_component_a_scheme_quantizes() -> None:
    """FLUX.1-dev's float8 DiT alone (20.59 GiB of weights) does not fit a 20 GiB GPU; with the T5 in
    float8 too (16.04 GiB) it does, and a peak limit is held to that scheme's weights."""
    import dataclasses

    from quant_guard.config.schemes import ComponentScheme, Scheme

    gpu = [Gpu(0, "Fake 20 GB", 20 * GIB)]
    dit_t5 = Scheme("dit-t5", storage_dtype="float8_e4m3fn", others=((T5, ComponentScheme("float8_e4m3fn")),))
    assert any(t.startswith("weights: the float8_e4m3fn candidate's") for t in texts(
        limit_findings(real_spec(), FLUX_FILES, gpu), Status.FAIL))
    spec = dataclasses.replace(real_spec(peak="17 GiB"), schemes=(dit_t5,))
    assert texts(limit_findings(spec, FLUX_FILES, gpu), Status.FAIL) == [
        "goldens: the bf16 reference's weights (31.69 GiB) do not fit this GPU without cpu_offload: "
        "--update-golden cannot run",
        "peak_vram: 17.00 GiB is below the dit-t5 candidate's weights (16.04 GiB) plus activations"]
