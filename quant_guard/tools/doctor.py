"""``quant-guard doctor``: what a runner admin runs before the first nightly.

It reports torch, CUDA, the driver, each GPU's name and memory, the DiffSynth version and the
LPIPS weights; then, for each checkpoint of the project's configuration (found like the plugin
finds it: ``--qg-config`` or ``pyproject.toml``), whether it can run here: its files (present,
or to be downloaded into how much free disk), and whether its limits are plausible on this
device. ``--full-size`` adds a measured run at a model family's full size (``--family``; FLUX.1-dev's
by default; ``quant_guard.tools.full_size``), compared with the limits of that family's checkpoints.
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

from quant_guard.config.project import CheckpointSpec, ComponentSource, QuantGuardConfig
from quant_guard.store.fingerprint import nvidia_driver
from quant_guard.model.families import default_family, family_of
from quant_guard.model.families.base import DIT
from quant_guard.model.host_memory import HostPlan, host_plan, machine_memory, quantized_fraction
from quant_guard.config.units import format_bytes

if TYPE_CHECKING:
    from quant_guard.config.schemes import Scheme
    from quant_guard.model.families.base import Architecture, ModelFamily
    from quant_guard.tools.full_size import FullSizeRequest, Measurement

# Headroom the render needs beyond the weights (activations, the VAE decode at 1024²): a limit
# or a GPU with less than this above the weights is reported as tight, not as impossible.
ACTIVATION_HEADROOM = 2 * 2**30


class Status(str, Enum):
    OK = "ok"
    INFO = "info"
    WARN = "warn"
    UNCHECKED = "todo"  # a limit this run could not vouch for: the doctor does not say "ready"
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

    from quant_guard.judge.lpips_weights import LpipsWeightsError, find_weights

    out = [Finding(Status.INFO, "python", platform.python_version()),
           Finding(Status.INFO, "torch", f"{torch.__version__} (CUDA build {torch.version.cuda or 'none'})")]
    out += cuda_build_findings(torch.version.cuda, nvidia_driver(), os.environ.get(TORCH_CUDA_ENV))
    memory = machine_memory()
    out.append(Finding(Status.INFO, "host RAM", f"{format_bytes(memory.total_bytes or 0)} total, "
                                                f"{format_bytes(memory.available_bytes or 0)} available now "
                                                f"({memory.source})"))
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


def ocr_findings(config: QuantGuardConfig | None) -> list[Finding]:
    """Whether the OCR engine of the text check (``quant_guard.judge.text``) runs here: a FAIL when
    a case of the configuration expects text, else a warning (nothing needs it yet)."""
    import importlib.metadata

    from quant_guard.judge.text import engine_version, ocr_problem

    wanting = [c.id for c in config.cases if c.expect_text] if config is not None else []
    problem = ocr_problem()
    if problem is None:
        binding = importlib.metadata.version("pytesseract")
        return [Finding(Status.OK, "OCR", f"Tesseract {engine_version()} (pytesseract {binding}); "
                                          f"{len(wanting)} case(s) expect text")]
    if wanting:
        return [Finding(Status.FAIL, "OCR", f"case(s) {', '.join(wanting)} expect text, but {problem}")]
    return [Finding(Status.WARN, "OCR", f"no case expects text yet, but a case with expect_text could not run: {problem}")]


# The oldest Linux driver each CUDA major version of a torch wheel runs on (NVIDIA's "CUDA
# Compatibility" guide, minor version compatibility: a cu12x wheel needs a driver of the 12.x
# family, >= 525.60.13; a cu13x wheel >= 580.65.06). PyPI's default torch wheel is a CUDA 13
# build; ci/install.sh installs another with QG_TORCH_CUDA=cu126 (any of PyTorch's wheel indexes).
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
TORCH_CUDA_ENV = "QG_TORCH_CUDA"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def _wheel_cuda(tag: str) -> str | None:
    """PyTorch's wheel index tag as a CUDA version: "cu126" -> "12.6"; "cpu" -> None."""
    digits = tag.removeprefix("cu")
    return f"{digits[:-1]}.{digits[-1]}" if tag.startswith("cu") and digits.isdigit() and len(digits) >= 2 else None


