"""The environment a golden was rendered in, recorded in its sidecar, and which of its fields
differ from the running environment.

bf16 kernels differ between GPU models, drivers, torch/cuBLAS builds and CPU instruction sets
(AVX-512 BF16, AMX), so a golden is only expected to reproduce byte for byte where these fields
match. Older sidecars lack some fields: a field absent on either side is not compared.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quant_guard import __version__

# The fields that can change a bf16 render; "created", "python" and "quant_guard" are recorded
# but never compared.
FINGERPRINT_KEYS = ("device", "device_name", "compute_capability", "torch", "torch_cuda", "cudnn", "driver",
                    "diffsynth", "cpu_features", "determinism")
# CPU flags (as /proc/cpuinfo names them) that select different bf16 kernels.
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8")


@dataclass(frozen=True)
class FieldDifference:
    field: str
    recorded: Any
    current: Any

    def describe(self) -> str:
        return f"{self.field}: {_show(self.recorded)} -> {_show(self.current)}"


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={v}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def environment(device: str) -> dict[str, Any]:
    """The fingerprint of the running environment for renders on ``device``."""
    import diffsynth.version as dv
    import torch

    env: dict[str, Any] = {
        "device": device.split(":")[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": _cudnn_version(),
        "diffsynth": getattr(dv, "__version__", "unknown"),
        "determinism": determinism_state(),
        "quant_guard": __version__,
        "python": platform.python_version(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if device.startswith("cuda"):
        major, minor = torch.cuda.get_device_capability()
        env.update(device_name=torch.cuda.get_device_name(), compute_capability=f"{major}.{minor}",
                   driver=nvidia_driver())
    else:
        env.update(device_name=cpu_name(), cpu_features=cpu_features())
    return env


def _cudnn_version() -> int | None:
    """cuDNN's version, None where torch has none or cannot initialise it (a fingerprint field
    must never stop the gate)."""
    import torch

    try:
        return torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except (RuntimeError, ValueError):
        return None


def determinism_state() -> dict[str, Any]:
    """The torch settings that decide whether kernels are deterministic, read as they are now."""
    import torch

    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


def differences(recorded: dict[str, Any] | None, current: dict[str, Any]) -> tuple[FieldDifference, ...]:
    """Fingerprint fields recorded with a golden that differ now; fields missing on either side
    (a sidecar written before they were recorded) are skipped."""
    if not isinstance(recorded, dict):
        return ()
    out = []
    for key in FINGERPRINT_KEYS:
        if key in recorded and key in current and recorded[key] != current[key]:
            old, new = recorded[key], current[key]
            if isinstance(old, dict) and isinstance(new, dict):
                out.extend(FieldDifference(f"{key}.{k}", old.get(k), new.get(k))
                           for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
            else:
                out.append(FieldDifference(key, old, new))
    return tuple(out)


@functools.cache
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def cpu_features() -> list[str]:
    """The bf16-relevant flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [f for f in CPU_FEATURES if f in flags]
    except OSError:
        pass
    return []


@functools.cache
def nvidia_driver() -> str | None:
    """The NVIDIA kernel driver version, from /proc or nvidia-smi; None when neither answers."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        for word in text.split():
            if word.count(".") in (1, 2) and word.replace(".", "").isdigit():
                return word
    except OSError:
        pass
    try:
        proc = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.splitlines()[0].strip() if proc.returncode == 0 and proc.stdout.strip() else None
