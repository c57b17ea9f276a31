"""What each scheme kind must show on the built DiT's linear layers: the weight format, how the
layer treats its activations, and the bytes the weight stores compared with the same weight in
bf16. ``scheme_check.py`` inventories the layers and compares them with these.

The known methods below are read off DiffSynth 2.1.12's method definitions
(``diffsynth/core/quant/backends/torchao.py`` and ``bitsandbytes.py``: the torchao config or
bitsandbytes config each method name builds) and the tensors those configs make:

- torchao ``Int8WeightOnlyConfig`` / ``Int8DynamicActivationInt8WeightConfig``: an ``Int8Tensor``
  (int8 ``qdata``, a float32 scale and an int8 zero point per row); the dynamic-activation
  config sets ``act_quant_kwargs`` on it, so each forward quantizes the activations to int8;
- torchao ``Float8WeightOnlyConfig`` / ``Float8DynamicActivationFloat8WeightConfig``: a
  ``Float8Tensor`` (float8_e4m3fn ``qdata`` and float32 scales), ``act_quant_kwargs`` with
  ``float8_dtype`` for the dynamic one;
- bitsandbytes ``nf4`` / ``fp4``: a ``Params4bit`` of packed 4-bit codes (two per uint8) with a
  quantization state of one absmax per block (64 weights unless ``blocksize`` says otherwise),
  computed in the layer's ``compute_dtype`` (bf16).

``tests/model/test_scheme_check.py`` quantizes one layer with DiffSynth's own backend for each of these
(torchao_fp8_w8a8 with torchao's CUDA capability check bypassed: only its forward needs the GPU)
and checks that it shows exactly what this table says.

Any other method (or a known one with backend options that change its layout) is held to what
every weight quantization shares: DiffSynth counts the layer as quantized, the weight is not a
plain 16- or 32-bit float tensor, and it stores at most ``GENERIC_MAX_RATIO`` of its bf16 bytes;
its activation handling is not checked, and in dequant_once mode nothing shows that it ran, so
the check refuses it. Plain data here, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from quant_guard.config.schemes import COMPUTE_DTYPE, Scheme

# Quantization parameters (scales, zero points, absmax per block) may add up to this many bits
# per weight on top of its codes: a float32 scale and an int8 zero point per row of 64 weights is
# 0.625, NF4's absmax per block of 64 is 0.125 (0.5 unquantized). It keeps int8 (0.50-0.59 of
# bf16) apart from 4-bit (0.25-0.34) and from bf16 (1.0).
PARAMETER_BITS = 1.5
# A method not in the table must at least shrink its weights this far (12 bits per weight with
# its parameters; every method DiffSynth registers stores 4 or 8 bits plus scales).
GENERIC_MAX_RATIO = 0.75
# dequant_once: the share of a layer's checked weights that must lie on the method's grid
# (an honest layer measures 0.998-1.0, a never-quantized one 0.0-0.2; quant_grid.py).
GRID_MIN_FRACTION = 0.9

BF16_BYTES = 2
UNKNOWN = "unknown"  # a quantized weight that records nothing about its activations

# The weight formats LinearLayer.format spells (scheme_check.weight_format).
TORCHAO_INT8 = "TorchaoLinear/Int8Tensor(int8)"
TORCHAO_FP8 = "TorchaoLinear/Float8Tensor(float8_e4m3fn)"
BNB_4BIT = "BitsAndBytesLinear4bit/Params4bit({})"


@dataclass(frozen=True)
class KindExpectation:
    """What every targeted linear layer of a scheme kind must show."""

    what: str  # for messages: "torchao_int8_w8a16", "bf16", "stored in float8_e4m3fn ..."
    format: str | None  # LinearLayer.format exactly; None: any quantized format (not a plain float)
    activations: str | None  # "bfloat16": left alone; "int8" etc.: quantized per forward; None: not checked
    min_ratio: float  # stored weight bytes / bf16 weight bytes
    max_ratio: float
    managed: bool = False  # DiffSynth's VRAM management must cast it per forward (storage schemes)
    grid: str | None = None  # dequant_once: the grid its values keep (quant_grid.py); None: no evidence known
    block: int = 64  # the grid's block size where it has one (bitsandbytes)
    config: str = ""  # the backend config class DiffSynth builds for the method (checked by the tests)

    def bytes_words(self) -> str:
        if self.min_ratio == self.max_ratio:
            return f"{self.min_ratio:.2f}x of bf16"
        if self.min_ratio == 0:
            return f"at most {self.max_ratio:.2f}x of bf16"
        return f"{self.min_ratio:.2f}-{self.max_ratio:.2f}x of bf16"


def _quantized(method: str, fmt: str, activations: str, bits: int, grid: str, config: str) -> KindExpectation:
    return KindExpectation(method, fmt, activations, bits / 16, (bits + PARAMETER_BITS) / 16, grid=grid,
                           config=config)


METHODS: dict[str, KindExpectation] = {e.what: e for e in (
    _quantized("torchao_int8_w8a16", TORCHAO_INT8, COMPUTE_DTYPE, 8, "int8", "Int8WeightOnlyConfig"),
    _quantized("torchao_int8_w8a8", TORCHAO_INT8, "int8", 8, "int8", "Int8DynamicActivationInt8WeightConfig"),
    _quantized("torchao_fp8_w8a16", TORCHAO_FP8, COMPUTE_DTYPE, 8, "float8_e4m3fn", "Float8WeightOnlyConfig"),
    _quantized("torchao_fp8_w8a8", TORCHAO_FP8, "float8_e4m3fn", 8, "float8_e4m3fn",
               "Float8DynamicActivationFloat8WeightConfig"),
    _quantized("bitsandbytes_nf4", BNB_4BIT.format("nf4"), COMPUTE_DTYPE, 4, "4bit", "BitsAndBytesNF4Config"),
    _quantized("bitsandbytes_fp4", BNB_4BIT.format("fp4"), COMPUTE_DTYPE, 4, "4bit", "BitsAndBytesFP4Config"),
)}
# backend_config_kwargs that leave a known method's layout (format, bytes, grid) as the table says
_LAYOUT_NEUTRAL = {"torchao": {"set_inductor_config", "version", "reduce_range"},
                   "bitsandbytes": {"blocksize", "compress_statistics"}}

BF16 = KindExpectation("bf16", COMPUTE_DTYPE, COMPUTE_DTYPE, 1.0, 1.0)


def storage(dtype: str) -> KindExpectation:
    """DiffSynth's VRAM management keeps the weight in ``dtype`` (1 byte) and casts it to bf16 per forward."""
    return KindExpectation(f"stored in {dtype} by DiffSynth's VRAM management", dtype, COMPUTE_DTYPE, 0.5, 0.5,
                           managed=True)