def cuda_build_findings(torch_cuda: str | None, driver: str | None, wanted: str | None) -> list[Finding]:
    """Whether the installed torch's CUDA build runs on this driver, and is the one
    ``QG_TORCH_CUDA`` asked ci/install.sh for."""
    out = []
    if wanted and wanted != "default":
        asked = _wheel_cuda(wanted)
        if (asked and _version(asked)[:2] != _version(torch_cuda or "")[:2]) or (asked is None) != (torch_cuda is None):
            out.append(Finding(Status.FAIL, "torch build", f"{TORCH_CUDA_ENV}={wanted} asks for a "
                                                           f"{'CUDA ' + asked if asked else 'CPU'} build, the installed "
                                                           f"torch is built for CUDA {torch_cuda or 'none'}: rerun "
                                                           "ci/install.sh (it reinstalls torch from that index)"))
    if torch_cuda is None or driver is None:
        return out
    major = _version(torch_cuda)[0]
    need = MIN_DRIVER.get(major)
    if need is not None and _version(driver) < _version(need):
        newest = max((m for m, v in MIN_DRIVER.items() if _version(driver) >= _version(v)), default=None)
        hint = f"QG_TORCH_CUDA=cu{newest}x for a CUDA {newest} build" if newest else "a newer driver"
        out.append(Finding(Status.FAIL, "torch build", f"torch is built for CUDA {torch_cuda}, which needs an NVIDIA "
                                                       f"driver >= {need}; this one is {driver}. "
                                                       f"Install a matching torch (ci/install.sh with {hint}, e.g. "
                                                       "cu126) or update the driver"))
    else:
        out.append(Finding(Status.OK, "torch build", f"CUDA {torch_cuda} build runs on driver {driver}"))
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
def full_size_file_bytes(family: ModelFamily | None = None) -> dict[str, int]:
    """Bytes of each component file at the family's full size (None: the default family's;
    FLUX.1-dev) in bf16: the estimate for a file not downloaded yet (computed from the
    architecture, no weights), and the family's estimate for each tokenizer folder."""
    from quant_guard.tools.synthetic import file_bytes

    family = family or default_family()
    sizes = file_bytes(family.full_size)
    # a second DiT (Wan2.2 A14B's low-noise expert) has the first's shapes; the full size writes one DiT
    extra = {name: sizes[DIT] for name in family.model_components if name not in sizes}
    return {**sizes, **extra, **{t.name: t.estimated_bytes for t in family.tokenizers}}


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
    family: ModelFamily | None = None  # the checkpoint's (None: the default family)

    def weight_bytes(self, component: str) -> int:
        """On disk, or the family's full-size estimate (FLUX.1-dev's) when not downloaded yet."""
        if component in self.present_bytes:
            return self.present_bytes[component]
        return full_size_file_bytes(self.family)[component]


def checkpoint_files(spec: CheckpointSpec) -> CheckpointFiles:
    present, missing = {}, []
    for name in family_of(spec).component_names:
        paths = local_files(spec.components[name])
        if paths:
            present[name] = _size(paths)
        else:
            missing.append(name)
    return CheckpointFiles(present, tuple(missing), family_of(spec))


def disk_findings(spec: CheckpointSpec, files: CheckpointFiles) -> list[Finding]:
    present = sum(files.present_bytes.values())
    if not files.missing:
        return [Finding(Status.OK, "files", f"all {len(files.present_bytes)} components on disk ({format_bytes(present)})")]
    # a local path that is not there is a mistake, not something DiffSynth will download
    absent = [n for n in files.missing if spec.components[n].path is not None]
    findings = [Finding(Status.FAIL, "files", f"{name}: local file {spec.components[name].path} does not exist")
                for name in absent]
    to_fetch = [n for n in files.missing if n not in absent]
    if to_fetch:
        needed = sum(files.weight_bytes(name) for name in to_fetch)
        free = _free_bytes(_model_base())
        size = (files.family or family_of(spec)).full_size.label
        text = (f"missing {', '.join(to_fetch)}: about {format_bytes(needed)} to download at {size} size; "
                f"{format_bytes(free)} free at {_model_base().resolve()}")
        findings.append(Finding(Status.OK if free > needed * 1.05 else Status.FAIL, "files", text))
    return findings


