"""A CUDA device modelled on the CPU for tests of memory accounting, in which DiffSynth's own
VRAM management decides what lives where.

Only the device is modelled. Tensors "on cuda" are CPU tensors whose storage the fake tracks: a
``TorchFunctionMode`` rewrites every ``device="cuda"`` (``.to``, ``.cuda()``, factories,
``*_like``) to the CPU, records the new storage as device memory for as long as it lives, makes
the results of operations on device tensors device tensors, reports ``tensor.device`` as cuda,
and refuses what a real device refuses (an operation mixing device and host tensors, ``.numpy()``
of a device tensor). ``torch.cuda``'s memory functions are answered from those bytes through a
modelled caching allocator: allocations rounded up to 512 bytes, reserved in segments, freed
blocks kept cached (reused best-fit, never merged: fragmentation) until ``empty_cache``; the
device's used memory is a CUDA context plus what the allocator reserved. So DiffSynth's
``AutoWrapped*`` layers, their ``vram_limit`` check (``mem_get_info``), onload/offload and the
pipeline's ``load_models_to_device`` run unchanged on the real tiny checkpoint, and what the
session and the render measure is what those layers moved.
"""

from __future__ import annotations

import bisect
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

GIB = 2**30
BLOCK = 512  # the caching allocator's rounding of every allocation

# Moves between devices and in-place writes: a real device allows their operands on either side.
_CROSS_DEVICE = {torch.Tensor.copy_, torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda, torch.Tensor.__setitem__,
                 torch.Tensor.__getitem__, torch.Tensor.index_put_, torch.Tensor.set_,
                 torch._has_compatible_shallow_copy_type, torch.utils.swap_tensors}


