"""Check that a built DiT is what its scheme says, and count what it stores.

DiffSynth does not always fail when a scheme cannot be applied: a DiT class without a
VRAM-management entry is silently upcast, a module pattern that matches nothing quantizes
nothing, a pre-quantized file of another format may load into plain layers. So after every build
each linear layer of the DiT is inventoried: its weight format (dtype, or tensor subclass and what
it packs), how it treats its activations and the bytes its weight stores against the same weight
in bf16. Each is compared with what the scheme kind promises (``scheme_kinds.py``); in
dequant_once mode, where the layers are bf16 again, the weights must still lie on the method's
grid (``quant_grid.py``). The bf16 reference must be bf16 everywhere. A mismatch is a
``CheckpointError`` naming the layer, what was expected and what was found.

Module-name patterns follow ``QuantizeConfig``: a layer matches an entry when its dotted name
equals it or ends with "." + entry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quant_guard.model.checkpoints import CheckpointError
from quant_guard.model.scheme_kinds import (
    BF16,
    BF16_BYTES,
    GRID_MIN_FRACTION,
    UNKNOWN,
    KindExpectation,
    activation_words,
    expectation,
)
from quant_guard.config.schemes import COMPUTE_DTYPE, Scheme
from quant_guard.model.families.base import VramLayers

if TYPE_CHECKING:
    import torch

# DiffSynth's VRAM-management wrappers (diffsynth/core/vram/layers.py), unless a model family
# names others (``ModelFamily.vram_layers``): the quantized one holds the real layer as ``.module``.
DIFFSYNTH_LAYERS = VramLayers()
# torchao records dynamic activation quantization as ``act_quant_kwargs`` on the weight tensor
_ACT_KWARGS_DTYPE = {"QuantizeTensorToInt8Kwargs": "int8"}
# a weight in one of these is not quantized, whatever layer class holds it
_PLAIN_FLOATS = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class LinearLayer:
    name: str
    quantized: bool  # a quantized Linear of DiffSynth's quantization (or its VRAM wrapper)
    # "bfloat16", "float8_e4m3fn", "TorchaoLinear/Int8Tensor(int8)", "BitsAndBytesLinear4bit/Params4bit(nf4)"
    format: str
    managed: bool = False  # DiffSynth's VRAM-management wrapper: cast to the compute dtype per forward
    activations: str = COMPUTE_DTYPE  # the dtype its matmul takes the activations in (scheme_kinds.activation_words)
    weight_bytes: int = 0  # the weight as stored, with its scales / quantization state
    bf16_bytes: int = 0  # the same weight in bf16

    @property
    def bytes_ratio(self) -> float:
        return self.weight_bytes / self.bf16_bytes if self.bf16_bytes else 0.0


@dataclass(frozen=True)
class DitInventory:
    layers: tuple[LinearLayer, ...]
    stored_bytes: int  # parameters and buffers as stored (quantized tensors by their inner data)
    # (name, format) of every floating parameter or buffer not stored as a plain bf16 tensor
    not_bf16: tuple[tuple[str, str], ...] = ()

    def formats(self) -> dict[str, int]:
        """Layer format -> number of linear layers."""
        return dict(Counter(layer.format for layer in self.layers))

    def linear_bytes(self) -> tuple[int, int]:
        """(bytes the linear weights store, bytes they would store in bf16)."""
        return sum(layer.weight_bytes for layer in self.layers), sum(layer.bf16_bytes for layer in self.layers)

    def describe(self) -> str:
        if not self.layers:
            return "no linear layers"
        text = ", ".join(f"{n} {fmt}" for fmt, n in sorted(self.formats().items()))
        quantized = Counter(layer.activations for layer in self.layers if layer.activations != COMPUTE_DTYPE)
        if quantized:
            words = ", ".join(f"{activation_words(a)} in {n}" for a, n in sorted(quantized.items()))
            text += f" (activations {words})"
        stored, bf16 = self.linear_bytes()
        return f"{text}; linear weights {stored} bytes, {stored / bf16:.3f}x of bf16" if bf16 else text


def matches(name: str, patterns: tuple[str, ...] | None) -> bool:
    return any(name == p or name.endswith("." + p) for p in patterns or ())


def inventory(dit: torch.nn.Module, vram: VramLayers = DIFFSYNTH_LAYERS) -> DitInventory:
    """Every linear layer of the DiT (or another component) with its weight format, activation
    handling and bytes, and the bytes it stores; ``vram`` names the VRAM-management layer classes."""
    import torch

    quantize = getattr(dit, "quantize_config", None)
    layers = []
    inner: set[int] = set()  # layers already counted through their wrapper
    # linear layers inside a module DiffSynth casts whole per forward (T5's feed-forward, a video
    # DiT's final Head), by id: that wrapper's computation dtype. Not the component itself: DiffSynth
    # wraps a model class without a VRAM map whole, and a pipeline that calls its blocks directly
    # (not its ``forward``) computes with the stored weights
    cast_by = {id(m): wrapper.computation_dtype for wrapper_name, wrapper in dit.named_modules()
               if wrapper_name and type(wrapper).__name__ == vram.module for m in wrapper.module.modules()}
    for name, module in dit.named_modules():
        if id(module) in inner:
            continue
        if type(module).__name__ == vram.quantized:
            inner.add(id(module.module))
            layers.append(_layer(name, module.module, vram, quantized=True))
        elif quantize is not None and quantize.is_quantized_linear(module):
            layers.append(_layer(name, module, vram, quantized=True))
        elif isinstance(module, torch.nn.Linear):
            # a quantized weight in a DiT without DiffSynth's quantize_config (the reference) still counts
            plain = type(module.weight) in (torch.Tensor, torch.nn.Parameter)
            layers.append(_layer(name, module, vram, quantized=not plain, cast_to=cast_by.get(id(module))))
    return DitInventory(tuple(layers), stored_bytes(dit), tuple(_not_bf16(dit)))


def _layer(name: str, module: Any, vram: VramLayers, *, quantized: bool, cast_to: Any = None) -> LinearLayer:
    """``cast_to``: the computation dtype of the module wrapper that casts this layer per forward."""
    weight = module.weight
    fmt, weight_bytes = weight_format(weight), tensor_bytes(weight)
    if getattr(module, "disk_offload", False) and not quantized:
        # a disk-offloaded layer holds meta tensors: it is read in its preparing dtype
        # (diffsynth/core/vram/layers.py lines 123-127, 175-180)
        fmt, weight_bytes = _dtype_name(module.preparing_dtype), weight.numel() * module.preparing_dtype.itemsize
    return LinearLayer(name, quantized, f"{type(module).__name__}/{fmt}" if quantized else fmt,
                       managed=type(module).__name__ == vram.storage or cast_to is not None,
                       activations=_dtype_name(cast_to) if cast_to is not None else _activations(module, weight, vram),
                       weight_bytes=weight_bytes, bf16_bytes=module.in_features * module.out_features * BF16_BYTES)


def weight_format(weight: Any) -> str:
    """A plain tensor's dtype ("bfloat16"); a tensor subclass by its class and what it packs:
    "Int8Tensor(int8)", "Float8Tensor(float8_e4m3fn)", "Params4bit(nf4)" (4-bit codes in uint8)."""
    import torch

    if type(weight) in (torch.Tensor, torch.nn.Parameter):
        return _dtype_name(weight.dtype)
    quant_type = getattr(weight, "quant_type", None)  # bitsandbytes: packed only once quantized
    if quant_type is not None and not weight.dtype.is_floating_point:
        return f"{type(weight).__name__}({quant_type})"
    inner = getattr(weight, "qdata", None)  # torchao: the codes beside their scales
    if inner is None and hasattr(weight, "__tensor_flatten__"):
        names, _ = weight.__tensor_flatten__()
        inner = getattr(weight, names[0]) if names else None
    return f"{type(weight).__name__}({_dtype_name((inner if inner is not None else weight).dtype)})"


def _activations(module: Any, weight: Any, vram: VramLayers) -> str:
    """The dtype the layer's matmul takes its activations in."""
    import torch

    kwargs = getattr(weight, "act_quant_kwargs", None)
    if kwargs is not None:  # torchao quantizes the activations per forward
        dtype = getattr(kwargs, "float8_dtype", None)
        return _dtype_name(dtype) if dtype is not None else _ACT_KWARGS_DTYPE.get(type(kwargs).__name__, UNKNOWN)
    if type(module).__name__ == vram.storage:  # casts the stored weight to its computation dtype
        return _dtype_name(getattr(module, "computation_dtype", None) or weight.dtype)
    compute = getattr(module, "compute_dtype", None)  # bitsandbytes Linear4bit dequantizes to it
    if compute is not None:
        return _dtype_name(compute)
    if hasattr(weight, "act_quant_kwargs") or type(weight) in (torch.Tensor, torch.nn.Parameter):
        return _dtype_name(weight.dtype)  # torchao weight-only: dequantized to its dtype; plain: its dtype
    return UNKNOWN


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _not_bf16(dit: torch.nn.Module) -> Iterable[tuple[str, str]]:
    import torch

    # a disk-offloaded wrapper's module holds meta tensors, read from its file in the preparing dtype
    read_as = {id(inner): wrapper.preparing_dtype for wrapper in dit.modules()
               if getattr(wrapper, "disk_offload", False) for inner in wrapper.modules()}
    for prefix, module in dit.named_modules():
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            plain = type(tensor) in (torch.Tensor, torch.nn.Parameter)
            dtype = read_as.get(id(module), tensor.dtype) if plain and tensor.is_meta else tensor.dtype
            if not plain or (dtype.is_floating_point and dtype != torch.bfloat16):
                yield f"{prefix}.{name}" if prefix else name, weight_format(tensor) if dtype is tensor.dtype \
                    else _dtype_name(dtype)


