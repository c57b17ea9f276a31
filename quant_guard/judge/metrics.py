"""Image metrics between a golden image and a candidate: LPIPS-alex v0.1, SSIM, PSNR.

Importing this module is cheap: numpy and torch are imported inside the functions. The LPIPS
model is built once per process and device (weights from ``lpips_weights``).

Each image is converted once (``ImagePair``: a uint8 tensor on the device, its float RGB and,
for the scorecard, its CIELAB) and the measures run as torch operations on that device
(``quant_guard.judge.torch_ops``): on the render's GPU when the gate passes one, on the CPU
otherwise. Never mix implementations between a golden's baseline and a check: SSIM here is
always Wang et al.'s with the settings below, as scikit-image computes it (the torch path
agrees with scikit-image to about 1e-8; torchmetrics' SSIM differs by up to 4e-3).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quant_guard.config.thresholds import ImageMetrics  # the result type of a comparison (re-exported)

if TYPE_CHECKING:
    import numpy as np
    import torch

# AlexNet's trunk needs 31 px (11x11/4 conv, two 3x3/2 max-pools: the 5th layer is then 1x1);
# below that torch raises deep inside the network. 64x64 is the size LPIPS was trained on.
LPIPS_MIN_SIZE = 31

lpips_lock = threading.Lock()  # one user of the shared models at a time (concurrent passes only fight over the cores)


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
    return ImagePair(golden, candidate).psnr()


# Wang et al.'s settings: Gaussian weights (sigma 1.5), population covariance, data range 255 (as
# scikit-image's structural_similarity takes them; ``torch_ops.ssim_with_map`` computes the same).
_SSIM_SETTINGS = dict(channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def ssim(golden: np.ndarray, candidate: np.ndarray) -> float:
    """SSIM with Gaussian weights (sigma 1.5), population covariance, data range 255."""
    return ImagePair(golden, candidate).ssim()[0]


def ssim_with_map(golden: np.ndarray, candidate: np.ndarray) -> tuple[float, np.ndarray]:
    """``ssim`` (the same number) and its local map, float64 HxW (mean over the colour channels)."""
    return ImagePair(golden, candidate).ssim()


class ImagePair:
    """A golden and a candidate (uint8 HxWx3 of equal shape) converted once for every measure:
    uint8 tensors on ``device`` (default the CPU), their float RGB in [0, 255] and, on first use,
    their CIELAB, in ``dtype`` (default ``torch_ops.compute_dtype(device)``: float64 on CUDA, the
    tests run that arithmetic on the CPU by passing it)."""

    def __init__(self, golden: np.ndarray, candidate: np.ndarray, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        import torch

        from quant_guard.judge.torch_ops import compute_dtype

        _check_pair(golden, candidate)
        self.golden, self.candidate = golden, candidate
        self.device = torch.device(device if device is not None else "cpu")
        self.dtype = dtype if dtype is not None else compute_dtype(self.device)
        # 3 x H x W views of the HWC bytes (a read-only array is copied: torch wants writable memory)
        self.rgb8 = tuple(torch.from_numpy(img if img.flags.writeable else img.copy()).to(self.device).permute(2, 0, 1)
                          for img in (golden, candidate))

    @functools.cached_property
    def rgb(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Float RGB, 3 x H x W in [0, 255], each channel's plane contiguous (``float_planes``)."""
        return float_planes(self.rgb8[0], self.dtype), float_planes(self.rgb8[1], self.dtype)

    @functools.cached_property
    def lab(self) -> tuple[torch.Tensor, torch.Tensor]:
        """CIELAB, 3 x H x W (L*, a*, b*), as scikit-image's rgb2lab."""
        from quant_guard.judge.torch_ops import rgb_to_lab

        return rgb_to_lab(self.rgb8[0], self.dtype), rgb_to_lab(self.rgb8[1], self.dtype)

    def lpips_batch(self) -> torch.Tensor:
        """2 x 3 x H x W in [-1, 1] (``lpips_input``): the golden, then the candidate."""
        import torch

        return torch.stack([lpips_input(self.rgb8[0], self.dtype), lpips_input(self.rgb8[1], self.dtype)])

    def psnr(self) -> float:
        """PSNR in dB (``torch_ops.psnr``)."""
        from quant_guard.judge.torch_ops import psnr as torch_psnr

        return torch_psnr(*self.rgb)

    def ssim(self) -> tuple[float, np.ndarray]:
        """SSIM and its map (float64 HxW numpy, the mean over the colour channels)."""
        import torch

        from quant_guard.judge.torch_ops import ssim_with_map as torch_ssim

        value, local = torch_ssim(*self.rgb)
        return float(value), local.to("cpu", torch.float64).numpy()


