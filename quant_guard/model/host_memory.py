"""Host RAM of a memory plan: what each component holds in host memory once loaded and at the
peak of its own load, the machine's memory, the check made before a load, and the peak RSS of a
build as it happened.

The estimate follows how DiffSynth 2.1.12 loads a component (``diffsynth/core/loader/model.py``,
``load_model``), from the sizes of the component's files (a bf16 file of N bytes holds N bytes of
bf16 weights):

- home in host memory with VRAM management (a ``cpu-offload`` plan, or a float8 DiT on a CPU):
  lines 22-29 read the file through ``DiskMap(path, "cpu", torch_dtype=<stored dtype>)``, which
  casts each tensor as it is read (``core/vram/disk_map.py`` lines 59-71): 1x the bf16 file for
  bf16, 0.5x for float8. The same bytes at the peak of the load.
- a plain load on a CPU (``cpu`` plan, bf16): the whole state dict in bf16 (lines 97-121), 1x.
- home on the GPU: ``DiskMap``/``safe_open`` open the file on the device (``disk_map.py`` line
  50): nothing stays in host memory.
- home on disk (``disk_offload``): the model is built on the meta device and each layer is read
  at its forward (lines 30-32; ``core/vram/layers.py`` lines 132-144): nothing stays.
- a quantization method applied on load: the whole DiT is first read in bf16 into host memory
  and quantized there (with VRAM management lines 44-63, ``DiskMap(path, offload_device,
  computation_dtype)``; without it lines 69-77 load on "cpu" in bf16), so the peak of its load is
  the bf16 file; what stays is the quantized DiT (on a host home; nothing on a GPU home).
  DiffSynth has no way around that copy for an on-load method (disk offload is refused with
  quantization, lines 34-36); a pre-quantized DiT file avoids it (lines 47 and 68 read the file
  as stored: its own size).

The process itself (interpreter, torch, DiffSynth, LPIPS, the CUDA context's host side) is an
allowance, ``PROCESS_BYTES``; the measured peak RSS of a build (``BuildMemory``,
``quant-guard doctor --full-size``) is the figure to trust.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from quant_guard.model.families.base import DIT
from quant_guard.model.memory_plan import DISK, MemoryPlan
from quant_guard.config.units import format_bytes

if TYPE_CHECKING:
    from quant_guard.config.schemes import Quantization, Scheme
    from quant_guard.model.families.base import ModelFamily

# Python + torch + DiffSynth imported (about 1 GiB, FACTS), LPIPS, the CUDA context's host side
# and the render's images: an allowance, replaced by a measurement where there is one
PROCESS_BYTES = 2 * 2**30
_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class ComponentHost:
    name: str
    resident_bytes: int  # held in host memory once loaded
    load_bytes: int  # held at the peak of its own load (>= resident_bytes)
    how: str  # why, in a few words


@dataclass(frozen=True)
class HostPlan:
    """The host RAM of one pipeline under one memory plan."""

    components: tuple[ComponentHost, ...]
    process_bytes: int = PROCESS_BYTES

    def component(self, name: str) -> ComponentHost:
        return next(c for c in self.components if c.name == name)

    @property
    def weights_bytes(self) -> int:
        """What the loaded pipeline holds in host memory besides the process."""
        return sum(c.resident_bytes for c in self.components)

    @property
    def load_extra_bytes(self) -> int:
        """The largest transient of one component's load (components load one after another)."""
        return max((c.load_bytes - c.resident_bytes for c in self.components), default=0)

    @property
    def build_bytes(self) -> int:
        """What a build adds to the process: every component's weights plus the worst transient."""
        return self.weights_bytes + self.load_extra_bytes

    @property
    def peak_bytes(self) -> int:
        return self.process_bytes + self.build_bytes

    @property
    def resident_bytes(self) -> int:
        return self.process_bytes + self.weights_bytes

    @property
    def swap_peak_bytes(self) -> int:
        """The process at the peak of swapping this DiT into a pipeline that holds the rest."""
        return self.swap_peak_for((DIT,))

    def swap_peak_for(self, names: Collection[str]) -> int:
        """The process at the peak of swapping these components, one after another, into a pipeline
        that holds the rest (each old one is dropped before its new one is read)."""
        return self.process_bytes + self.weights_bytes + max(
            (self.component(n).load_bytes - self.component(n).resident_bytes for n in names), default=0)

    def describe(self) -> str:
        parts = ", ".join(f"{c.name} {format_bytes(c.load_bytes)}" for c in self.components if c.load_bytes)
        return (f"{format_bytes(self.peak_bytes)} at the peak of loading, {format_bytes(self.resident_bytes)} once "
                f"loaded ({parts or 'no weights in host memory'}; process {format_bytes(self.process_bytes)})")


