"""Damage that breaks only the temporal coherence of a Wan clip, applied to a built pipeline's DiT
for the length of a ``with`` block (the benchmark's and the tests' proof that temporal metrics see
what per-frame metrics miss). Weight damage (``quant-guard degrade``) works on the DiT file through
the wan family's ``DamageTargets`` instead.

- ``time_position_jitter``: each latent frame's position on the DiT's temporal RoPE axis moves by
  a random offset (``dit.freqs[0]``, the time third of the 3D RoPE, read by
  ``model_fn_wan_video``). Tokens of one frame share the offset, so attention within a frame is
  unchanged (RoPE is relative); only attention between frames sees a wrong distance.
- ``latent_frame_offset``: the DiT's prediction gets a random offset per latent frame and
  channel (a hook on ``dit.unpatchify``, whose output is the prediction in latent layout b, c, f,
  h, w): each decoded frame is shifted a little, differently from its neighbours: flicker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def time_position_jitter(dit: Any, strength: float, *, seed: int = 0) -> Iterator[None]:
    """Shift latent frame t's temporal RoPE position by ``strength`` x N(0, 1) (frame 0 stays)."""
    import torch

    original = dit.freqs
    time = original[0]  # complex, (positions, head_dim_time // 2): exp(i * t * omega)
    omega = torch.angle(time[1])  # position 1's phases are the frequencies themselves
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randn(time.shape[0], 1, generator=generator, dtype=torch.float64) * strength
    shift[0] = 0
    dit.freqs = (time * torch.polar(torch.ones_like(shift * omega), shift * omega).to(time.dtype),
                 *original[1:])
    try:
        yield
    finally:
        dit.freqs = original


@contextlib.contextmanager
def latent_frame_offset(dit: Any, strength: float, *, seed: int = 0) -> Iterator[None]:
    """Add ``strength`` x N(0, 1) per latent frame and channel to the DiT's prediction."""
    import torch

    unpatchify = dit.unpatchify
    generator = torch.Generator().manual_seed(seed)

    def shifted(x: Any, grid: Any) -> Any:
        out = unpatchify(x, grid)  # b, c, f, h, w
        offset = torch.randn(1, out.shape[1], out.shape[2], 1, 1, generator=generator) * strength
        return out + offset.to(dtype=out.dtype, device=out.device)

    dit.unpatchify = shifted
    try:
        yield
    finally:
        del dit.unpatchify  # the instance attribute; the class's method shows again