def scheme_file_findings(spec: CheckpointSpec) -> list[Finding]:
    """Each scheme's own component files (the DiT's and any other component's), checked as the gate
    checks them before loading (present, a whole safetensors file, the declared float8 dtype); a
    file still to download is only named."""
    from quant_guard.model.checkpoints import CheckpointError, scheme_dit_file

    findings = []
    for scheme in spec.schemes:
        for name in family_of(spec).model_components:
            source = scheme.component(name).file
            if source is None:
                continue
            topic = f"scheme {scheme.id}" + ("" if name == DIT else f" {name}")
            if source.path is None and not local_files(source):
                findings.append(Finding(Status.INFO, topic, f"{source.describe()}: to download"))
                continue
            try:
                path = scheme_dit_file(spec, scheme if name == DIT else scheme.only(name), name)
            except CheckpointError as exc:
                findings.append(Finding(Status.FAIL, topic, str(exc)))
            else:
                findings.append(Finding(Status.OK, topic, f"{path} ({format_bytes(_size([path]))})"))
    return findings


def planned_component_bytes(spec: CheckpointSpec, files: CheckpointFiles, scheme: Scheme) -> dict[str, int]:
    """Each model component's weights as ``scheme`` stores them, estimated from the files (full-size
    sizes for those not downloaded yet): a component's own file as it is on disk, a storage dtype
    half of bf16, a method its ``quantized_fraction``, an untargeted one as its file."""
    out = {}
    for name in family_of(spec).model_components:
        c, size = scheme.component(name), files.weight_bytes(name)
        own = local_files(c.file) if c.file is not None else []
        if own:
            out[name] = _size(own)
        elif c.quantization is not None:
            out[name] = int(size * quantized_fraction(c.quantization))
        else:
            out[name] = size if c.is_reference else size // 2  # float8 keeps one byte per bf16 weight
    return out


def component_findings(spec: CheckpointSpec, files: CheckpointFiles) -> list[Finding]:
    """For each scheme that names its components: which components it changes and what each saves
    against the bf16 reference's weights, and the weights in all."""
    from quant_guard.config.schemes import REFERENCE

    reference = planned_component_bytes(spec, files, REFERENCE)
    out = []
    for scheme in spec.schemes:
        if not scheme.others:
            continue
        planned = planned_component_bytes(spec, files, scheme)
        changed = "; ".join(f"{name} {format_bytes(reference[name])} -> {format_bytes(planned[name])} (saves "
                            f"{format_bytes(reference[name] - planned[name])})" for name in scheme.targets)
        out.append(Finding(Status.INFO, "components", f"{scheme.id}: {changed}; weights "
                                                      f"{format_bytes(sum(reference.values()))} -> "
                                                      f"{format_bytes(sum(planned.values()))}"))
    return out


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
        return [Finding(Status.INFO, "device", "runs on the CPU: limits measure the process's host RSS and CPU time"),
                *_measured_findings(spec, measured)]
    gpu = devices[0]  # under xdist every worker sees its own GPU as device 0
    out = [Finding(Status.INFO, "device", f"{gpu.name} ({format_bytes(gpu.total_bytes)}), "
                                          f"cpu_offload={str(spec.cpu_offload).lower()}")]
    limit = spec.limits.peak_memory_bytes
    if limit is not None and limit > gpu.total_bytes:
        out.append(Finding(Status.WARN, "peak_vram", f"{format_bytes(limit)} is above this GPU's memory: it can "
                                                     "never fail here"))
    if files is not None and not spec.cpu_offload:
        reference = sum(files.weight_bytes(n) for n in family_of(spec).model_components)
        # the heaviest candidate, every component as its scheme stores it
        heaviest, candidate = max(((s.id, sum(planned_component_bytes(spec, files, s).values()))
                                   for s in spec.schemes), key=lambda item: item[1])
        if reference + ACTIVATION_HEADROOM > gpu.total_bytes:
            out.append(Finding(Status.FAIL, "goldens", f"the bf16 reference's weights ({format_bytes(reference)}) "
                                                       "do not fit this GPU without cpu_offload: --update-golden "
                                                       "cannot run"))
        if candidate + ACTIVATION_HEADROOM > gpu.total_bytes:
            out.append(Finding(Status.FAIL, "weights", f"the {heaviest} candidate's weights ({format_bytes(candidate)}) "
                                                       "do not fit this GPU; set cpu_offload = true"))
        elif limit is not None and candidate + ACTIVATION_HEADROOM > limit:
            out.append(Finding(Status.FAIL, "peak_vram", f"{format_bytes(limit)} is below the {heaviest} candidate's "
                                                         f"weights ({format_bytes(candidate)}) plus activations"))
        elif limit is not None:
            out.append(Finding(Status.OK, "peak_vram", f"{format_bytes(limit)} leaves room above the weights "
                                                       f"({format_bytes(candidate)})"))
    measured_findings = _measured_findings(spec, measured)
    covered = {f.topic for f in measured_findings}
    if spec.cpu_offload and limit is not None and "peak_vram" not in covered:
        out.append(Finding(Status.UNCHECKED, "peak_vram", f"{format_bytes(limit)} with cpu_offload: depends on what "
                                                          "the memory plan onloads; measure with --full-size"))
    for topic, value in (("resident_vram", spec.limits.resident_memory_bytes), ("step_time", spec.limits.step_time_s)):
        if value is not None and topic not in covered:
            shown = format_bytes(value) if topic == "resident_vram" else f"{value:.2f} s"
            out.append(Finding(Status.UNCHECKED, topic, f"{shown}: only a measured render can vouch for it; run "
                                                        "quant-guard doctor --full-size on this runner"))
    return out + measured_findings