def stored_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers as they are stored (float8 = 1 byte each,
    quantized tensors by their packed data and scales)."""
    return sum(tensor_bytes(t) for t in _weights(module))


def resident_bytes(module: torch.nn.Module, device: Any) -> int:
    """The part of ``stored_bytes`` that lives on ``device`` now: with DiffSynth's VRAM management
    an offloaded layer's weights sit on its offload device (host memory, or ``meta`` when
    offloaded to disk) until a forward onloads them to the computation device."""
    import torch

    want = torch.device(device)
    return sum(tensor_bytes(t) for t in _weights(module) if _same_device(t.device, want))


def _same_device(have: torch.device, want: torch.device) -> bool:
    # "cuda" names the current device: a tensor on cuda:0 is on it for a pipeline built for "cuda"
    return have.type == want.type and (want.index is None or have.index in (None, want.index))


def _weights(module: torch.nn.Module) -> list[Any]:
    """A module's parameters and buffers, each once."""
    seen: set[int] = set()
    out = []
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out.append(tensor)
    return out


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


def check_scheme_applied(dit: torch.nn.Module, scheme: Scheme, checkpoint_id: str,
                         vram: VramLayers = DIFFSYNTH_LAYERS, *, component: str = "DiT",
                         linear_required: bool = True) -> DitInventory:
    """The DiT's inventory, after checking it against ``scheme``; a mismatch raises
    ``CheckpointError`` naming the first wrong layer, what was expected and what was found.
    Another component is checked the same way against its own scheme (``Scheme.only``), named
    by ``component``; with ``linear_required`` False it may have none (a VAE of convolutions)."""
    found = inventory(dit, vram)
    problem = _mismatch(dit, found, scheme, linear_required=linear_required)
    if problem:
        raise CheckpointError(f"checkpoint {checkpoint_id!r}, scheme {scheme.id!r} ({scheme.describe()}): "
                              f"the built {component} is not what the scheme says: {problem}; found {found.describe()}")
    return found


