"""Deliberate damage to a DiT state dict: the faults quant_guard must catch.

Used by the tests (a candidate made worse on purpose must fail), by the sensitivity
benchmark that sets the default thresholds, and by ``quant-guard degrade``.
Every kind is deterministic for a given seed."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

StateDict = dict[str, "torch.Tensor"]


class Degradation(str, Enum):
    ROUND = "round"  # every weight matrix rounded to a few levels (broken quantizer)
    NOISE = "noise"  # Gaussian noise of a fraction of each weight's std on one block
    ZERO_ATTN_OUT = "zero-attn-out"  # attention output projection of one block zeroed
    SCALE = "scale"  # one linear layer scaled (a wrong per-tensor scale)
    DROP_TEXT = "drop-text"  # text conditioning removed (context + pooled embedders zeroed)
# No "e5m2" kind: float8_e5m2 is a legitimate storage format (``quant-guard quantize --dtype``),
# not damage. It rounds large weights more coarsely than e4m3fn but keeps small ones that e4m3fn
# flushes to subnormals; on the tiny checkpoint it lands as close to bf16 as e4m3fn does
# (benchmarks/tiny_quality.py), so no visual threshold could call it a fault.


def _is_weight_matrix(name: str, tensor: torch.Tensor) -> bool:
    return name.endswith(".weight") and tensor.ndim == 2


def degrade(state: StateDict, kind: Degradation | str, *, seed: int = 0, block: int = 0,
            strength: float | None = None) -> StateDict:
    """Return a damaged copy of ``state`` (a Flux DiT state dict in DiffSynth's naming).

    ``block`` picks the joint transformer block for the per-block kinds; ``strength`` is the
    kind's knob (levels for ROUND, noise fraction for NOISE, factor for SCALE)."""
    import torch

    kind = Degradation(kind)
    out = {k: v.clone() for k, v in state.items()}
    gen = torch.Generator().manual_seed(seed)
    prefix = f"blocks.{block}."
    if not any(k.startswith(prefix) for k in out):
        raise ValueError(f"state dict has no joint block {block} (no key starts with {prefix!r})")

    if kind is Degradation.ROUND:
        levels = int(strength or 3)
        for k, v in out.items():
            if _is_weight_matrix(k, v):
                w = v.float()
                lo, hi = w.min(), w.max()
                step = (hi - lo) / (levels - 1)
                out[k] = (torch.round((w - lo) / step) * step + lo).to(v.dtype)
    elif kind is Degradation.NOISE:
        frac = strength if strength is not None else 0.25
        for k, v in out.items():
            if k.startswith(prefix) and _is_weight_matrix(k, v):
                w = v.float()
                out[k] = (w + torch.randn(w.shape, generator=gen) * w.std() * frac).to(v.dtype)
    elif kind is Degradation.ZERO_ATTN_OUT:
        for k in (f"{prefix}attn.a_to_out.weight", f"{prefix}attn.a_to_out.bias"):
            out[k] = torch.zeros_like(out[k])
    elif kind is Degradation.SCALE:
        k = f"{prefix}ff_a.0.weight"
        out[k] = (out[k].float() * (strength if strength is not None else 1.25)).to(out[k].dtype)
    elif kind is Degradation.DROP_TEXT:
        for k, v in out.items():
            if k.startswith(("context_embedder.", "pooled_text_embedder.")):
                out[k] = torch.zeros_like(v)
    return out