def _measured_findings(spec: CheckpointSpec, measured: Measured | None) -> list[Finding]:
    """The measured schemes against the checkpoint's limits, when they were rendered at the
    checkpoint's own size on its kind of device; one finding per scheme and limit."""
    if measured is None or spec.embedded:
        return []
    r = measured.request
    measured_family = _architecture_family(r.architecture)
    if measured_family.name != family_of(spec).name:
        return [Finding(Status.INFO, "measured", f"at {measured_family.label} shapes, not this checkpoint's family "
                                                 f"({family_of(spec).label}): not compared")]
    if (r.width, r.height) != (spec.render.width, spec.render.height):
        return [Finding(Status.INFO, "measured", f"at {r.width}x{r.height}, not this checkpoint's "
                                                 f"{spec.render.width}x{spec.render.height}: not compared")]
    want = "cpu-rss" if spec.device == "cpu" else "cuda"
    if r.device.startswith("cuda") != (want == "cuda"):
        return [Finding(Status.INFO, "measured", f"on {r.device}, not this checkpoint's device: not compared")]
    return [finding for _, finding in measurement_checks(spec, measured)]


def measurement_checks(spec: CheckpointSpec, measured: Measured,
                       host_total: int | None = None) -> list[tuple[str, Finding]]:
    """(scheme id, finding) for each measured scheme and limit: peak, resident and step time of
    the candidates' renders (the limits apply to candidates), and the host RAM of every build
    and swap against the machine's memory."""
    r = measured.request
    what = f"measured at {r.architecture.name} size, {r.width}x{r.height}"
    total = host_total if host_total is not None else machine_memory().total_bytes
    limits = spec.limits
    out: list[tuple[str, Finding]] = []
    for m in measured.results:
        if m.error:
            out.append((m.precision, Finding(Status.FAIL, "measured", f"{m.precision}: {m.error} ({what})")))
            continue
        if m.host_peak_bytes is not None and total is not None:
            out.append((m.precision, Finding(Status.OK if m.host_peak_bytes <= total else Status.FAIL, "host_ram",
                                             f"{m.precision} {m.load}: peak RSS {format_bytes(m.host_peak_bytes)} of "
                                             f"{format_bytes(total)} (planned {format_bytes(m.host_planned_bytes or 0)})")))
        if m.precision == "bf16":
            continue
        for topic, value, limit in (("peak_vram", m.peak_bytes, limits.peak_memory_bytes),
                                    ("resident_vram", m.resident_bytes, limits.resident_memory_bytes)):
            if limit is not None and value is not None:
                out.append((m.precision, Finding(Status.OK if value <= limit else Status.FAIL, topic,
                                                 f"{m.precision}: limit {format_bytes(limit)}, "
                                                 f"{format_bytes(value)} {what}")))
        if limits.step_time_s is not None and m.median_step_s is not None:
            out.append((m.precision, Finding(Status.OK if m.median_step_s <= limits.step_time_s else Status.FAIL,
                                             "step_time", f"{m.precision}: limit {limits.step_time_s:.2f} s, median "
                                             f"{m.median_step_s:.2f} s {what}")))
    return out


