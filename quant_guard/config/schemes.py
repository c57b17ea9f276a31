"""The DiT variants a checkpoint is rendered with: the bf16 reference and the candidate schemes.

A scheme is one way of making the DiT smaller, in DiffSynth 2.x terms:

- **storage** (``float8_e4m3fn``, ``float8_e5m2``): DiffSynth's VRAM management keeps the DiT's
  linear weights in that dtype and casts each layer to bf16 for its forward (the source
  article's scheme; ``ModelConfig`` offload/onload dtypes, ``diffsynth/core/vram/layers.py``);
- **quantize**: any method of ``diffsynth.core.quant`` (``QuantizeConfig(method=...)``: torchao
  int8/fp8, bitsandbytes NF4, ...), with its options, applied by ``ModelConfig(quantize=...)``;
- **pre-quantized**: a DiT file that already holds the scheme's weights: a float8 safetensors
  (storage) or a file saved by DiffSynth's quantization (``load_prequantized``).

A scheme quantizes the DiT unless it names the components it quantizes (``components = { dit =
..., text_encoder_t5 = ... }``): then each named component gets its own storage dtype, method or
pre-quantized file (a ``ComponentScheme``) and the others stay bf16. The DiT's entry backs the
scheme's own fields (``storage_dtype``, ``quantization``, ``dit``), so code that only knows
about the DiT reads a per-component scheme unchanged.

Every scheme of a checkpoint is compared with the same bf16 golden. Plain data here (no torch):
the configuration builds these, ``pipelines.py`` turns them into ``ModelConfig`` fields and
``scheme_check.py`` checks that the built DiT is what the scheme says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quant_guard.config.families import SECOND_DIT
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


DIT = "dit"  # the component every family files its DiT under (model.families.base.DIT)


@dataclass(frozen=True)
class ComponentScheme:
    """How one component is stored: a storage dtype, a quantization method, and/or a file of its own."""

    storage_dtype: str = COMPUTE_DTYPE  # how VRAM management stores its linear weights
    quantization: Quantization | None = None
    file: ComponentSource | None = None  # a pre-quantized file replacing the bf16 one

    @property
    def is_reference(self) -> bool:
        return self.storage_dtype == COMPUTE_DTYPE and self.quantization is None and self.file is None

    @property
    def kind(self) -> str:
        """The storage dtype or the method."""
        return self.quantization.method if self.quantization is not None else self.storage_dtype

    def describe(self) -> str:
        """One line, e.g. "bitsandbytes_nf4 (dynamic; 2 module patterns kept in bf16)"."""
        if self.is_reference:
            return "bf16"
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
        return text + (f", pre-quantized file {self.file.describe()}" if self.file is not None else "")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"storage_dtype": self.storage_dtype}
        if self.quantization is not None:
            out["quantize"] = self.quantization.as_dict()
        if self.file is not None:
            out["file"] = self.file.describe()
        return out


BF16_COMPONENT = ComponentScheme()


@dataclass(frozen=True)
class Scheme:
    id: str  # names the test, the expected-metrics file and the report's row
    # the DiT's scheme (the only one of a scheme that names no components)
    storage_dtype: str = COMPUTE_DTYPE  # how VRAM management stores the DiT's linear weights
    quantization: Quantization | None = None
    dit: ComponentSource | None = None  # a pre-quantized DiT file replacing the bf16 one
    thresholds: ThresholdOverrides = field(default_factory=ThresholdOverrides)
    # the components other than the DiT it quantizes, (name, how) sorted by name; () = the DiT only
    others: tuple[tuple[str, ComponentScheme], ...] = ()

    @property
    def dit_scheme(self) -> ComponentScheme:
        return ComponentScheme(self.storage_dtype, self.quantization, self.dit)

    def component(self, name: str) -> ComponentScheme:
        """How ``name`` is stored under this scheme (bf16 when it does not target it)."""
        if name == DIT:
            return self.dit_scheme
        if name == SECOND_DIT:  # the DiT's storage and method, not its own file: both DiTs quantized alike
            return ComponentScheme(self.storage_dtype, self.quantization)
        return dict(self.others).get(name, BF16_COMPONENT)

    @property
    def targets(self) -> tuple[str, ...]:
        """The components it stores other than in bf16, the DiT first."""
        return tuple(name for name in (DIT, *(n for n, _ in self.others)) if not self.component(name).is_reference)

    @property
    def is_reference(self) -> bool:
        return not self.targets

    @property
    def kind(self) -> str:
        """The name its measured thresholds are filed under: the DiT's storage dtype or method; a
        scheme quantizing other components "name:kind+name:kind" ("text_encoder_t5:float8_e4m3fn"
        for one alone; a combination without an entry of its own falls back on its parts,
        ``threshold_parts``)."""
        if not self.others:
            return self.dit_scheme.kind
        return "+".join(f"{name}:{self.component(name).kind}" for name in self.targets)

    @property
    def threshold_parts(self) -> tuple[str, ...]:
        """The kinds of its parts, one per targeted component, under which measured thresholds are
        filed: the DiT's bare (``kind`` of a DiT-only scheme), another component's "name:kind"
        (``kind`` of a scheme quantizing that component alone). ``thresholds.embedded_thresholds``
        falls back on them for a combination without its own measurement."""
        return tuple(self.component(name).kind if name == DIT else f"{name}:{self.component(name).kind}"
                     for name in self.targets)

    def describe(self) -> str:
        """One line for messages and the report, e.g. "bitsandbytes_nf4 (dynamic; 2 modules kept in bf16)"."""
        if self.is_reference:
            return "bf16 reference"
        if not self.others:
            return self.dit_scheme.describe()
        return "; ".join(f"{name} {self.component(name).describe()}" for name in self.targets)

    def as_dict(self) -> dict[str, Any]:
        """What results.json records about the scheme (the DiT's keys as before; ``components``
        when it quantizes others)."""
        out: dict[str, Any] = {"id": self.id, "storage_dtype": self.storage_dtype}
        if self.quantization is not None:
            out["quantize"] = self.quantization.as_dict()
        if self.dit is not None:
            out["dit"] = self.dit.describe()
        if self.others:
            out["components"] = {name: self.component(name).as_dict() for name in self.targets}
        return out

    def only(self, name: str) -> Scheme:
        """The scheme of component ``name`` alone, as a DiT-only scheme (what the scheme check
        compares that component with)."""
        c = self.component(name)
        return Scheme(self.id, storage_dtype=c.storage_dtype, quantization=c.quantization, dit=c.file)


REFERENCE = Scheme("bf16")
FLOAT8_E4M3FN = Scheme("float8_e4m3fn", storage_dtype="float8_e4m3fn")
# A checkpoint without a schemes list: the source article's single float8 candidate.
DEFAULT_SCHEMES = (FLOAT8_E4M3FN,)