# what an untargeted component may hold: its file's own floating dtypes (T5 releases keep some
# layers in float32, others ship float16), never float8 or a quantized tensor
UNQUANTIZED_FORMATS = frozenset({"bfloat16", "float16", "float32"})


def check_untargeted(module: torch.nn.Module, scheme: Scheme, checkpoint_id: str, component: str,
                     vram: VramLayers = DIFFSYNTH_LAYERS) -> DitInventory:
    """A component the scheme leaves alone: every linear layer and every floating parameter as its
    file stores it (bf16, float16 or float32), none quantized or float8 (buffers are the model's
    own business)."""
    found = inventory(module, vram)
    layers = [layer for layer in found.layers if layer.quantized or layer.format not in UNQUANTIZED_FORMATS]
    problem = None
    if layers:
        problem = (f"{len(layers)} of the {len(found.layers)} linear layers are quantized or float8 (first: "
                   f"{layers[0].name}: {layers[0].format})")
    else:
        wrong = [(name, weight_format(p)) for name, p in module.named_parameters()
                 if weight_format(p) not in UNQUANTIZED_FORMATS]
        if wrong:
            problem = f"{len(wrong)} parameters are quantized or float8 (first: {wrong[0][0]}: {wrong[0][1]})"
    if problem:
        raise CheckpointError(f"checkpoint {checkpoint_id!r}, scheme {scheme.id!r} ({scheme.describe()}): the "
                              f"{component} should stay as its file stores it (the scheme does not name it) but "
                              f"is not: {problem}; found {found.describe()}")
    return found


def differences(layer: LinearLayer, want: KindExpectation) -> list[str]:
    """What of ``layer`` is not what ``want`` says: weight format, activations, stored bytes."""
    out = []
    if want.format is not None and layer.format != want.format:
        out.append(f"weight format expected {want.format}, found {layer.format}")
    if want.format is None and (not layer.quantized or layer.format.rsplit("/", 1)[-1] in _PLAIN_FLOATS):
        out.append(f"weight format expected a format of {want.what}, found {layer.format}"
                   f"{'' if layer.quantized else ' in a plain Linear'}")
    if want.managed and not layer.managed:
        out.append("expected DiffSynth's VRAM-management cast per layer, found a plain Linear")
    if want.activations is not None and layer.activations != want.activations:
        out.append(f"activations expected {activation_words(want.activations)}, "
                   f"found {activation_words(layer.activations)}")
    if not want.min_ratio <= layer.bytes_ratio <= want.max_ratio:
        out.append(f"stored bytes expected {want.bytes_words()}, found {layer.bytes_ratio:.3f}x "
                   f"({layer.weight_bytes} of {layer.bf16_bytes} bytes)")
    return out