def generic(method: str) -> KindExpectation:
    return KindExpectation(method, None, None, 0.0, GENERIC_MAX_RATIO)


def expectation(scheme: Scheme) -> KindExpectation:
    """What the layers ``scheme`` targets must show (in dynamic mode for a quantization method;
    dequant_once layers are bf16 on ``expectation(...).grid``)."""
    if scheme.quantization is None:
        return BF16 if scheme.storage_dtype == COMPUTE_DTYPE else storage(scheme.storage_dtype)
    q = scheme.quantization
    known = METHODS.get(q.method)
    if known is None:
        return generic(q.method)
    options = {key for key, _ in q.backend_config_kwargs}
    if not options <= _LAYOUT_NEUTRAL[q.method.split("_", 1)[0]]:
        # another layout (group size, ...): keep format and activations, drop the byte range and grid
        return KindExpectation(known.what, known.format, known.activations, 0.0, GENERIC_MAX_RATIO,
                               config=known.config)
    block = dict(q.backend_config_kwargs).get("blocksize") or known.block
    return KindExpectation(known.what, known.format, known.activations, known.min_ratio, known.max_ratio,
                           grid=known.grid, block=int(block), config=known.config)


def activation_words(activations: str) -> str:
    """LinearLayer.activations in words: the dtype its matmul takes the activations in."""
    if activations == COMPUTE_DTYPE:
        return f"left in {COMPUTE_DTYPE}"
    return "not recorded" if activations == UNKNOWN else f"quantized to {activations} per forward"
