"""Where each component of a checkpoint lives and computes: the memory plan.

A pure function of the checkpoint's settings (``cpu_offload``, ``vram_limit``), the precision,
the device and the device's total memory; it returns the ``ModelConfig`` dtype/device fields of
each component and the ``vram_limit`` that DiffSynth's ``from_pretrained`` takes. It follows
DiffSynth 2.x's own low-VRAM recipe (docs/en/Pipeline_Usage/VRAM_management.md and
examples/flux/model_inference_low_vram/FLUX.1-dev.py of DiffSynth-Studio):

- ``cpu``: no accelerator; everything in host memory, no ``vram_limit`` (DiffSynth crashes with
  one on a CPU).
- ``resident``: every component lives on the device (the article's plain load).
- ``cpu-offload``: every component lives in host memory (offload = onload = "cpu") and
  computes on the device (preparing = computation = the device). A layer is kept on the device
  after its forward only while the device's used memory is under ``vram_limit``; past it, layers
  are copied over for their forward and dropped. The onload device is "cpu" for every
  component because FLUX.1's prompt encoder never calls ``load_models_to_device``: an encoder
  whose onload device were the GPU would compute on weights still in host memory.
- ``disk_offload`` (any mode): the family's big components (FLUX.1: the DiT and T5) stay in their
  safetensors files; each layer is read when its forward needs it (DiffSynth's "Disk Offload",
  docs/en/Pipeline_Usage/VRAM_management.md, section "Disk Offload"; ``offload_dtype = "disk"``
  in ``diffsynth/core/vram/layers.py`` lines 123-127 and ``load_from_disk`` 132-144;
  ``diffsynth/core/loader/model.py`` lines 30-32 build such a model on the meta device with no
  weights in memory). It needs a ``.safetensors`` file whose state-dict converter only renames
  (true of FLUX's DiT and T5 converters, ``utils/state_dict_converters/flux_dit.py`` and
  ``flux_text_encoder_t5.py``). A DiT quantized on load cannot be disk-offloaded
  (``core/loader/model.py`` lines 34-36 refuse it): its DiT stays in host memory.

Dtypes are named ("bfloat16", "float8_e4m3fn") so the plan needs no torch and goes into the
report as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from quant_guard.config.schemes import COMPUTE_DTYPE, Scheme
from quant_guard.config.units import format_bytes
from quant_guard.model.families import default_family, family_of

if TYPE_CHECKING:
    from quant_guard.model.families.base import ModelFamily

# DiffSynth's recipe: the device's total memory minus 0.5 GiB
AUTO_MARGIN_BYTES = 2**29
DISK = "disk"  # DiffSynth's name for a home on disk (a device and a dtype at once)


class MemoryMode(str, Enum):
    CPU = "cpu"
    RESIDENT = "resident"
    CPU_OFFLOAD = "cpu-offload"


@dataclass(frozen=True)
class ComponentPlacement:
    """Where a component's weights live between forwards (home) and where it computes."""

    home_device: str
    home_dtype: str
    compute_device: str
    compute_dtype: str = COMPUTE_DTYPE
    prepared_dtype: str | None = None  # disk homes: the dtype a layer is read into (its stored dtype)

    @property
    def plain(self) -> bool:
        """Stored as computed: DiffSynth's plain load, no VRAM management."""
        return self.home_device == self.compute_device and self.home_dtype == self.compute_dtype

    def model_config_fields(self) -> dict[str, str]:
        """The ``ModelConfig`` fields, dtypes by name ({} = DiffSynth's plain load)."""
        if self.plain:
            return {}
        if self.home_device == DISK:
            # read from the file at each forward, or kept on the compute device while vram_limit allows
            return {"offload_dtype": DISK, "offload_device": DISK, "onload_dtype": DISK, "onload_device": DISK,
                    "preparing_dtype": self.prepared_dtype or self.compute_dtype,
                    "preparing_device": self.compute_device,
                    "computation_dtype": self.compute_dtype, "computation_device": self.compute_device}
        return {
            "offload_dtype": self.home_dtype, "offload_device": self.home_device,
            "onload_dtype": self.home_dtype, "onload_device": self.home_device,
            # "preparing" keeps a layer on the compute device (still in its home dtype) while
            # vram_limit allows; with no vram_limit that is every layer after its first forward
            "preparing_dtype": self.home_dtype, "preparing_device": self.compute_device,
            "computation_dtype": self.compute_dtype, "computation_device": self.compute_device,
        }