def quantized_fraction(quantization: Quantization) -> float:
    """Bytes of a DiT quantized by ``quantization`` per byte of its bf16 file (the linear layers
    hold nearly all of a DiT's weights): 4-bit methods about 4.5 bits per weight with their
    block scales, 8-bit ones 8; ``dequant_once`` turns the layers back into bf16."""
    if quantization.mode == "dequant_once":
        return 1.0
    four_bit = any(tag in quantization.method for tag in ("nf4", "fp4", "int4", "w4"))
    return 0.28 if four_bit else 0.5


_STORED_FRACTION = {"bfloat16": 1.0, "float8_e4m3fn": 0.5, "float8_e5m2": 0.5}


def host_plan(plan: MemoryPlan, file_bytes: Mapping[str, int], *, prequantized_dit: bool = False,
              prequantized: Collection[str] = ()) -> HostPlan:
    """``file_bytes``: bytes on disk of each model component's file(s), each being the file this
    plan's scheme loads (its own pre-quantized file, if it has one); ``prequantized`` names the
    components read as stored (``prequantized_dit``: the DiT)."""
    stored = {*prequantized, *((DIT,) if prequantized_dit else ())}
    return HostPlan(tuple(_component(plan, name, file_bytes[name], name in stored) for name in plan.components))


def _component(plan: MemoryPlan, name: str, size: int, prequantized: bool) -> ComponentHost:
    placement = plan.components[name]
    quantization = plan.scheme.component(name).quantization
    on_host = placement.home_device == "cpu"
    if placement.home_device == DISK:
        return ComponentHost(name, 0, 0, "read from its file layer by layer (disk offload)")
    if prequantized:  # read as stored, onto its home (model.py lines 47-48 and 67-68)
        held = size if on_host else 0
        return ComponentHost(name, held, held, "pre-quantized file read as stored")
    if quantization is not None:
        stays = int(size * quantized_fraction(quantization)) if on_host else 0
        return ComponentHost(name, stays, max(size, stays),
                             f"read whole in bf16 on the host, then {quantization.method}")
    if not on_host:
        return ComponentHost(name, 0, 0, f"loaded onto {placement.home_device}")
    stored = int(size * _STORED_FRACTION.get(placement.home_dtype, 1.0))
    return ComponentHost(name, stored, stored, f"{placement.home_dtype} in host memory")


# ---- the machine ---------------------------------------------------------------------------

@dataclass(frozen=True)
class MachineMemory:
    total_bytes: int | None  # what this process may ever use: RAM, or the cgroup's limit when lower
    available_bytes: int | None  # what it can take now without swapping or the OOM killer
    source: str


def machine_memory() -> MachineMemory:
    """/proc/meminfo (MemTotal, MemAvailable), bounded by a cgroup v2 memory limit (a container
    or a runner service started with one)."""
    info = _meminfo()
    total, available = info.get("MemTotal"), info.get("MemAvailable")
    source = "/proc/meminfo"
    limit, used = _cgroup_limit()
    if limit is not None:
        if total is None or limit < total:
            total, source = limit, f"cgroup memory.max {format_bytes(limit)}"
        if used is not None and (available is None or limit - used < available):
            available = max(0, limit - used)
    return MachineMemory(total, available, source)


def _meminfo() -> dict[str, int]:
    out = {}
    try:
        for line in _MEMINFO.read_text().splitlines():
            key, _, rest = line.partition(":")
            words = rest.split()
            if words and words[0].isdigit():
                out[key] = int(words[0]) * 1024  # kB
    except OSError:
        pass
    return out


