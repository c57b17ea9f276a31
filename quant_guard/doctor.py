"""``quant-guard doctor``: what a runner admin runs before the first nightly.

It reports torch, CUDA, the driver, each GPU's name and memory, the DiffSynth version and the
LPIPS weights; then, for each checkpoint of the project's configuration (found like the plugin
finds it: ``--qg-config`` or ``pyproject.toml``), whether it can run here: its files (present,
or to be downloaded into how much free disk), and whether its limits are plausible on this
device. ``--full-size`` adds a measured run at FLUX.1-dev size (``quant_guard.full_size``).
Nothing is downloaded and nothing is written to the golden store.
"""

from __future__ import annotations

import functools
import glob
import os
import platform
import shutil
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from quant_guard.config import COMPONENTS, CheckpointSpec, ComponentSource, QuantGuardConfig
from quant_guard.fingerprint import nvidia_driver
from quant_guard.units import format_bytes

if TYPE_CHECKING:
    from quant_guard.full_size import FullSizeRequest, Measurement

# Headroom the render needs beyond the weights (activations, the VAE decode at 1024²): a limit
# or a GPU with less than this above the weights is reported as tight, not as impossible.
ACTIVATION_HEADROOM = 2 * 2**30


class Status(str, Enum):
    OK = "ok"
    INFO = "info"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    status: Status
    topic: str
    text: str

    def line(self) -> str:
        return f"  [{self.status.value:>4}] {self.topic:<14} {self.text}"


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    total_bytes: int


# ---- the machine -------------------------------------------------------------------------------

def gpus() -> list[Gpu]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [Gpu(i, torch.cuda.get_device_properties(i).name, int(torch.cuda.get_device_properties(i).total_memory))
            for i in range(torch.cuda.device_count())]



def machine_findings(devices: list[Gpu]) -> list[Finding]:
    import importlib.metadata

    import torch

    from quant_guard.lpips_weights import LpipsWeightsError, find_weights

    out = [Finding(Status.INFO, "python", platform.python_version()),
           Finding(Status.INFO, "torch", f"{torch.__version__} (CUDA build {torch.version.cuda or 'none'})")]
    if devices:
        out.append(Finding(Status.OK, "CUDA", f"{len(devices)} device(s) visible; driver {nvidia_driver() or 'unknown'}"))
        out += [Finding(Status.INFO, f"GPU {g.index}", f"{g.name}, {format_bytes(g.total_bytes)}") for g in devices]
    else:
        out.append(Finding(Status.WARN, "CUDA", "torch sees no CUDA device: only CPU checkpoints can run here"))
    try:
        out.append(Finding(Status.INFO, "diffsynth", importlib.metadata.version("diffsynth")))
    except importlib.metadata.PackageNotFoundError:
        out.append(Finding(Status.FAIL, "diffsynth", "not installed"))
    try:
        source = find_weights()
        out.append(Finding(Status.OK, "LPIPS weights", f"{source.path} ({source.kind})"))
    except LpipsWeightsError as exc:
        first = str(exc).splitlines()[0]
        out.append(Finding(Status.FAIL, "LPIPS weights", f"{first} (quant-guard lpips-weights --help)"))
    return out


# ---- the configuration ---------------------------------------------------------------------------

def find_config(explicit: Path | None, start: Path) -> Path | None:
    """The configuration file the plugin would read: ``--qg-config``, else the ``qg_config`` ini
    option or the ``[tool.quant_guard]`` table of the nearest pyproject.toml."""
    if explicit is not None:
        return explicit.resolve()
    for folder in (start.resolve(), *start.resolve().parents):
        pyproject = folder / "pyproject.toml"
        if not pyproject.is_file():
            continue
        tool = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {})
        ini = tool.get("pytest", {}).get("ini_options", {}).get("qg_config")
        if ini:
            return (folder / ini).resolve()
        return pyproject if "quant_guard" in tool else None
    return None