def checkpoint_host_plans(spec: CheckpointSpec, files: CheckpointFiles, device: str) -> dict[str, HostPlan]:
    """Scheme id -> the host RAM of its pipeline under the checkpoint's plan, from the files on
    disk (full-size estimates for those not downloaded yet)."""
    from quant_guard.model.memory_plan import plan_memory
    from quant_guard.config.schemes import REFERENCE

    family = family_of(spec)
    sizes = {name: files.weight_bytes(name) for name in family.model_components}
    out = {}
    for scheme in (REFERENCE, *spec.schemes):
        plan = plan_memory(cpu_offload=spec.cpu_offload, vram_limit_bytes=spec.vram_limit_bytes, scheme=scheme,
                           device=device, device_total_bytes=0, disk_offload=spec.disk_offload, family=family)
        # a scheme's own file of a component (the DiT's or another's) is read as stored, unless a method
        # quantizes it on load
        stored = [n for n in family.model_components if (c := scheme.component(n)).file is not None
                  and (c.quantization is None or c.quantization.load_prequantized)]
        planned = planned_component_bytes(spec, files, scheme)
        out[scheme.id] = host_plan(plan, {**sizes, **{n: planned[n] for n in stored}}, prequantized=stored)
    return out


def host_findings(spec: CheckpointSpec, files: CheckpointFiles, devices: list[Gpu],
                  total: int | None) -> list[Finding]:
    """The plan's host RAM per scheme, and whether the largest fits this machine: a run that does
    not is stopped before loading (pipelines.build_pipeline), a doctor run says so first."""
    # the plan the checkpoint runs under where it is meant to run (a gpu checkpoint: on CUDA)
    on_cuda = spec.device == "cuda" or "gpu" in spec.marks or (bool(devices) and spec.device != "cpu")
    device = "cuda" if on_cuda else "cpu"
    plans = checkpoint_host_plans(spec, files, device)
    out = [Finding(Status.INFO, "host_ram", f"{scheme_id}: {plan.describe()}") for scheme_id, plan in plans.items()]
    worst_id, worst = max(plans.items(), key=lambda item: item[1].peak_bytes)
    if total is None:
        out.append(Finding(Status.UNCHECKED, "host_ram", "this machine's memory is unknown (no /proc/meminfo)"))
    elif worst.peak_bytes > total:
        # disk_offload already set: what is left in host RAM is what it cannot leave on disk
        remedy = ("use a larger runner (disk_offload is on already)" if spec.disk_offload
                  else "set disk_offload = true or use a larger runner")
        out.append(Finding(Status.FAIL, "host_ram", f"the {worst_id} pipeline needs about "
                                                    f"{format_bytes(worst.peak_bytes)} of host RAM at the peak of its "
                                                    f"load, this machine has {format_bytes(total)}: the run would stop "
                                                    f"before loading it; {remedy}"))
    else:
        out.append(Finding(Status.OK, "host_ram", f"the largest, {worst_id}, {format_bytes(worst.peak_bytes)} at its "
                                                  f"peak, fits this machine's {format_bytes(total)}"))
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
        if files is not None:
            findings += component_findings(spec, files)
            findings += host_findings(spec, files, devices, machine_memory().total_bytes)
        marks = f" [{', '.join(spec.marks)}]" if spec.marks else ""
        sections.append((f"checkpoint {spec.id}{marks}", findings))
    return sections


# ---- the command -----------------------------------------------------------------------------------