@dataclass(frozen=True)
class MemoryPlan:
    mode: MemoryMode
    device: str
    scheme: Scheme  # the bf16 reference or a candidate (its targeted components' storage)
    components: dict[str, ComponentPlacement]
    vram_limit_bytes: int | None  # None: no dynamic VRAM management

    @property
    def vram_limit_gib(self) -> float | None:
        """What the pipeline's ``from_pretrained(vram_limit=...)`` takes."""
        return None if self.vram_limit_bytes is None else self.vram_limit_bytes / 2**30

    def describe(self) -> str:
        def home(name: str, p: ComponentPlacement) -> str:
            quantization = self.scheme.component(name).quantization
            return f"{p.home_device}/{quantization.method if quantization else p.prepared_dtype or p.home_dtype}"

        homes = ", ".join(f"{name} {home(name, p)}" for name, p in self.components.items())
        limit = "" if self.vram_limit_bytes is None else f", vram_limit {format_bytes(self.vram_limit_bytes)}"
        return f"{self.mode.value} on {self.device}{limit}: {homes}"


def plan_memory(*, cpu_offload: bool, vram_limit_bytes: int | None, scheme: Scheme, device: str,
                device_total_bytes: int | None, disk_offload: bool = False,
                family: ModelFamily | None = None) -> MemoryPlan:
    """The plan of one pipeline of ``family`` (None: the default family's components).
    ``vram_limit_bytes`` None means "auto"; ``device_total_bytes`` is needed only for an automatic
    limit with cpu_offload on an accelerator. A quantization method keeps its own layer formats;
    DiffSynth's dtype fields then describe the layers it leaves alone (bf16)."""
    family = family or default_family()
    if device == "cpu":
        mode, home, limit = MemoryMode.CPU, "cpu", None
    elif not cpu_offload:
        mode, home, limit = MemoryMode.RESIDENT, device, None
    else:
        mode, home = MemoryMode.CPU_OFFLOAD, "cpu"
        limit = vram_limit_bytes if vram_limit_bytes is not None else _auto_limit(device, device_total_bytes)
    # each component in its scheme's storage dtype (bf16 unless the scheme targets it)
    components = {name: ComponentPlacement(home, scheme.component(name).storage_dtype, device)
                  for name in family.model_components}
    if disk_offload:
        for name in family.disk_components:
            if scheme.component(name).quantization is not None:
                continue  # DiffSynth refuses disk offload with quantization (core/loader/model.py:34-36)
            stored = components[name].home_dtype
            components[name] = ComponentPlacement(DISK, DISK, device, prepared_dtype=stored)
    return MemoryPlan(mode, device, scheme, components, limit)


class OffloadSettings(Protocol):
    """What ``checkpoint_plan`` reads of a ``config.CheckpointSpec`` (config imports this module)."""

    cpu_offload: bool
    vram_limit_bytes: int | None
    disk_offload: bool


def checkpoint_plan(spec: OffloadSettings | None, scheme: Scheme, device: str,
                    family: ModelFamily | None = None) -> MemoryPlan:
    """The plan of ``scheme`` under a checkpoint's settings (None: every component on ``device``),
    for ``family``'s components (None: the checkpoint's model family; a synthetic checkpoint of
    another family may follow a checkpoint's settings); an automatic ``vram_limit`` reads the
    device's total memory."""
    offload = bool(spec and spec.cpu_offload)
    limit = spec.vram_limit_bytes if spec else None
    total = None
    if device.startswith("cuda") and offload and limit is None:
        import torch

        total = int(torch.cuda.mem_get_info(device)[1])
    return plan_memory(cpu_offload=offload, vram_limit_bytes=limit, scheme=scheme, device=device,
                       device_total_bytes=total, disk_offload=bool(spec and spec.disk_offload),
                       family=family or family_of(spec))


def _auto_limit(device: str, total: int | None) -> int:
    if total is None:
        raise ValueError(f"vram_limit 'auto' needs the total memory of {device}")
    return max(0, total - AUTO_MARGIN_BYTES)


def torch_fields(fields: dict[str, str]) -> dict[str, Any]:
    """``model_config_fields`` with dtype names turned into torch dtypes."""
    import torch

    return {k: getattr(torch, v) if k.endswith("_dtype") and v != DISK else v for k, v in fields.items()}
