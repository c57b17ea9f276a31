"""The DiT variants a checkpoint is rendered with: the bf16 reference and the candidate schemes.

A scheme is one way of making the DiT smaller, in DiffSynth 2.x terms:

- **storage** (``float8_e4m3fn``, ``float8_e5m2``): DiffSynth's VRAM management keeps the DiT's
  linear weights in that dtype and casts each layer to bf16 for its forward (the source
  article's scheme; ``ModelConfig`` offload/onload dtypes, ``diffsynth/core/vram/layers.py``);
- **quantize**: any method of ``diffsynth.core.quant`` (``QuantizeConfig(method=...)``: torchao
  int8/fp8, bitsandbytes NF4, ...), with its options, applied by ``ModelConfig(quantize=...)``;
- **pre-quantized**: a DiT file that already holds the scheme's weights: a float8 safetensors
  (storage) or a file saved by DiffSynth's quantization (``load_prequantized``).

Every scheme of a checkpoint is compared with the same bf16 golden. Plain data here (no torch):
the configuration builds these, ``pipelines.py`` turns them into ``ModelConfig`` fields and
``scheme_check.py`` checks that the built DiT is what the scheme says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quant_guard.config.sources import ComponentSource
from quant_guard.config.thresholds import ThresholdOverrides

COMPUTE_DTYPE = "bfloat16"
STORAGE_DTYPES = ("float8_e4m3fn", "float8_e5m2")
QUANTIZE_MODES = ("dynamic", "dequant_once")  # QuantizeConfig.mode
# What installs the optional quantization backends (pyproject.toml, extra "schemes").
SCHEMES_EXTRA = "pip install 'quant_guard[schemes]'"


@dataclass(frozen=True)
class Quantization:
    """A ``diffsynth.core.quant.QuantizeConfig`` by value, so that configurations stay hashable
    and free of torch."""

    method: str
    mode: str = "dynamic"
    target_modules: tuple[str, ...] | None = None  # None: every nn.Linear of the DiT
    exclude_modules: tuple[str, ...] = ()  # kept in bf16; DiffSynth matches "name" or "*.name"
    backend_config_kwargs: tuple[tuple[str, Any], ...] = ()  # sorted (key, value) pairs
    load_prequantized: bool = False

    def build(self) -> Any:
        """The DiffSynth ``QuantizeConfig`` (imports diffsynth and the method's backend)."""
        from diffsynth.core.quant import QuantizeConfig

        return QuantizeConfig(method=self.method, mode=self.mode,
                              target_modules=None if self.target_modules is None else list(self.target_modules),
                              exclude_modules=list(self.exclude_modules) or None,
                              backend_config_kwargs=dict(self.backend_config_kwargs),
                              load_prequantized=self.load_prequantized)

    def as_dict(self) -> dict[str, Any]:
        """The ``QuantizeConfig`` keyword arguments, for records and printed scheme entries."""
        out: dict[str, Any] = {"method": self.method, "mode": self.mode}
        if self.target_modules is not None:
            out["target_modules"] = list(self.target_modules)
        if self.exclude_modules:
            out["exclude_modules"] = list(self.exclude_modules)
        if self.backend_config_kwargs:
            out["backend_config_kwargs"] = dict(self.backend_config_kwargs)
        if self.load_prequantized:
            out["load_prequantized"] = True
        return out


@dataclass(frozen=True)
class Scheme:
    id: str  # names the test, the expected-metrics file and the report's row
    storage_dtype: str = COMPUTE_DTYPE  # how VRAM management stores the DiT's linear weights
    quantization: Quantization | None = None
    dit: ComponentSource | None = None  # a pre-quantized DiT file replacing the bf16 one
    thresholds: ThresholdOverrides = field(default_factory=ThresholdOverrides)

    @property
    def is_reference(self) -> bool:
        return self.storage_dtype == COMPUTE_DTYPE and self.quantization is None and self.dit is None

    @property
    def kind(self) -> str:
        """The name its measured thresholds are filed under: the storage dtype or the method."""
        return self.quantization.method if self.quantization is not None else self.storage_dtype

    def describe(self) -> str:
        """One line for messages and the report, e.g. "bitsandbytes_nf4 (dynamic; 2 modules kept in bf16)"."""
        if self.is_reference:
            return "bf16 reference"
        if self.quantization is None:
            text = f"{self.storage_dtype} storage"
        else:
            q = self.quantization
            notes = [q.mode]
            if q.target_modules is not None:
                notes.append(f"{len(q.target_modules)} target module patterns")
            if q.exclude_modules:
                notes.append(f"{len(q.exclude_modules)} module patterns kept in bf16")
            if q.backend_config_kwargs:
                notes.append(", ".join(f"{k}={v!r}" for k, v in q.backend_config_kwargs))
            text = f"{q.method} ({'; '.join(notes)})"
        return text + (f", pre-quantized file {self.dit.describe()}" if self.dit is not None else "")

    def as_dict(self) -> dict[str, Any]:
        """What results.json records about the scheme."""
        out: dict[str, Any] = {"id": self.id, "storage_dtype": self.storage_dtype}
        if self.quantization is not None:
            out["quantize"] = self.quantization.as_dict()
        if self.dit is not None:
            out["dit"] = self.dit.describe()
        return out


REFERENCE = Scheme("bf16")
FLOAT8_E4M3FN = Scheme("float8_e4m3fn", storage_dtype="float8_e4m3fn")
# A checkpoint without a schemes list: the source article's single float8 candidate.
DEFAULT_SCHEMES = (FLOAT8_E4M3FN,)