def float_planes(rgb8: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 RGB (3 x H x W, any layout) as ``dtype`` with each channel's plane contiguous: the
    layout SSIM's padding and bands read fastest (about 10 ms less at 1024² than the HWC bytes'
    layout, for 1 ms more here)."""
    import torch

    return rgb8.to(dtype, memory_format=torch.contiguous_format)


def lpips_input(rgb8: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 RGB (... x 3 x H x W) in [-1, 1]: ``lpips.im2tensor``'s ``level / 127.5 - 1``, computed
    as ``(level - 127.5) / 127.5`` in ``dtype`` (one rounding: in float32 the very values im2tensor
    gives at each of the 256 levels, its float64 result cast; in float64 within an ulp of it). The
    memory layout of ``rgb8`` is kept (an image's HWC bytes give channels-last input)."""
    return rgb8.to(dtype).sub_(127.5).div_(127.5)


@functools.cache
def _lpips_model(device: str = "cpu", dtype: torch.dtype | None = None) -> torch.nn.Module:
    """The one LPIPS model of this process per device and dtype (building it costs about 0.5 s:
    lpips inits AlexNet); float32 unless ``dtype`` says otherwise (``ImagePair.dtype``)."""
    from quant_guard.judge.lpips_weights import build_lpips_model, load_state_dict

    model = build_lpips_model(load_state_dict())
    if device != "cpu" or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


def _pair_model(pair: ImagePair) -> torch.nn.Module:
    return lpips_model_for(pair.device, pair.dtype)


