"""Evidence that a dequant_once layer went through quantization: its bf16 weight still lies on the
method's grid.

DiffSynth's dequant_once mode quantizes each targeted layer and turns it straight back into a
plain bf16 ``nn.Linear`` (``QuantizeConfig.dequantize_model``), so format and bytes are those of
bf16; only the values remember the quantization:

- ``int8`` (torchao ``Int8Tensor``, symmetric per row, or per tensor): value = q * scale with an
  integer q in [-128, 127]. The scale is fitted on the row (or tensor), then each weight whose q
  is at most ``INDEX_WINDOW`` must be within bf16 rounding (2^-8 relative) of an integer q; larger
  q are left out because there bf16 rounding reaches half a step. A never-quantized weight lands
  there by chance about 15% of the time.
- ``float8_e4m3fn`` (torchao ``Float8Tensor``, per row or per tensor): value = f * amax / 448 with
  f a float8_e4m3fn number (3 mantissa bits): value / scale within 2^-7 of one. Chance: about 20%.
- ``4bit`` (bitsandbytes NF4/FP4): value = code * absmax of its block, 16 codes: every block of
  ``block`` consecutive weights holds at most 16 distinct values. Chance: none.

Only the first ``SAMPLE_ROWS`` rows of a layer are read (per-tensor scales use the whole
weight's maximum), so the check costs little on a full-size DiT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SAMPLE_ROWS = 64
INDEX_WINDOW = 32
_CODES_4BIT = 16


def on_grid_fraction(weight: torch.Tensor, grid: str, block: int = 64) -> float:
    """The share of the sampled weights (``4bit``: of the blocks) that lie on ``grid``; 1.0 for an
    honest dequant_once layer, far less for one that was never quantized."""
    import torch

    with torch.no_grad():
        full = weight.detach()
        full = full.reshape(full.shape[0], -1) if full.dim() > 1 else full.reshape(1, -1)
        x = full[:SAMPLE_ROWS].float()
        if grid == "4bit":
            return _codebook_fraction(x, block)
        scales = (x.abs().amax(dim=1, keepdim=True), full.abs().amax().float().reshape(1, 1))
        if grid == "int8":
            return max(_int_fraction(x, amax, per_row=i == 0) for i, amax in enumerate(scales))
        if grid.startswith("float8"):
            dtype = getattr(torch, grid)
            return max(_float8_fraction(x, amax, dtype) for amax in scales)
    raise ValueError(f"unknown quantization grid {grid!r}")


def _int_fraction(x: torch.Tensor, amax: torch.Tensor, *, per_row: bool) -> float:
    import torch

    tiny = torch.finfo(torch.float32).tiny
    scale = (amax / 127.5).clamp(min=tiny)  # torchao: amax / ((127 - -128) / 2)
    for _ in range(2):  # refit the scale on the small indices, where bf16 rounding is far below a step
        q = (x / scale).round()
        small = (q.abs() <= INDEX_WINDOW).float()
        num, den = (x * q * small), (q * q * small)
        num, den = (num.sum(dim=1, keepdim=True), den.sum(dim=1, keepdim=True)) if per_row else (num.sum(), den.sum())
        scale = torch.where(den > 0, num / den.clamp(min=tiny), scale).clamp(min=tiny)
    y = x / scale
    inside = y.abs() <= INDEX_WINDOW
    near = (y - y.round()).abs() <= y.abs() * 2**-8 * 1.1 + 2**-10
    return (near & inside).sum().item() / max(int(inside.sum().item()), 1)


def _float8_fraction(x: torch.Tensor, amax: torch.Tensor, dtype: torch.dtype) -> float:
    import torch

    top = torch.finfo(dtype).max
    y = (x / (amax / top).clamp(min=torch.finfo(torch.float32).tiny)).clamp(-top, top)
    nearest = y.to(dtype).float()
    return ((y - nearest).abs() <= y.abs() * 2**-7 + 2**-12).float().mean().item()


def _codebook_fraction(x: torch.Tensor, block: int) -> float:
    flat = x.reshape(-1)
    whole = flat.numel() // block * block
    blocks = flat[:whole].reshape(-1, block) if whole else flat.reshape(1, -1)
    ordered = blocks.sort(dim=1).values
    distinct = (ordered[:, 1:] != ordered[:, :-1]).sum(dim=1) + 1
    return (distinct <= _CODES_4BIT).float().mean().item()