def _first_wrong(layers: list[LinearLayer], want: KindExpectation, what: str) -> str | None:
    wrong = [(layer, diffs) for layer in layers if (diffs := differences(layer, want))]
    if not wrong:
        return None
    layer, diffs = wrong[0]
    return f"{len(wrong)} of the {len(layers)} {what} are not {want.what} (first: {layer.name}: {'; '.join(diffs)})"


def _mismatch(dit: torch.nn.Module, found: DitInventory, scheme: Scheme, *,
              linear_required: bool = True) -> str | None:
    if not found.layers and (linear_required or scheme.quantization is not None):
        return "it has no linear layers" + ("" if linear_required else f" for {scheme.kind} to quantize")
    if not found.layers:
        return _stored_without_linears(dit, scheme)
    want = expectation(scheme)
    if scheme.quantization is None:
        problem = _first_wrong(list(found.layers), want, "linear layers")
        if problem and not scheme.is_reference and not all(layer.managed for layer in found.layers):
            # float8 storage computes only through DiffSynth's per-layer cast: a DiT class without a
            # VRAM-management entry is loaded as plain layers (upcast, or float8 that cannot compute)
            problem += "; DiffSynth did not apply float8 storage to this model class"
        if problem is None and scheme.is_reference and found.not_bf16:
            name, fmt = found.not_bf16[0]
            problem = (f"{len(found.not_bf16)} parameters or buffers of the bf16 reference are not bfloat16 "
                       f"(first: {name}: expected bfloat16, found {fmt})")
        return problem
    q = scheme.quantization
    targeted = [layer for layer in found.layers
                if (q.target_modules is None or matches(layer.name, q.target_modules))
                and not matches(layer.name, q.exclude_modules)]
    if not targeted:
        return "no linear layer matches the scheme's target_modules / exclude_modules"
    if q.mode == "dequant_once":  # DiffSynth restores plain bf16 layers that carry the error
        return _first_wrong(list(found.layers), BF16, "linear layers (dequant_once)") or \
            _off_grid(dit, targeted, want)
    names = {layer.name for layer in targeted}
    return _first_wrong(targeted, want, "targeted linear layers") or \
        _first_wrong([layer for layer in found.layers if layer.name not in names], BF16,
                     "linear layers outside the targeted ones")


def _stored_without_linears(module: torch.nn.Module, scheme: Scheme) -> str | None:
    """A component without linear layers (a VAE of convolutions): under float8 storage DiffSynth
    stores every floating parameter of its wrapped modules in that dtype; the reference, none."""
    import torch

    want = getattr(torch, scheme.storage_dtype)
    params = [(name, p.dtype) for name, p in module.named_parameters() if p.dtype.is_floating_point]
    wrong = [(name, dtype) for name, dtype in params if dtype != want]
    if not params or not wrong:
        return None if params else "it has no floating parameters"
    name, dtype = wrong[0]
    return (f"{len(wrong)} of its {len(params)} floating parameters are not {scheme.storage_dtype} "
            f"(first: {name}: {_dtype_name(dtype)})")


def _off_grid(dit: torch.nn.Module, targeted: list[LinearLayer], want: KindExpectation) -> str | None:
    """dequant_once: the targeted layers' values must still lie on the method's grid."""
    from quant_guard.model.quant_grid import on_grid_fraction

    if want.grid is None:
        return (f"nothing shows that {want.what} quantized these bf16 layers: dequant_once evidence (the values "
                "lying on the method's grid) is known only for the methods in quant_guard/model/scheme_kinds.py "
                "with their default layout")
    off = []
    for layer in targeted:
        module = dit.get_submodule(layer.name)
        fraction = on_grid_fraction(getattr(module, "module", module).weight, want.grid, want.block)
        if fraction < GRID_MIN_FRACTION:
            off.append((layer.name, fraction))
    if not off:
        return None
    name, fraction = off[0]
    return (f"{len(off)} of the {len(targeted)} targeted linear layers do not lie on the {want.grid} grid of "
            f"{want.what}, so they were never quantized (first: {name}: expected at least "
            f"{GRID_MIN_FRACTION:.0%} of its weights on the grid, found {fraction:.1%})")