def _attribute(func: Any) -> tuple[str, str] | None:
    """("device", "__get__") for the getter of ``tensor.device``; None for a function."""
    descriptor = getattr(func, "__self__", None)
    if getattr(descriptor, "__objclass__", None) is torch._C.TensorBase:
        return descriptor.__name__, func.__name__
    return None


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """The tensors in arguments or results (nested tuples, lists, dicts)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _is_cuda(device: Any) -> bool:
    if isinstance(device, int):  # a bare ordinal names a CUDA device
        return True
    return device is not None and torch.device(device).type == "cuda"


class FakeCudaDevice(TorchFunctionMode):
    """``total`` bytes of device memory; ``context_bytes`` taken by the CUDA context (outside the
    caching allocator); new segments of ``segment_bytes`` (PyTorch: 2 MiB for small requests)."""

    def __init__(self, total: int, *, context_bytes: int = 0, segment_bytes: int = 2 * 2**20) -> None:
        super().__init__()
        self.total, self.context_bytes, self.segment_bytes = total, context_bytes, segment_bytes
        self._tracked: dict[int, int] = {}  # id(storage) -> bytes allocated for it
        self._cached: list[int] = []  # sizes of free blocks the allocator keeps reserved (sorted)
        self.allocated = self.reserved = 0
        self.peak = self.peak_reserved = 0
        self.high_water = 0  # never reset: the most ever allocated

    # ---- the caching allocator ------------------------------------------------------------------
    def _alloc(self, nbytes: int) -> int:
        n = max(BLOCK, -(-nbytes // BLOCK) * BLOCK)
        i = bisect.bisect_left(self._cached, n)
        if i < len(self._cached):  # best fit from the cache, the rest of the block stays cached
            rest = self._cached.pop(i) - n
            if rest:
                bisect.insort(self._cached, rest)
        else:
            segment = -(-n // self.segment_bytes) * self.segment_bytes
            if self.context_bytes + self.reserved + segment > self.total:
                raise torch.OutOfMemoryError(
                    f"CUDA out of memory. Tried to allocate {n / GIB:.2f} GiB (fake device: "
                    f"{self.allocated / GIB:.2f} GiB allocated, {self.reserved / GIB:.2f} GiB reserved)")
            self.reserved += segment
            if segment > n:
                bisect.insort(self._cached, segment - n)
        self.allocated += n
        self.peak, self.high_water = max(self.peak, self.allocated), max(self.high_water, self.allocated)
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        return n

    def _free(self, key: int, n: int) -> None:
        del self._tracked[key]
        self.allocated -= n
        bisect.insort(self._cached, n)

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._tracked:
            return
        self._tracked[key] = self._alloc(storage.nbytes())
        weakref.finalize(storage, self._free, key, self._tracked[key])

    def bytes_of(self, module: torch.nn.Module) -> int:
        """Device bytes allocated for the parameters and buffers of ``module``."""
        storages = {id(t.untyped_storage()): t for t in (*module.parameters(), *module.buffers())}
        return sum(self._tracked.get(key, 0) for key in storages)

    def on_device(self, tensor: torch.Tensor) -> bool:
        return tensor.device.type != "meta" and id(tensor.untyped_storage()) in self._tracked

    # ---- torch functions ------------------------------------------------------------------------
    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        attribute = _attribute(func)
        if attribute == ("device", "__get__"):
            return torch.device("cuda", 0) if self.on_device(args[0]) else func(*args)
        if attribute == ("is_cuda", "__get__"):
            return self.on_device(args[0])
        if attribute is not None:  # other tensor attributes (.data = ..., .shape, .dtype)
            return func(*args, **kwargs)
        if func is torch.Tensor.get_device:
            return 0 if self.on_device(args[0]) else func(*args)
        # as on a real device: .numpy() refuses a device tensor, .tolist() copies it to host memory
        if func is torch.Tensor.numpy and self.on_device(args[0]):
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                            "to host memory first. (fake device)")
        if func is torch.Tensor.cuda:
            return self._move(args[0], True, None)
        if func is torch.Tensor.cpu:
            return self._move(args[0], False, None)
        if func is torch._C._nn._parse_to:  # Module.to asks it what a .to() call means: the truth
            return func(*args, **kwargs)
        if func is torch.Tensor.pin_memory:
            return args[0]
        if func is torch.Tensor.to:
            return self._to(args, kwargs)
        inputs = list(_tensors((args, kwargs)))
        target: bool | None = None
        kwargs.pop("pin_memory", None)  # page-locked host memory needs a driver; it is host memory all the same
        if "device" in kwargs:
            target = _is_cuda(kwargs["device"])
            kwargs["device"] = "cpu" if target else kwargs["device"]
        if func not in _CROSS_DEVICE:
            self._same_device(func, inputs)
        before = {id(t.untyped_storage()) for t in inputs if t.device.type != "meta"}
        out = func(*args, **kwargs)
        if target is None:
            target = any(self.on_device(t) for t in inputs)
        if target:
            for t in _tensors(out):
                if t.device.type != "meta" and id(t.untyped_storage()) not in before:
                    self._track(t)
        return out

    def _to(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        tensor, rest = args[0], args[1:]
        if rest and isinstance(rest[0], torch.Tensor):  # .to(other): other's device and dtype
            other = rest[0]
            return self._move(tensor, self.on_device(other), other.dtype, copy=kwargs.get("copy", False))
        device, dtype, _, _ = torch._C._nn._parse_to(*rest, **{k: v for k, v in kwargs.items()
                                                                         if k != "copy"})
        if device is None or device.type not in ("cuda", "cpu"):
            out = tensor.to(*rest, **kwargs)
            if self.on_device(tensor) and device is None and out is not tensor:
                self._track(out)
            return out
        return self._move(tensor, device.type == "cuda", dtype, copy=kwargs.get("copy", False))

    def _move(self, tensor: torch.Tensor, to_device: bool, dtype: torch.dtype | None, *,
              copy: bool = False) -> torch.Tensor:
        """A copy when the tensor changes sides (a real device copies), tracked when it lands on the device."""
        here = self.on_device(tensor)
        crossing = here != to_device and tensor.device.type != "meta"
        out = tensor.to(dtype=dtype or tensor.dtype, copy=copy or crossing)
        if to_device and out is not tensor and out.device.type != "meta":
            self._track(out)
        return out

    def _same_device(self, func: Any, inputs: list[torch.Tensor]) -> None:
        sides = {self.on_device(t) for t in inputs if t.dim() > 0 and t.device.type != "meta"}
        if len(sides) > 1:
            raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                               f"cuda:0 and cpu! (fake device, in {getattr(func, '__name__', func)})")

    # ---- torch.cuda -----------------------------------------------------------------------------
    def used(self) -> int:
        """What the device reports as used (NVML, ``mem_get_info``): the context and the reserve."""
        return self.context_bytes + self.reserved

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
        self.reserved -= sum(self._cached)
        self._cached.clear()

    def synchronize(self, device: Any = None) -> None:
        pass

    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        return self.total - self.used(), self.total

    def device_memory_used(self, device: Any = None) -> int:
        return self.used()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Patch ``torch.cuda`` and enter the mode until the test ends."""
        for name in ("memory_allocated", "max_memory_allocated", "memory_reserved", "max_memory_reserved",
                     "reset_peak_memory_stats", "empty_cache", "synchronize", "mem_get_info", "device_memory_used"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 9))
