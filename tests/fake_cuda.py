"""A CUDA device modelled on the CPU, for tests of memory accounting: ``torch.cuda``'s memory
functions replaced by a caching allocator that counts bytes (allocations, frees, peak resets,
``empty_cache``), and a Flux pipeline stand-in whose weights hold bytes on that device for as
long as the objects live. DiffSynth's part (``download_and_load_models``, ``vram_limit``
layers kept on the device, ``load_models_to_device([])`` at the end of a call) is modelled; the
quant_guard code under test (session, pipelines.swap_dit, render, gate) is the real one."""

from __future__ import annotations

import weakref
from typing import Any

import pytest
import torch

GIB = 2**30


class FakeCudaDevice:
    def __init__(self, total: int) -> None:
        self.total = total
        self.allocated = self.peak = self.reserved = self.peak_reserved = 0
        self.high_water = 0  # never reset: the most the device ever held

    # ---- the allocator ------------------------------------------------------------------------
    def alloc(self, n: int) -> None:
        if self.allocated + n > self.total:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {n / GIB:.2f} GiB (fake device)")
        self.allocated += n
        self.reserved = max(self.reserved, self.allocated)
        self.peak = max(self.peak, self.allocated)
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        self.high_water = max(self.high_water, self.allocated)

    def free(self, n: int) -> None:
        self.allocated -= n  # the caching allocator keeps the block reserved

    def hold(self, owner: object, n: int) -> None:
        """``n`` bytes allocated for as long as ``owner`` lives."""
        if n:
            self.alloc(n)
            weakref.finalize(owner, self.free, n)

    # ---- torch.cuda ---------------------------------------------------------------------------
    def memory_allocated(self, device: Any = None) -> int:
        return self.allocated

    def max_memory_allocated(self, device: Any = None) -> int:
        return self.peak

    def memory_reserved(self, device: Any = None) -> int:
        return self.reserved

    def max_memory_reserved(self, device: Any = None) -> int:
        return self.peak_reserved

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        self.peak, self.peak_reserved = self.allocated, self.reserved

    def empty_cache(self) -> None:
        self.reserved = self.allocated

    def synchronize(self, device: Any = None) -> None:
        pass

    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        return self.total - self.reserved, self.total

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("memory_allocated", "max_memory_allocated", "memory_reserved", "max_memory_reserved",
                     "reset_peak_memory_stats", "empty_cache", "synchronize", "mem_get_info"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 9))


# Bytes of a Flux-size checkpoint: DiT by stored dtype, the encoders + VAE, one render's activations.
DIT_BYTES = {torch.bfloat16: 22 * GIB, torch.float8_e4m3fn: 11 * GIB}
ENCODER_BYTES = 10 * GIB
ACTIVATION_BYTES = 2 * GIB


class AutoWrappedLinear(torch.nn.Linear):
    """A linear layer stored in ``dtype``, like DiffSynth's wrapper, so ``scheme_check`` sees the
    stored dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__(2, 2, bias=False)
        self.weight = torch.nn.Parameter(torch.zeros(2, 2, dtype=dtype), requires_grad=False)
        self.computation_dtype = torch.bfloat16  # DiffSynth casts the stored weight to it per forward


class FakeDit(torch.nn.Module):
    def __init__(self, device: FakeCudaDevice, dtype: torch.dtype, home: str) -> None:
        super().__init__()
        self.layer = AutoWrappedLinear(dtype)
        self.stored_bytes, self.home = DIT_BYTES[dtype], home
        device.hold(self, self.stored_bytes if home.startswith("cuda") else 0)


class _Pool:
    def __init__(self, dit: FakeDit) -> None:
        self.dit = dit

    def fetch_model(self, name: str) -> FakeDit | None:
        return self.dit if name == "flux_dit" else None


class FakePipeline:
    """What the gate and the session use of a ``FluxImagePipeline``."""

    def __init__(self, device: FakeCudaDevice, *, encoders_home: str, vram_limit_gib: float | None) -> None:
        self.gpu, self.device = device, "cuda"
        self.vram_limit_gib = vram_limit_gib
        self.dit: FakeDit | None = None
        device.hold(self, ENCODER_BYTES if encoders_home.startswith("cuda") else 0)

    def download_and_load_models(self, model_configs: list[Any], vram_limit: float | None = None) -> _Pool:
        (config,) = model_configs
        dtype = config.offload_dtype or torch.bfloat16
        return _Pool(FakeDit(self.gpu, dtype, config.offload_device or self.device))

    def check_vram_management_state(self) -> bool:
        return True

    def vae_output_to_image(self, output: torch.Tensor) -> Any:
        from PIL import Image

        ramp = torch.arange(64, dtype=torch.uint8).repeat(64, 1) * 4
        return Image.fromarray(torch.stack([ramp, ramp.T, 255 - ramp], dim=-1).numpy())

    def __call__(self, *, progress_bar_cmd: Any, num_inference_steps: int, **kwargs: Any) -> Any:
        assert self.dit is not None
        prepared = 0
        if self.dit.home == "cpu":  # DiffSynth keeps layers on the device while under vram_limit
            room = int((self.vram_limit_gib or 0) * GIB) - (self.gpu.total - self.gpu.mem_get_info()[0])
            prepared = max(0, min(self.dit.stored_bytes, room))
            self.gpu.alloc(prepared)
        for _ in progress_bar_cmd(range(num_inference_steps)):
            self.gpu.alloc(ACTIVATION_BYTES)
            self.gpu.free(ACTIVATION_BYTES)
        image = self.vae_output_to_image(torch.zeros(1, 3, 64, 64))
        self.gpu.free(prepared)  # load_models_to_device([]): every layer back home
        return image


def fake_build(device: FakeCudaDevice) -> Any:
    """Stands in for ``pipelines.build_pipeline``: the pipeline and its DiT under the plan."""
    from diffsynth.core import ModelConfig

    from quant_guard.memory_plan import torch_fields

    def build(checkpoint: Any, scheme: Any, device_name: str, *, plan: Any) -> FakePipeline:
        pipe = FakePipeline(device, encoders_home=plan.components["text_encoder_t5"].home_device,
                            vram_limit_gib=plan.vram_limit_gib)
        fields = torch_fields(plan.components["dit"].model_config_fields())
        pool = pipe.download_and_load_models([ModelConfig(path="dit.safetensors", **fields)])
        pipe.dit = pool.fetch_model("flux_dit")
        return pipe

    return build
