"""Image metrics between a golden image and a candidate: LPIPS-alex v0.1, SSIM, PSNR.

Importing this module is cheap: numpy, torch, lpips and skimage are imported inside the
functions. The LPIPS models are built once per process (weights from ``lpips_weights``).

Never mix implementations between a golden's baseline and a check: SSIM here is always
skimage's with the Wang et al. settings below (torchmetrics' SSIM differs by up to 4e-3).
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quant_guard.config.thresholds import ImageMetrics  # the result type of a comparison (re-exported)

if TYPE_CHECKING:
    import numpy as np
    import torch

# AlexNet's trunk needs 31 px (11x11/4 conv, two 3x3/2 max-pools: the 5th layer is then 1x1);
# below that torch raises deep inside the network. 64x64 is the size LPIPS was trained on.
LPIPS_MIN_SIZE = 31

_model_lock = threading.Lock()


def _check_pair(golden: np.ndarray, candidate: np.ndarray) -> None:
    import numpy as np

    for name, img in (("golden", golden), ("candidate", candidate)):
        if not isinstance(img, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(img).__name__}")
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"{name} must be a uint8 HxWx3 array, got {img.dtype} {img.shape}")
    if golden.shape != candidate.shape:
        raise ValueError(f"image shapes differ: golden {golden.shape}, candidate {candidate.shape}")


def psnr(golden: np.ndarray, candidate: np.ndarray) -> float:
    """PSNR in dB of two uint8 HxWx3 images, data range 255; ``math.inf`` if identical."""
    import numpy as np

    _check_pair(golden, candidate)
    mse = float(np.mean((golden.astype(np.float64) - candidate.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


# Wang et al.'s settings: Gaussian weights (sigma 1.5), population covariance, data range 255.
_SSIM_SETTINGS = dict(channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def ssim(golden: np.ndarray, candidate: np.ndarray) -> float:
    """SSIM with Gaussian weights (sigma 1.5), population covariance, data range 255."""
    from skimage.metrics import structural_similarity

    _check_pair(golden, candidate)
    return float(structural_similarity(golden, candidate, **_SSIM_SETTINGS))


def ssim_with_map(golden: np.ndarray, candidate: np.ndarray) -> tuple[float, np.ndarray]:
    """``ssim`` (the same number) and its local map, float64 HxW (mean over the colour channels)."""
    from skimage.metrics import structural_similarity

    _check_pair(golden, candidate)
    value, full = structural_similarity(golden, candidate, full=True, **_SSIM_SETTINGS)
    return float(value), full.mean(axis=-1)


@functools.cache
def _lpips_model() -> torch.nn.Module:
    """The one LPIPS model of this process (building it costs about 0.5 s: lpips inits AlexNet)."""
    from quant_guard.judge.lpips_weights import build_lpips_model, load_state_dict

    return build_lpips_model(load_state_dict())


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    import numpy as np
    import torch

    # Same arithmetic as lpips.im2tensor (float64, then float32), RGB scaled to [-1, 1].
    scaled = (img.astype(np.float64) / 127.5 - 1.0).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))[None]


def _check_lpips_pair(golden: np.ndarray, candidate: np.ndarray) -> tuple[int, int]:
    """``_check_pair`` and LPIPS's minimum size; the images' (height, width)."""
    _check_pair(golden, candidate)
    height, width = golden.shape[:2]
    if min(height, width) < LPIPS_MIN_SIZE:
        raise ValueError(
            f"LPIPS-alex needs images of at least {LPIPS_MIN_SIZE}x{LPIPS_MIN_SIZE} px, got {height}x{width}"
        )
    return height, width


def _run_lpips(golden: np.ndarray, candidate: np.ndarray, *, spatial: bool) -> torch.Tensor:
    import torch

    _check_lpips_pair(golden, candidate)
    # One model for both modes: `spatial` is read in forward, the lock keeps threads apart.
    with _model_lock, torch.no_grad():  # no_grad is local: the caller's grad mode comes back
        model = _lpips_model()
        model.spatial = spatial
        return model(_to_tensor(golden), _to_tensor(candidate))


def lpips_distance(golden: np.ndarray, candidate: np.ndarray) -> float:
    """LPIPS-alex v0.1 distance on CPU (0 for identical images)."""
    return float(_run_lpips(golden, candidate, spatial=False).item())


def lpips_spatial_map(golden: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per-pixel LPIPS-alex v0.1 map, float32 HxW (each layer's map upsampled bilinearly).

    Its mean is close to, not equal to, ``lpips_distance``; its argmax marks the worst region.
    """
    import numpy as np

    out = _run_lpips(golden, candidate, spatial=True)
    return np.ascontiguousarray(out[0, 0].numpy(), dtype=np.float32)


def lpips_with_map(golden: np.ndarray, candidate: np.ndarray) -> tuple[float, np.ndarray]:
    """``lpips_distance`` and ``lpips_spatial_map`` from one pass of the network: the trunk runs
    once and each layer's weighted difference is both averaged (the distance, the arithmetic of
    ``lpips.LPIPS.forward`` with ``spatial=False``) and upsampled (the map, as with ``spatial=True``)."""
    import numpy as np
    import torch
    from lpips import normalize_tensor, spatial_average, upsample

    height, width = _check_lpips_pair(golden, candidate)
    with _model_lock, torch.no_grad():
        model = _lpips_model()
        outs0 = model.net.forward(model.scaling_layer(_to_tensor(golden)))
        outs1 = model.net.forward(model.scaling_layer(_to_tensor(candidate)))
        value: Any = 0
        spatial: Any = 0
        for kk in range(model.L):
            weighted = model.lins[kk]((normalize_tensor(outs0[kk]) - normalize_tensor(outs1[kk])) ** 2)
            value += spatial_average(weighted, keepdim=True)
            spatial += upsample(weighted, out_HW=(height, width))
    return float(value.item()), np.ascontiguousarray(spatial[0, 0].numpy(), dtype=np.float32)


@dataclass(frozen=True)
class Maps:
    """Where two images differ, per pixel: the maps behind ``compare_images``' numbers."""

    lpips: np.ndarray  # float32 HxW, as ``lpips_spatial_map``
    ssim: np.ndarray  # float64 HxW, as ``ssim_with_map``


def compare_with_maps(golden: np.ndarray, candidate: np.ndarray) -> tuple[ImageMetrics, Maps]:
    """``compare_images`` (the same numbers) and the LPIPS and SSIM maps, each computed once: the
    scorecard's worst regions come from these maps."""
    _check_pair(golden, candidate)
    lpips_value, lpips_map = lpips_with_map(golden, candidate)
    ssim_value, ssim_map = ssim_with_map(golden, candidate)
    return ImageMetrics(lpips=lpips_value, ssim=ssim_value, psnr=psnr(golden, candidate)), Maps(lpips_map, ssim_map)


def compare_images(golden: np.ndarray, candidate: np.ndarray) -> ImageMetrics:
    """All three metrics of two uint8 HxWx3 arrays of equal shape."""
    _check_pair(golden, candidate)
    return ImageMetrics(
        lpips=lpips_distance(golden, candidate),
        ssim=ssim(golden, candidate),
        psnr=psnr(golden, candidate),
    )