@functools.cache
def flux_dev_file_bytes() -> dict[str, int]:
    """Bytes of each component file at FLUX.1-dev size in bf16: the estimate for a file not
    downloaded yet (computed from the architecture, no weights)."""
    from quant_guard.synthetic import FLUX_DEV, file_bytes

    return {**file_bytes(FLUX_DEV), "tokenizer_clip": 2**20, "tokenizer_t5": 2**21}


def _model_base() -> Path:
    return Path(os.environ.get("DIFFSYNTH_MODEL_BASE_PATH") or "./models")


def local_files(source: ComponentSource) -> list[Path]:
    """What is on disk for a component now, the way DiffSynth looks (no download)."""
    if source.path is not None:
        return [source.path] if source.path.exists() else []
    pattern = source.origin_file_pattern or ""
    return sorted(Path(p) for p in glob.glob(str(_model_base() / str(source.model_id) / pattern)))


def _size(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    return total


def _free_bytes(folder: Path) -> int:
    for candidate in (folder.resolve(), *folder.resolve().parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return 0


@dataclass(frozen=True)
class CheckpointFiles:
    present_bytes: dict[str, int]  # component -> bytes on disk
    missing: tuple[str, ...]

    def weight_bytes(self, component: str) -> int:
        """On disk, or the FLUX.1-dev-size estimate when not downloaded yet."""
        if component in self.present_bytes:
            return self.present_bytes[component]
        return flux_dev_file_bytes()[component]


def checkpoint_files(spec: CheckpointSpec) -> CheckpointFiles:
    present, missing = {}, []
    for name in COMPONENTS:
        paths = local_files(spec.components[name])
        if paths:
            present[name] = _size(paths)
        else:
            missing.append(name)
    return CheckpointFiles(present, tuple(missing))


def disk_findings(spec: CheckpointSpec, files: CheckpointFiles) -> list[Finding]:
    present = sum(files.present_bytes.values())
    if not files.missing:
        return [Finding(Status.OK, "files", f"all {len(COMPONENTS)} components on disk ({format_bytes(present)})")]
    # a local path that is not there is a mistake, not something DiffSynth will download
    absent = [n for n in files.missing if spec.components[n].path is not None]
    findings = [Finding(Status.FAIL, "files", f"{name}: local file {spec.components[name].path} does not exist")
                for name in absent]
    to_fetch = [n for n in files.missing if n not in absent]
    if to_fetch:
        needed = sum(files.weight_bytes(name) for name in to_fetch)
        free = _free_bytes(_model_base())
        text = (f"missing {', '.join(to_fetch)}: about {format_bytes(needed)} to download at FLUX.1-dev size; "
                f"{format_bytes(free)} free at {_model_base().resolve()}")
        findings.append(Finding(Status.OK if free > needed * 1.05 else Status.FAIL, "files", text))
    return findings


def scheme_file_findings(spec: CheckpointSpec) -> list[Finding]:
    """Each scheme's own DiT file, checked as the gate checks it before loading (present, a whole
    safetensors file, the declared float8 dtype); a file still to download is only named."""
    from quant_guard.checkpoints import CheckpointError, scheme_dit_file

    findings = []
    for scheme in spec.schemes:
        if scheme.dit is None:
            continue
        if scheme.dit.path is None and not local_files(scheme.dit):
            findings.append(Finding(Status.INFO, f"scheme {scheme.id}", f"{scheme.dit.describe()}: to download"))
            continue
        try:
            path = scheme_dit_file(spec, scheme)
        except CheckpointError as exc:
            findings.append(Finding(Status.FAIL, f"scheme {scheme.id}", str(exc)))
        else:
            findings.append(Finding(Status.OK, f"scheme {scheme.id}", f"{path} ({format_bytes(_size([path]))})"))
    return findings


@dataclass(frozen=True)
class Measured:
    """A --full-size run: what was asked and what came out."""

    request: FullSizeRequest
    results: list[Measurement]


def limit_findings(spec: CheckpointSpec, files: CheckpointFiles | None, devices: list[Gpu],
                   measured: Measured | None = None) -> list[Finding]:
    """Whether the checkpoint's limits can be met on this machine: from the weights' sizes,
    and from a --full-size measurement when there is one."""
    needs_cuda = spec.device == "cuda" or "gpu" in spec.marks
    if needs_cuda and not devices:
        return [Finding(Status.FAIL, "device", "needs CUDA (device 'cuda' or marked gpu); torch sees none here")]
    if not devices or spec.device == "cpu":
        return [Finding(Status.INFO, "device", "runs on the CPU: limits measure the process's host RSS and CPU time")]
    gpu = devices[0]  # under xdist every worker sees its own GPU as device 0
    out = [Finding(Status.INFO, "device", f"{gpu.name} ({format_bytes(gpu.total_bytes)}), "
                                          f"cpu_offload={str(spec.cpu_offload).lower()}")]
    limit = spec.limits.peak_memory_bytes
    if limit is not None and limit > gpu.total_bytes:
        out.append(Finding(Status.WARN, "peak_vram", f"{format_bytes(limit)} is above this GPU's memory: it can "
                                                     "never fail here"))
    if files is not None and not spec.cpu_offload:
        dit = files.weight_bytes("dit")
        rest = sum(files.weight_bytes(n) for n in ("text_encoder_clip", "text_encoder_t5", "vae"))
        candidate, reference = dit // 2 + rest, dit + rest  # float8 keeps one byte per bf16 weight
        if reference + ACTIVATION_HEADROOM > gpu.total_bytes:
            out.append(Finding(Status.FAIL, "goldens", f"the bf16 reference's weights ({format_bytes(reference)}) "
                                                       "do not fit this GPU without cpu_offload: --update-golden "
                                                       "cannot run"))
        if candidate + ACTIVATION_HEADROOM > gpu.total_bytes:
            out.append(Finding(Status.FAIL, "weights", f"the float8 candidate's weights ({format_bytes(candidate)}) "
                                                       "do not fit this GPU; set cpu_offload = true"))
        elif limit is not None and candidate + ACTIVATION_HEADROOM > limit:
            out.append(Finding(Status.FAIL, "peak_vram", f"{format_bytes(limit)} is below the float8 candidate's "
                                                         f"weights ({format_bytes(candidate)}) plus activations"))
        elif limit is not None:
            out.append(Finding(Status.OK, "peak_vram", f"{format_bytes(limit)} leaves room above the weights "
                                                       f"({format_bytes(candidate)})"))
    elif spec.cpu_offload and limit is not None and measured is None:
        out.append(Finding(Status.INFO, "peak_vram", f"{format_bytes(limit)} with cpu_offload: depends on what the "
                                                     "memory plan onloads; measure with --full-size"))
    out += _measured_findings(spec, measured)
    return out


def _measured_findings(spec: CheckpointSpec, measured: Measured | None) -> list[Finding]:
    """The measured float8 run against the checkpoint's limits, when it was rendered at the
    checkpoint's own size on CUDA (a real checkpoint is Flux-size; the tiny one is not)."""
    if measured is None or spec.embedded:
        return []
    r = measured.request
    if (r.width, r.height) != (spec.render.width, spec.render.height):
        return [Finding(Status.INFO, "measured", f"at {r.width}x{r.height}, not this checkpoint's "
                                                 f"{spec.render.width}x{spec.render.height}: not compared")]
    # the doctor measures float8_e4m3fn storage: the checkpoint's scheme of that kind, if it has one
    candidate = next((m for m in measured.results if m.precision in {s.kind for s in spec.schemes}), None)
    if candidate is None or candidate.memory_kind != "cuda":
        return []
    what = f"measured at {r.architecture.name} size, {r.width}x{r.height}"
    if candidate.error:
        return [Finding(Status.FAIL, "measured", f"{candidate.error} ({what})")]
    out = []
    limit = spec.limits.peak_memory_bytes
    if limit is not None and candidate.peak_bytes is not None:
        out.append(Finding(Status.OK if candidate.peak_bytes <= limit else Status.FAIL, "peak_vram",
                           f"limit {format_bytes(limit)}, {format_bytes(candidate.peak_bytes)} {what}"))
    if spec.limits.step_time_s is not None and candidate.median_step_s is not None:
        out.append(Finding(Status.OK if candidate.median_step_s <= spec.limits.step_time_s else Status.FAIL,
                           "step_time", f"limit {spec.limits.step_time_s:.2f} s, median "
                           f"{candidate.median_step_s:.2f} s {what}"))
    return out


def checkpoint_report(config: QuantGuardConfig, devices: list[Gpu],
                      measured: Measured | None = None) -> list[tuple[str, list[Finding]]]:
    sections = []
    for spec in config.checkpoints:
        files = None if spec.embedded else checkpoint_files(spec)
        findings = disk_findings(spec, files) if files is not None else [
            Finding(Status.OK, "files", f"embedded {spec.embedded!r}: built into the cache on first use")]
        findings += scheme_file_findings(spec)
        findings += limit_findings(spec, files, devices, measured)
        marks = f" [{', '.join(spec.marks)}]" if spec.marks else ""
        sections.append((f"checkpoint {spec.id}{marks}", findings))
    return sections


# ---- the command -----------------------------------------------------------------------------------

def plan_checkpoint(config: QuantGuardConfig | None, checkpoint_id: str | None) -> CheckpointSpec | None:
    """Whose memory plan the --full-size run follows: the one named, else the first real
    checkpoint marked gpu, else the first real one."""
    if config is None:
        return None
    if checkpoint_id is not None:
        return config.checkpoint(checkpoint_id)
    real = [c for c in config.checkpoints if not c.embedded]
    return next((c for c in real if "gpu" in c.marks), real[0] if real else None)


def doctor(config_file: Path | None, full_size: FullSizeRequest | None, *, checkpoint_id: str | None = None,
           print_: Callable[[str], None] = print) -> int:
    """Print the report; 1 when something would stop the nightly (a FAIL), else 0."""
    from quant_guard.config import load_config

    devices = gpus()
    failed = 0

    def show(title: str, findings: list[Finding]) -> None:
        nonlocal failed
        print_(title)
        for finding in findings:
            print_(finding.line())
        failed += sum(f.status is Status.FAIL for f in findings)

    show("machine", machine_findings(devices))
    config = load_config(config_file) if config_file is not None else None
    if config is None:
        show("configuration", [Finding(Status.WARN, "config", "no [tool.quant_guard] table or --qg-config file found")])
    else:
        show("configuration", [Finding(Status.INFO, "config", f"{config.source}: {len(config.checkpoints)} "
                                                              "checkpoint(s)")])
    measured = None
    if full_size is not None:
        measured = _full_size(full_size, plan_checkpoint(config, checkpoint_id), devices, print_)
    if config is not None:
        for title, findings in checkpoint_report(config, devices, measured):
            show(title, findings)
    print_(f"doctor: {failed} problem(s)" if failed else "doctor: ready")
    return 1 if failed else 0


def _full_size(request: FullSizeRequest, spec: CheckpointSpec | None, devices: list[Gpu],
               print_: Callable[[str], None]) -> Measured:
    from quant_guard.full_size import format_measurements, run_full_size
    from quant_guard.synthetic import file_bytes

    needed = sum(file_bytes(request.architecture).values())
    work = request.work_dir or Path(tempfile.gettempdir())
    if _free_bytes(work) < needed * 1.05:
        raise DoctorError(f"--full-size writes about {format_bytes(needed)} of random weights to {work}, which has "
                          f"{format_bytes(_free_bytes(work))} free; pass --work-dir on a larger disk")
    plan = f"checkpoint {spec.id}'s memory plan" if spec else "no checkpoint's memory plan (cpu_offload = false)"
    print_(f"full size: {request.architecture.name} under {plan}, writing {format_bytes(needed)} of random "
           "weights, then bf16 and float8 one after the other")
    results = run_full_size(request, spec)
    cuda = request.device.startswith("cuda") and devices
    name = devices[0].name if cuda else platform.processor() or platform.machine()
    print_(format_measurements(request, results, name))
    return Measured(request, results)


class DoctorError(RuntimeError):
    """The doctor cannot do what was asked (e.g. not enough disk for --full-size)."""