def plan_checkpoint(config: QuantGuardConfig | None, checkpoint_id: str | None,
                    family: ModelFamily | None = None) -> CheckpointSpec | None:
    """Whose memory plan the --full-size run of ``family``'s shapes follows (None: the default
    family's): the one named (a checkpoint of that family), else the family's first real
    checkpoint marked gpu, else its first real one."""
    family = family or default_family()
    if config is None:
        return None
    if checkpoint_id is not None:
        spec = config.checkpoint(checkpoint_id)
        if family_of(spec).name != family.name:
            raise DoctorError(f"checkpoint {checkpoint_id!r} is a {family_of(spec).label} checkpoint, --full-size "
                              f"measures {family.label} shapes: pass --family {family_of(spec).name}")
        return spec
    real = [c for c in config.checkpoints if not c.embedded and family_of(c).name == family.name]
    return next((c for c in real if "gpu" in c.marks), real[0] if real else None)


def doctor(config_file: Path | None, full_size: FullSizeRequest | None, *, checkpoint_id: str | None = None,
           print_: Callable[[str], None] = print) -> int:
    """Print the report; 1 when something would stop the nightly (a FAIL), else 0."""
    from quant_guard.config.project import load_config

    devices = gpus()
    failed = unchecked = 0

    def show(title: str, findings: list[Finding]) -> None:
        nonlocal failed, unchecked
        print_(title)
        for finding in findings:
            print_(finding.line())
        failed += sum(f.status is Status.FAIL for f in findings)
        unchecked += sum(f.status is Status.UNCHECKED for f in findings)

    show("machine", machine_findings(devices))
    config = load_config(config_file) if config_file is not None else None
    if config is None:
        show("configuration", [Finding(Status.WARN, "config", "no [tool.quant_guard] table or --qg-config file found")])
    else:
        show("configuration", [Finding(Status.INFO, "config", f"{config.source}: {len(config.checkpoints)} "
                                                              "checkpoint(s)")])
    show("text legibility", ocr_findings(config))
    measured = None
    if full_size is not None:
        plan_spec = plan_checkpoint(config, checkpoint_id, _architecture_family(full_size.architecture))
        measured = _full_size(full_size, plan_spec, devices, print_)
    if config is not None:
        for title, findings in checkpoint_report(config, devices, measured):
            show(title, findings)
    if failed:
        print_(f"doctor: {failed} problem(s)")
    elif unchecked:
        print_(f"doctor: no problem found, but {unchecked} check(s) marked todo need a measurement: run "
               "quant-guard doctor --full-size on this runner before calling it ready")
    else:
        print_("doctor: ready")
    return 1 if failed else 0


def _full_size(request: FullSizeRequest, spec: CheckpointSpec | None, devices: list[Gpu],
               print_: Callable[[str], None]) -> Measured:
    from quant_guard.tools.full_size import format_measurements, run_full_size
    from quant_guard.tools.synthetic import file_bytes

    request = request.settled(spec)  # the checkpoint's size: its limits are compared at that size only
    needed = sum(file_bytes(request.architecture).values())
    work = request.work_dir or Path(tempfile.gettempdir())
    if _free_bytes(work) < needed * 1.05:
        raise DoctorError(f"--full-size writes about {format_bytes(needed)} of random weights to {work}, which has "
                          f"{format_bytes(_free_bytes(work))} free; pass --work-dir on a larger disk")
    plan = f"checkpoint {spec.id}'s memory plan" if spec else "no checkpoint's memory plan (cpu_offload = false)"
    label = _architecture_family(request.architecture).label
    print_(f"full size: {request.architecture.name} ({label}) under {plan}, writing {format_bytes(needed)} of random "
           "weights, then building the bf16 reference and swapping in each scheme's DiT, as the gate does")
    results = run_full_size(request, spec)
    cuda = request.device.startswith("cuda") and devices
    name = devices[0].name if cuda else platform.processor() or platform.machine()
    measured = Measured(request, results)
    verdicts: dict[str, list[str]] = {}
    if spec is not None:
        for scheme_id, finding in measurement_checks(spec, measured):
            if finding.topic != "measured":
                verdicts.setdefault(scheme_id, []).append(f"{finding.topic} {finding.status.value}")
    print_(format_measurements(request, results, name, {k: ", ".join(v) for k, v in verdicts.items()}))
    return measured


def _architecture_family(arch: Architecture) -> ModelFamily:
    from quant_guard.tools.synthetic import architecture_family

    return architecture_family(arch)


class DoctorError(RuntimeError):
    """The doctor cannot do what was asked (e.g. not enough disk for --full-size)."""
