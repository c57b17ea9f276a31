"""Check that a built DiT is what its scheme says, and count what it stores.

DiffSynth does not always fail when a scheme cannot be applied: a DiT class without a
VRAM-management entry is silently upcast, a module pattern that matches nothing quantizes
nothing, a pre-quantized file of another format may load into plain layers. So after every build
the DiT's linear layers are inventoried (class, weight format, stored bytes) and compared with
the scheme; a mismatch is a ``CheckpointError`` that names what was found.

Module-name patterns follow ``QuantizeConfig``: a layer matches an entry when its dotted name
equals it or ends with "." + entry.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quant_guard.checkpoints import CheckpointError
from quant_guard.schemes import Scheme

if TYPE_CHECKING:
    import torch

# DiffSynth's VRAM-management wrappers (diffsynth/core/vram/layers.py): the quantized one holds
# the real layer as ``.module``.
_STORAGE_WRAPPER = "AutoWrappedLinear"
_QUANTIZED_WRAPPER = "AutoWrappedQuantizedModule"


@dataclass(frozen=True)
class LinearLayer:
    name: str
    quantized: bool
    format: str  # e.g. "float8_e4m3fn", "bfloat16", "TorchaoLinear/Int8Tensor"
    managed: bool = False  # DiffSynth's VRAM-management wrapper: cast to the compute dtype per forward


@dataclass(frozen=True)
class DitInventory:
    layers: tuple[LinearLayer, ...]
    stored_bytes: int  # parameters and buffers as stored (quantized tensors by their inner data)

    def formats(self) -> dict[str, int]:
        """Layer format -> number of linear layers."""
        return dict(Counter(layer.format for layer in self.layers))

    def describe(self) -> str:
        return ", ".join(f"{n} {fmt}" for fmt, n in sorted(self.formats().items())) or "no linear layers"


def matches(name: str, patterns: tuple[str, ...] | None) -> bool:
    return any(name == p or name.endswith("." + p) for p in patterns or ())


def inventory(dit: torch.nn.Module) -> DitInventory:
    """Every linear layer of the DiT with its weight format, and the bytes the DiT stores."""
    import torch

    quantize = getattr(dit, "quantize_config", None)
    layers = []
    inner: set[int] = set()  # layers already counted through their wrapper
    for name, module in dit.named_modules():
        if id(module) in inner:
            continue
        if type(module).__name__ == _QUANTIZED_WRAPPER:
            real = module.module
            inner.add(id(real))
            layers.append(LinearLayer(name, True, _quantized_format(real)))
        elif quantize is not None and quantize.is_quantized_linear(module):
            layers.append(LinearLayer(name, True, _quantized_format(module)))
        elif isinstance(module, torch.nn.Linear):
            # a disk-offloaded layer holds meta tensors: it is read in its preparing dtype
            # (diffsynth/core/vram/layers.py lines 123-127, 175-180)
            dtype = module.preparing_dtype if getattr(module, "disk_offload", False) else module.weight.dtype
            layers.append(LinearLayer(name, False, str(dtype).removeprefix("torch."),
                                      managed=type(module).__name__ == _STORAGE_WRAPPER))
    return DitInventory(tuple(layers), stored_bytes(dit))


def stored_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers as they are stored (float8 = 1 byte each,
    quantized tensors by their packed data and scales)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor_bytes(tensor)
    return total


def tensor_bytes(tensor: Any) -> int:
    """Bytes a tensor stores: a tensor subclass (torchao's Int8Tensor, Float8Tensor) by its inner
    tensors, a bitsandbytes ``Params4bit`` by its packed data plus its quantization state."""
    import torch

    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is not None and type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, n)) for n in names)
    total = tensor.numel() * tensor.element_size()
    state = getattr(tensor, "quant_state", None)
    while state is not None:  # bitsandbytes: absmax per block (and nested state for its absmax)
        absmax = getattr(state, "absmax", None)
        total += 0 if absmax is None else absmax.numel() * absmax.element_size()
        state = getattr(state, "state2", None)
    return total


def _quantized_format(module: Any) -> str:
    return f"{type(module).__name__}/{type(module.weight).__name__}"


def check_scheme_applied(dit: torch.nn.Module, scheme: Scheme, checkpoint_id: str) -> DitInventory:
    """The DiT's inventory, after checking it against ``scheme``; a mismatch raises
    ``CheckpointError`` naming the layers and formats found."""
    found = inventory(dit)
    problem = _mismatch(found, scheme)
    if problem:
        raise CheckpointError(f"checkpoint {checkpoint_id!r}, scheme {scheme.id!r} ({scheme.describe()}): "
                              f"the built DiT is not what the scheme says: {problem}; found {found.describe()}")
    return found


def _mismatch(found: DitInventory, scheme: Scheme) -> str | None:
    if not found.layers:
        return "it has no linear layers"
    if scheme.quantization is None:
        want = scheme.storage_dtype
        if scheme.is_reference:
            wrong = [layer for layer in found.layers if layer.quantized]
            return f"{len(wrong)} linear layers are quantized (first: {wrong[0].name})" if wrong else None
        # float8 storage computes only through DiffSynth's per-layer cast: a DiT class without a
        # VRAM-management entry is loaded as plain layers (upcast, or float8 that cannot compute)
        wrong = [layer for layer in found.layers if layer.format != want or not layer.managed]
        if wrong:
            first = wrong[0]
            return (f"{len(wrong)} linear layers are not stored in {want} by DiffSynth's VRAM management "
                    f"(first: {first.name}, {first.format}{'' if first.managed else ', a plain Linear'}): "
                    "DiffSynth did not apply float8 storage to this DiT class")
        return None
    q = scheme.quantization
    targeted = [layer for layer in found.layers
                if (q.target_modules is None or matches(layer.name, q.target_modules))
                and not matches(layer.name, q.exclude_modules)]
    if not targeted:
        return "no linear layer matches the scheme's target_modules / exclude_modules"
    if q.mode == "dequant_once":  # DiffSynth restores plain bf16 layers that carry the error
        wrong = [layer for layer in found.layers if layer.quantized]
        return f"{len(wrong)} layers are still quantized in dequant_once mode" if wrong else None
    names = {layer.name for layer in targeted}
    missing = [layer for layer in targeted if not layer.quantized]
    extra = [layer for layer in found.layers if layer.quantized and layer.name not in names]
    if missing:
        return (f"{len(missing)} of the {len(targeted)} targeted linear layers are not quantized "
                f"(first: {missing[0].name}, {missing[0].format})")
    if extra:
        return f"{len(extra)} layers outside the targeted ones are quantized (first: {extra[0].name})"
    return None
