"""Deliberate damage to a DiT (or VAE) state dict, and to a decoded image: the faults quant_guard
must catch.

Used by the tests (a candidate made worse on purpose must fail), by the benchmarks that set the
default thresholds and scorecard limits, and by ``quant-guard degrade``.
Every kind is deterministic for a given seed."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from quant_guard.model.families import default_family

if TYPE_CHECKING:
    import numpy as np
    import torch

    from quant_guard.model.families.base import DamageTargets, ModelFamily

StateDict = dict[str, "torch.Tensor"]


class Degradation(str, Enum):
    ROUND = "round"  # every weight matrix rounded to a few levels (broken quantizer)
    NOISE = "noise"  # Gaussian noise of a fraction (default 0.75) of each weight's std on one block
    ZERO_ATTN_OUT = "zero-attn-out"  # attention output projection of one block zeroed
    SCALE = "scale"  # one linear layer scaled (a wrong per-tensor scale; default x2)
    DROP_TEXT = "drop-text"  # text conditioning removed (the family's text embedders zeroed)
    # Aimed at the scorecard's colour dimension (quant_guard.judge.scorecard): a wrong bias on one latent
    # channel of the DiT's final projection: every token's velocity for that channel is off by the
    # same amount; the decoded image gets a cast, and its edges' contrast moves with it
    COLOUR_SHIFT = "colour-shift"  # final projection's bias of latent channel COLOUR_SHIFT_CHANNEL + offset (default 2)
    # ... and the purest colour-only fault: one output channel of the VAE decoder's final layer
    # off by a constant, so every pixel of that RGB channel moves by the same amount (a cast) and
    # nothing else changes until the channel clips. Damages the VAE file, not the DiT.
    COLOUR_CAST = "colour-cast"  # decoder.conv_out.bias of RGB channel COLOUR_CAST_CHANNEL + offset (default 0.05)
    # A text encoder's fault (a broken fp8/int8 text encoder file): Gaussian noise of a fraction
    # (default TEXT_ENCODER_NOISE_FRACTION) of each weight's std on one block of the family's text
    # encoder (``DamageTargets.text_encoder``). Damages that component's file, not the DiT.
    TEXT_ENCODER_NOISE = "text-encoder-noise"


# The kinds the gate's LPIPS/SSIM/PSNR thresholds were set against (benchmarks/tiny_quality.py);
# COLOUR_SHIFT and COLOUR_CAST are measured by the scorecard benchmark (benchmarks/tiny_scorecard.py),
# with soften_image (below) for softening.
THRESHOLD_KINDS = (Degradation.ROUND, Degradation.NOISE, Degradation.ZERO_ATTN_OUT, Degradation.SCALE,
                   Degradation.DROP_TEXT)
# No "e5m2" kind: float8_e5m2 is a legitimate storage format (``quant-guard quantize --dtype``),
# not damage. It rounds large weights more coarsely than e4m3fn but keeps small ones that e4m3fn
# flushes to subnormals; on the tiny checkpoint it lands a little farther from bf16 than e4m3fn
# and far closer than any damage kind (benchmarks/tiny_quality.py): not a fault to flag.


# Default strengths of the mild kinds, set with benchmarks/tiny_quality.py on the trained tiny
# checkpoint (24 seeds): at 0.25 / x1.25 some seeds came as close to their bf16 golden as honest
# float8 did (LPIPS 0.0013-0.0016 vs honest up to 0.0050); at 0.75 / x2 the mildest damaged image
# is LPIPS 0.0123 / PSNR 28.7 dB against honest float8's worst 0.0050 / 39.0 dB.
NOISE_FRACTION = 0.75
SCALE_FACTOR = 2.0
# Added to one latent channel's bias of the final projection (benchmarks/tiny_scorecard.py; README,
# "The scorecard").
COLOUR_SHIFT_OFFSET = 2.0
# Of the 16 latent channels, the one whose offset moves colour most relative to detail (a sweep of
# all 16 at +1 on 6 pairs: ΔE p95 1.0-3.2; channel 1: ΔE p95 x2.8 honest's, sharpness barely moved).
COLOUR_SHIFT_CHANNEL = 1
# Added to the green output of the VAE decoder's last convolution: its output is the image in
# [-1, 1], so 0.05 is 6.4 of 255 levels of green, towards magenta when negative (README, "The scorecard").
COLOUR_CAST_OFFSET = 0.05
# R, G, B = 0, 1, 2. Green weighs most in lightness, so a green cast is the hardest test that the
# sharpness measure ignores colour.
COLOUR_CAST_CHANNEL = 1
# TEXT_ENCODER_NOISE's default: measured on the tiny checkpoint's T5 (benchmarks/tiny_text_encoder.py)
TEXT_ENCODER_NOISE_FRACTION = 0.75
# Softening: the Gaussian blur (sigma in pixels) soften_image applies to a decoded image. At 0.6 px
# the tiny renders keep 0.67-0.83 of their fine-detail energy, while honest float8 against a golden
# from another CPU keeps at least 0.92 (benchmarks/tiny_scorecard.py).
SOFTEN_SIGMA = 0.6


def _is_weight_matrix(name: str, tensor: torch.Tensor) -> bool:
    return name.endswith(".weight") and tensor.ndim == 2


def degrade(state: StateDict, kind: Degradation | str, *, seed: int = 0, block: int = 0,
            strength: float | None = None, family: ModelFamily | None = None) -> StateDict:
    """Return a damaged copy of ``state``: a DiT state dict of ``family`` (None: the default
    family) in DiffSynth's naming, or for COLOUR_CAST its VAE's. The tensors each kind damages are
    the family's (``DamageTargets``); a kind the family's DiT cannot take (no bias on its final
    projection for COLOUR_SHIFT) or a state dict without the family's tensor is a ``ValueError``
    naming the family and the tensor.

    ``block`` picks the transformer block of the family's main block list for the per-block kinds;
    ``strength`` is the kind's knob (levels for ROUND, noise fraction for NOISE, factor for SCALE,
    offset for COLOUR_SHIFT and COLOUR_CAST)."""
    import torch

    kind = Degradation(kind)
    family = family or default_family()
    targets = family.damage
    out = {k: v.clone() for k, v in state.items()}
    if kind is Degradation.COLOUR_CAST:  # the one kind that damages the VAE
        decoder_out = targets.decoder_out_bias
        if decoder_out not in out:
            raise ValueError(f"state dict has no {decoder_out!r}: {kind.value} damages the {family.label} VAE "
                             "decoder's final layer, so give it the VAE file, not the DiT")
        bias = out[decoder_out].float().clone()
        bias[COLOUR_CAST_CHANNEL] += strength if strength is not None else COLOUR_CAST_OFFSET
        out[decoder_out] = bias.to(out[decoder_out].dtype)
        return out
    if kind is Degradation.TEXT_ENCODER_NOISE:  # damages the text encoder's file
        return _text_encoder_noise(out, targets, seed=seed, block=block, strength=strength)
    gen = torch.Generator().manual_seed(seed)
    prefix = targets.block.format(block=block)
    if not any(k.startswith(prefix) for k in out):
        raise ValueError(f"state dict has no block {block} of a {family.label} DiT (no key starts with {prefix!r}); "
                         f"is it a {family.label} DiT in DiffSynth's naming?")

    def present(name: str) -> str:
        if name not in out:
            raise ValueError(f"{kind.value} damages {name!r} of a {family.label} DiT, and the state dict has no such "
                             f"tensor; is it a {family.label} DiT in DiffSynth's naming?")
        return name

    if kind is Degradation.ROUND:
        levels = int(strength or 3)
        for k, v in out.items():
            if _is_weight_matrix(k, v):
                w = v.float()
                lo, hi = w.min(), w.max()
                step = (hi - lo) / (levels - 1)
                out[k] = (torch.round((w - lo) / step) * step + lo).to(v.dtype)
    elif kind is Degradation.NOISE:
        frac = strength if strength is not None else NOISE_FRACTION
        for k, v in out.items():
            if k.startswith(prefix) and _is_weight_matrix(k, v):
                w = v.float()
                out[k] = (w + torch.randn(w.shape, generator=gen) * w.std() * frac).to(v.dtype)
    elif kind is Degradation.ZERO_ATTN_OUT:
        for k in (present(prefix + name) for name in targets.attention_out):
            out[k] = torch.zeros_like(out[k])
    elif kind is Degradation.SCALE:
        k = present(prefix + targets.feed_forward_in)
        out[k] = (out[k].float() * (strength if strength is not None else SCALE_FACTOR)).to(out[k].dtype)
    elif kind is Degradation.DROP_TEXT:
        text = [k for k in out if k.startswith(targets.text_embedders)]
        if not text:
            raise ValueError(f"{kind.value} zeroes the {family.label} DiT's text embedders "
                             f"({', '.join(targets.text_embedders)}*), and the state dict has none")
        for k in text:
            out[k] = torch.zeros_like(out[k])
    elif kind is Degradation.COLOUR_SHIFT:
        if targets.final_bias is None:
            raise ValueError(f"{kind.value} shifts the bias of the DiT's final projection to the latent, and a "
                             f"{family.label} DiT's final projection has no bias: this kind cannot be planted there")
        final = present(targets.final_bias)
        bias = out[final].float().clone()
        # the channel's patch positions (FLUX.1: 2x2, channel first)
        bias[targets.channel_positions(COLOUR_SHIFT_CHANNEL, bias.numel())] += (
            strength if strength is not None else COLOUR_SHIFT_OFFSET)
        out[final] = bias.to(out[final].dtype)
    return out


def _text_encoder_noise(out: StateDict, targets: DamageTargets, *, seed: int, block: int,
                        strength: float | None) -> StateDict:
    import torch

    if targets.text_encoder is None:
        raise ValueError(f"{Degradation.TEXT_ENCODER_NOISE.value}: this family does not name its text encoder's "
                         "blocks (DamageTargets.text_encoder)")
    component, block_prefix = targets.text_encoder
    prefix = block_prefix.format(block=block)
    if not any(k.startswith(prefix) for k in out):
        raise ValueError(f"state dict has no {component} block {block} (no key starts with {prefix!r}): "
                         f"{Degradation.TEXT_ENCODER_NOISE.value} damages the {component} file, so give it that file")
    gen = torch.Generator().manual_seed(seed)
    frac = strength if strength is not None else TEXT_ENCODER_NOISE_FRACTION
    for k, v in out.items():
        if k.startswith(prefix) and _is_weight_matrix(k, v):
            w = v.float()
            out[k] = (w + torch.randn(w.shape, generator=gen) * w.std() * frac).to(v.dtype)
    return out


def soften_image(image: np.ndarray, sigma: float = SOFTEN_SIGMA) -> np.ndarray:
    """A decoded uint8 HxWx3 image blurred by a Gaussian of ``sigma`` pixels: the softening
    damage. It acts on the image because no weight damage of the tiny checkpoint we tried softens
    it (README, "The scorecard": the DiT's flow-matching sampler keeps the noise's fine grain when
    the predicted velocity loses it, and the VAE's last convolutions are no smoothing kernels)."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    blurred = gaussian_filter(image.astype(np.float32), (sigma, sigma, 0), mode="reflect")
    return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)


def zoom_image(image: np.ndarray, factor: float, centre: tuple[float, float]) -> np.ndarray:
    """A decoded uint8 HxWx3 image magnified by ``factor`` about ``centre`` (x, y px), the median
    colour of its outermost pixels where the source runs out: a picture whose subject has the
    wrong size (the meaning check's size reading must see it; tests, benchmarks/tiny_meaning.py)."""
    import numpy as np
    from scipy.ndimage import affine_transform

    cx, cy = centre
    matrix = np.diag([1 / factor, 1 / factor])
    offset = np.array([cy - cy / factor, cx - cx / factor])  # out (y, x) <- centre + (out - centre) / factor
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float32)
    fill = np.median(border, axis=0)
    zoomed = np.stack([affine_transform(image[..., c].astype(np.float32), matrix, offset, order=1, mode="constant",
                                        cval=float(fill[c])) for c in range(image.shape[2])], axis=-1)
    return np.clip(np.rint(zoomed), 0, 255).astype(np.uint8)