def _cgroup_limit() -> tuple[int | None, int | None]:
    try:
        raw = (_CGROUP / "memory.max").read_text().strip()
        limit = None if raw == "max" else int(raw)
        used = int((_CGROUP / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None, None
    return limit, used


class HostMemoryShortfall(MemoryError):
    """A load would take more host RAM than the machine has free: stopped before it started."""


def check_host_memory(needed: int, what: str, breakdown: str, memory: MachineMemory | None = None) -> None:
    """Raise ``HostMemoryShortfall`` when ``needed`` bytes more are not available now. The
    kernel's OOM killer would otherwise end the process mid-load, with no verdict and no report."""
    memory = memory or machine_memory()
    if memory.available_bytes is None or needed <= memory.available_bytes:
        return
    raise HostMemoryShortfall(
        f"{what} needs about {format_bytes(needed)} more host RAM ({breakdown}), but only "
        f"{format_bytes(memory.available_bytes)} is available ({memory.source}); stopped before loading. "
        "Free memory, use a runner with more RAM, set disk_offload = true (the DiT and T5 are then read from "
        "their files), or give the scheme a pre-quantized DiT file (no bf16 copy on the host)")


# ---- the measured peak of a build -------------------------------------------------------------

@dataclass
class BuildMemory:
    """The process's RSS around one build (or DiT swap): before, at its peak, after. The peak is
    the kernel's high-water mark (VmHWM) reset right before the build (writing "5" to
    /proc/self/clear_refs, Linux); where the reset is not permitted the peak is None rather than
    a figure that includes earlier work."""

    before_bytes: int | None = None
    peak_bytes: int | None = None
    after_bytes: int | None = None
    note: str = ""

    @property
    def added_peak_bytes(self) -> int | None:
        """How far the build took the process above where it started."""
        if self.peak_bytes is None or self.before_bytes is None:
            return None
        return self.peak_bytes - self.before_bytes

    def as_dict(self) -> dict[str, int | str | None]:
        return {"before_bytes": self.before_bytes, "peak_bytes": self.peak_bytes, "after_bytes": self.after_bytes,
                "note": self.note}


CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")


def reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark (VmHWM); False where that is impossible."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def rss_field(name: str) -> int | None:
    """A memory line of /proc/self/status ("VmRSS", "VmHWM") in bytes; None where there is none."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def measured_build() -> Iterator[BuildMemory]:
    memory = BuildMemory(before_bytes=rss_field("VmRSS"))
    reset = reset_peak_rss()
    try:
        yield memory
    finally:
        memory.after_bytes = rss_field("VmRSS")
        if reset:
            memory.peak_bytes = rss_field("VmHWM")
        else:
            memory.note = f"peak RSS not measured: {CLEAR_REFS} cannot be written here"


# ---- the plan per card size (README, "A real checkpoint") ----------------------------------------

# What a 1024x1024 FLUX render needs on the device beyond the weights the plan keeps there:
# activations, the VAE decode and the layer being copied over (README: about 3 GiB)
RENDER_HEADROOM = 3 * 2**30
CARD_SIZES_GIB = (12, 16, 24, 80)


@dataclass(frozen=True)
class CardPlan:
    card_gib: int
    cpu_offload: bool
    vram_limit_bytes: int | None
    vram_peak_bytes: dict[str, int]  # scheme id -> expected device peak
    host_peak_bytes: dict[str, int]  # scheme id -> host RAM at the peak of its load
    host_peak_disk_bytes: dict[str, int]  # the same with disk_offload = true


def card_plan(card_gib: int, file_bytes: Mapping[str, int], schemes: tuple[Scheme, ...],
              family: ModelFamily | None = None) -> CardPlan:
    """The plan a card of ``card_gib`` GiB gets: every component resident when the bf16
    reference's weights and the render fit (goldens are made on the same card), else cpu_offload
    with a vram_limit that leaves ``RENDER_HEADROOM`` under the card's memory (12 GiB -> 7 GiB,
    the repository's majicflus setting, minus another 2 GiB for the CUDA context and allocator)."""
    from quant_guard.model.memory_plan import plan_memory

    total = card_gib * 2**30
    weights = sum(file_bytes.values())
    offload = weights + RENDER_HEADROOM > total
    limit = total - RENDER_HEADROOM - 2 * 2**30 if offload else None
    vram, host, disk = {}, {}, {}
    for scheme in schemes:
        for disk_offload, into in ((False, host), (True, disk)):
            plan = plan_memory(cpu_offload=offload, vram_limit_bytes=limit, scheme=scheme, device="cuda",
                               device_total_bytes=total, disk_offload=disk_offload, family=family)
            into[scheme.id] = host_plan(plan, file_bytes).peak_bytes
        dit = file_bytes[DIT]
        stored = int(dit * (quantized_fraction(scheme.quantization) if scheme.quantization
                            else _STORED_FRACTION[scheme.storage_dtype]))
        resident = weights - dit + stored  # every weight on the device, the DiT as the scheme stores it
        on_device = min(limit, resident) if limit is not None else resident
        vram[scheme.id] = on_device + RENDER_HEADROOM
    return CardPlan(card_gib, offload, limit, vram, host, disk)


def card_table(file_bytes: Mapping[str, int], schemes: tuple[Scheme, ...]) -> str:
    """The Markdown table of ``card_plan`` for each card size (GiB = 2^30 bytes)."""

    def gib(n: int) -> str:
        return f"{n / 2**30:.1f}"

    ids = [s.id for s in schemes]
    head = ("| card | plan | `vram_limit` | VRAM peak, GiB (" + " / ".join(ids) + ") | host RAM peak, GiB ("
            + " / ".join(ids) + ") | the same with `disk_offload = true` |")
    lines = [head, "|---|---|---|---|---|---|"]
    for size in CARD_SIZES_GIB:
        c = card_plan(size, file_bytes, schemes)
        plan = "`cpu_offload = true`" if c.cpu_offload else "resident"
        limit = "-" if c.vram_limit_bytes is None else f'"{gib(c.vram_limit_bytes)} GiB"'
        lines.append(f"| {size} GiB | {plan} | {limit} | {' / '.join(gib(c.vram_peak_bytes[i]) for i in ids)} | "
                     f"{' / '.join(gib(c.host_peak_bytes[i]) for i in ids)} | "
                     f"{' / '.join(gib(c.host_peak_disk_bytes[i]) for i in ids)} |")
    return "\n".join(lines)