def lpips_model_for(device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The shared LPIPS model for images on ``device`` in ``dtype``; hold ``lpips_lock`` while
    using it."""
    import torch

    if device.type == "cpu" and dtype == torch.float32:
        return _lpips_model()  # the one every caller on the CPU shares
    return _lpips_model(str(device), dtype)


def lpips_layers(model: torch.nn.Module, inputs: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's unit-normalized AlexNet features of N images (N x 3 x H x W, ``lpips_input``):
    what LPIPS compares, so an image in several pairs (a video frame) runs the network once."""
    import torch
    from lpips import normalize_tensor

    scaled = model.scaling_layer(inputs)
    if scaled.device.type == "cpu" and scaled.shape[0] > 1:
        # oneDNN runs a batch of AlexNet's convolutions about 1.35x faster channels-last (measured
        # at 2 x 1024x1024 on an Intel Xeon: 0.28 s against 0.38 s; one image gains nothing)
        scaled = scaled.contiguous(memory_format=torch.channels_last)
    return [normalize_tensor(features) for features in model.net.forward(scaled)]


def lpips_between(model: torch.nn.Module, layers0: list[torch.Tensor], layers1: list[torch.Tensor]) -> torch.Tensor:
    """LPIPS of each of N pairs (a tensor of N) from their ``lpips_layers``: the arithmetic of
    ``lpips.LPIPS.forward`` with ``spatial=False``."""
    from lpips import spatial_average

    value: Any = 0
    for kk in range(model.L):
        value += spatial_average(model.lins[kk]((layers0[kk] - layers1[kk]) ** 2), keepdim=True)
    return value.flatten()


def _check_lpips_pair(golden: np.ndarray, candidate: np.ndarray) -> tuple[int, int]:
    """``_check_pair`` and LPIPS's minimum size; the images' (height, width)."""
    _check_pair(golden, candidate)
    height, width = golden.shape[:2]
    if min(height, width) < LPIPS_MIN_SIZE:
        raise ValueError(
            f"LPIPS-alex needs images of at least {LPIPS_MIN_SIZE}x{LPIPS_MIN_SIZE} px, got {height}x{width}"
        )
    return height, width


def lpips_distance(golden: np.ndarray, candidate: np.ndarray, *, device: str | None = None) -> float:
    """LPIPS-alex v0.1 distance (0 for identical images), on ``device`` (default the CPU)."""
    _check_lpips_pair(golden, candidate)
    return _lpips_distance(ImagePair(golden, candidate, device))


def _lpips_distance(pair: ImagePair) -> float:
    import torch

    # both images through the trunk as one batch (``lpips_layers``), as ``_lpips_with_map``: the
    # same number to the last bit, whichever of the two the gate calls
    with lpips_lock, torch.no_grad():  # no_grad is local: the caller's grad mode comes back
        model = _pair_model(pair)
        layers = lpips_layers(model, pair.lpips_batch())
        return float(lpips_between(model, [f[:1] for f in layers], [f[1:] for f in layers]).item())


def lpips_spatial_map(golden: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per-pixel LPIPS-alex v0.1 map, float32 HxW (each layer's map upsampled bilinearly).

    Its mean is close to, not equal to, ``lpips_distance``; its argmax marks the worst region.
    """
    return lpips_with_map(golden, candidate)[1]


def lpips_with_map(golden: np.ndarray, candidate: np.ndarray) -> tuple[float, np.ndarray]:
    """``lpips_distance`` and ``lpips_spatial_map`` from one pass of the network: the trunk runs
    once and each layer's weighted difference is both averaged (the distance, the arithmetic of
    ``lpips.LPIPS.forward`` with ``spatial=False``) and upsampled (the map, as with ``spatial=True``)."""
    _check_lpips_pair(golden, candidate)
    return _lpips_with_map(ImagePair(golden, candidate))


def _lpips_with_map(pair: ImagePair) -> tuple[float, np.ndarray]:
    import numpy as np
    import torch
    from lpips import spatial_average, upsample

    height, width = pair.golden.shape[:2]
    with lpips_lock, torch.no_grad():
        model = _pair_model(pair)
        # both images through the trunk as one batch (``lpips_layers``)
        layers = lpips_layers(model, pair.lpips_batch())
        value: Any = 0
        spatial: Any = 0
        for kk in range(model.L):
            weighted = model.lins[kk]((layers[kk][:1] - layers[kk][1:]) ** 2)
            value += spatial_average(weighted, keepdim=True)
            spatial += upsample(weighted, out_HW=(height, width))
    return float(value.item()), np.ascontiguousarray(spatial[0, 0].to("cpu", torch.float32).numpy())


@dataclass(frozen=True)
class Maps:
    """Where two images differ, per pixel: the maps behind ``compare_images``' numbers."""

    lpips: np.ndarray  # float32 HxW, as ``lpips_spatial_map``
    ssim: np.ndarray  # float64 HxW, as ``ssim_with_map``
    pair: ImagePair | None = field(default=None, compare=False, repr=False)  # the converted images, for the scorecard


def compare_with_maps(golden: np.ndarray, candidate: np.ndarray, *,
                      device: str | None = None) -> tuple[ImageMetrics, Maps]:
    """``compare_images`` (the same numbers) and the LPIPS and SSIM maps, each computed once from
    images converted once (on ``device``, default the CPU): the scorecard's worst regions come from
    these maps, and its colour and sharpness from the same ``ImagePair``."""
    _check_lpips_pair(golden, candidate)
    pair = ImagePair(golden, candidate, device)
    lpips_value, lpips_map = _lpips_with_map(pair)
    ssim_value, ssim_map = pair.ssim()
    metrics = ImageMetrics(lpips=lpips_value, ssim=ssim_value, psnr=pair.psnr())
    return metrics, Maps(lpips_map, ssim_map, pair)


def compare_images(golden: np.ndarray, candidate: np.ndarray, *, device: str | None = None) -> ImageMetrics:
    """All three metrics of two uint8 HxWx3 arrays of equal shape (converted once, on ``device``)."""
    _check_lpips_pair(golden, candidate)
    pair = ImagePair(golden, candidate, device)
    return ImageMetrics(lpips=_lpips_distance(pair), ssim=pair.ssim()[0], psnr=pair.psnr())
