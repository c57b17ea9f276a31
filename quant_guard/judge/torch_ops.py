"""The judge's per-pixel measures as torch operations, on whatever device the images' tensors are
on: SSIM, sRGB -> CIELAB, CIEDE2000 and the Laplacian of Gaussian. Each reproduces the
scikit-image / scipy function the judge used before (named in its docstring, settings included),
which ``tests/judge/test_torch_agreement.py`` holds it to.

Why written here and not taken from a library (wheels from PyPI read, December 2026): kornia
0.9.2's ``metrics.ssim`` pads with torch's "reflect" (scipy's "mirror", not the "reflect" that
scikit-image's Gaussian uses), so its map differs at the borders, and kornia has no CIEDE2000;
pytorch-msssim 1.0.0 returns per-channel means only, no map (the scorecard's worst tile needs
one); torchmetrics' SSIM differs from scikit-image's by up to 4e-3 (it averages
the padded border).
A library would have replaced one piece (kornia's rgb_to_lab) and left the rest to write: the
few torch operations here earn no dependency.

dtype: on CUDA the measures run in float64 (no TF32 path exists for float64 convolutions, and
the numbers then equal scikit-image's float64 ones); elsewhere in float32, which is what makes
them faster than scikit-image on a CPU. float32 SSIM filters the sum of the two images shifted
by twice its rounded channel mean and their difference (integers: exact in float32), so that the
variances, a small difference of large numbers, lose little: the SSIM agrees with float64 to
about 1e-8, its map to about 1e-5 (golden-like pairs at 256² and 1024²).

torch is imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

# Wang et al.'s SSIM settings, as metrics._SSIM_SETTINGS passes them to scikit-image: a Gaussian
# window of sigma 1.5 truncated at 3.5 sigma (radius 5: an 11x11 window), K1 0.01, K2 0.03,
# data range 255, population covariance.
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2
# scipy.ndimage's default truncation for gaussian_laplace
LOG_TRUNCATE = 4.0
# scikit-image's sRGB (D65) -> XYZ matrix and the D65 2-degree white point
_XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_D65 = (0.95047, 1.0, 1.08883)
# On a CPU the measures run over bands of this many rows, each band on one thread of its own
# (``run_bands``): a band's temporaries stay in the caches instead of streaming whole-image arrays
# through memory for every operation, and no operation waits for torch's other threads. Per
# operation synchronization is what made torch's own two threads 4x slower than one on a 2-core
# machine shared with other processes (benchmarks/judge_cost.py).
BAND_ROWS = 64


def compute_dtype(device: torch.device) -> torch.dtype:
    """float64 on CUDA (exact agreement, no TF32), float32 elsewhere (speed on a CPU)."""
    import torch

    return torch.float64 if device.type == "cuda" else torch.float32


def symmetric_pad(images: torch.Tensor, radius_y: int, radius_x: int) -> torch.Tensor:
    """Pad the last two axes as scipy.ndimage's mode "reflect" (d c b a | a b c d | d c b a)."""
    import torch

    for dim, radius in ((-2, radius_y), (-1, radius_x)):
        size = images.shape[dim]
        if radius > size:  # scipy reflects again past the far edge: index arithmetic (small images only)
            i = torch.arange(-radius, size + radius, device=images.device) % (2 * size)
            images = images.index_select(dim, torch.where(i >= size, 2 * size - 1 - i, i))
        elif radius > 0:
            images = torch.cat([images.narrow(dim, 0, radius).flip(dim), images,
                                images.narrow(dim, size - radius, radius).flip(dim)], dim)
    return images


def gaussian_kernel1d(sigma: float, radius: int, order: int, *, dtype: torch.dtype,
                      device: torch.device) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian kernel (order 0) or its second derivative (order 2), built in
    float64 as scipy builds it, then cast."""
    import torch

    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    phi = torch.exp(-0.5 / sigma**2 * x**2)
    phi = phi / phi.sum()
    if order == 2:
        phi = phi * (x**2 / sigma**4 - 1.0 / sigma**2)
    elif order != 0:
        raise ValueError(f"gaussian_kernel1d: order {order} is not 0 or 2")
    return phi.to(dtype=dtype, device=device)


def row_bands(height: int, device: torch.device) -> list[tuple[int, int]]:
    """(start, stop) rows of the bands a measure runs over: ``BAND_ROWS`` on a CPU, one on a GPU."""
    band = BAND_ROWS if device.type == "cpu" else height
    return [(y, min(height, y + band)) for y in range(0, height, band)]


def run_bands(height: int, device: torch.device, work: Callable[[int, int], None]) -> None:
    """``work(start, stop)`` for each band of rows (``row_bands``). On a CPU the bands are shared by
    as many threads as torch has, each running torch single-threaded (torch's thread count is
    per thread: the caller's is untouched); ``work`` must write disjoint rows only."""
    import torch

    bands = row_bands(height, device)
    workers = min(torch.get_num_threads(), len(bands)) if device.type == "cpu" else 1
    if workers < 2:
        for y0, y1 in bands:
            work(y0, y1)
        return
    from concurrent.futures import ThreadPoolExecutor

    def alone(band: tuple[int, int]) -> None:
        torch.set_num_threads(1)
        work(*band)

    threads = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="qg-judge") as pool:
            list(pool.map(alone, bands))
    finally:
        torch.set_num_threads(threads)  # the default later threads start from, as it was


def _valid_filter(padded: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Correlate the C padded images (C x H' x W') with ``rows`` / ``cols`` (C x K each) where
    the kernels fit inside (no padding): C x (H' - Ky + 1) x (W' - Kx + 1)."""
    import torch
    import torch.nn.functional as F

    channels = padded.shape[0]
    inp = padded[None]
    if inp.device.type == "cpu":  # oneDNN's depthwise convolution is vectorized over channels-last
        inp = inp.contiguous(memory_format=torch.channels_last)
    out = F.conv2d(inp, cols[:, None, None, :].contiguous(), groups=channels)
    out = F.conv2d(out, rows[:, None, :, None].contiguous(), groups=channels)
    return out[0]


def separable_filter(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Correlate each of the C images (C x H x W) with ``rows`` along y and ``cols`` along x
    (odd lengths; one kernel for all, or C x K: one per image), padding as scipy's mode
    "reflect": the same output size."""
    channels, height, width = images.shape
    rows, cols = rows.expand(channels, -1), cols.expand(channels, -1)
    ry = rows.shape[1] // 2
    padded = symmetric_pad(images, ry, cols.shape[1] // 2)
    out = images.new_empty((channels, height, width))

    def band(y0: int, y1: int) -> None:
        out[:, y0:y1] = _valid_filter(padded[:, y0:y1 + 2 * ry], rows, cols)

    run_bands(height, images.device, band)
    return out


def ssim_with_map(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM of two 3 x H x W float images in [0, 255] and its map (H x W, the mean over the
    channels), as ``skimage.metrics.structural_similarity(channel_axis=..., data_range=255,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)``: the value (a
    0-d float64 tensor) is the mean of the map without its 5-pixel border, per channel, then
    over the channels."""
    import torch

    height, width = x.shape[-2:]
    if min(height, width) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs images of at least {2 * SSIM_RADIUS + 1}x{2 * SSIM_RADIUS + 1} px, "
                         f"got {height}x{width}")
    # SSIM needs mu_x, mu_y, var_x + var_y and cov_xy only: from the sum s = x + y and the
    # difference d = x - y, 4 filtered maps per channel give them (5 from x, y, xx, yy, xy):
    #   mu_x^2 + mu_y^2 = (mu_s^2 + mu_d^2) / 2          2 mu_x mu_y = (mu_s^2 - mu_d^2) / 2
    #   var_x + var_y = (var_s + var_d) / 2              2 cov_xy    = (var_s - var_d) / 2
    # s is shifted by twice an integer mean (exact), so that its variance needs no large squares.
    shift = 2 * x.mean(dim=(1, 2), keepdim=True).round()
    r = SSIM_RADIUS
    ps, pd = symmetric_pad(x + y - shift, r, r), symmetric_pad(x - y, r, r)
    kernel = gaussian_kernel1d(SSIM_SIGMA, r, 0, dtype=x.dtype, device=x.device).expand(12, -1)
    local = x.new_empty((3, height, width))

    def band(y0: int, y1: int) -> None:  # the 12 filtered maps of one band at a time
        bs, bd = ps[:, y0:y1 + 2 * r], pd[:, y0:y1 + 2 * r]
        us, ud, uss, udd = _valid_filter(torch.cat([bs, bd, bs * bs, bd * bd]), kernel, kernel).chunk(4)
        vs, vd = uss - us * us, udd - ud * ud
        us2, ud2 = (us + shift).square_(), ud * ud
        local[:, y0:y1] = (((us2 - ud2).mul_(0.5).add_(_SSIM_C1) * (vs - vd).mul_(0.5).add_(_SSIM_C2))
                           / ((us2 + ud2).mul_(0.5).add_(_SSIM_C1) * (vs + vd).mul_(0.5).add_(_SSIM_C2)))

    run_bands(height, x.device, band)
    inner = local[:, r:height - r, r:width - r]
    value = inner.sum(dtype=torch.float64) / inner.numel()
    return value, local.mean(dim=0)


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of two float images of integer levels in [0, 255] (data range 255; ``math.inf``
    if identical). Their squared differences are exact in float32 and the sum exact in float64:
    the same number as numpy's float64 mean of the uint8 images, in a quarter of its time."""
    import torch

    squared = float(torch.sub(x, y).square_().sum(dtype=torch.float64))
    return math.inf if squared == 0.0 else 10.0 * math.log10(255.0**2 * x.numel() / squared)


def srgb_lut(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Linear RGB of the 256 sRGB levels, as scikit-image's rgb2xyz computes it (float64)."""
    import torch

    v = torch.arange(256, dtype=torch.float64) / 255
    linear = torch.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92)
    return linear.to(dtype=dtype, device=device)


def rgb_to_lab(rgb8: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """CIELAB (3 x H x W: L*, a*, b*) of a uint8 3 x H x W sRGB image, as ``skimage.color.rgb2lab``
    (D65, 2-degree observer). The sRGB curve is a table of the 256 levels."""
    import torch

    lut = srgb_lut(dtype, rgb8.device)
    height, width = rgb8.shape[1:]
    out = torch.empty((3, height, width), dtype=dtype, device=rgb8.device)

    def band(y0: int, y1: int) -> None:
        rows = rgb8[:, y0:y1]
        r, g, b = lut.index_select(0, rows.reshape(-1).int()).view(rows.shape).unbind(0)
        f = []
        for row, white in zip(_XYZ_FROM_RGB, _D65):  # XYZ scaled by the white point, then Lab's f(t)
            t = torch.add(r * (row[0] / white), g, alpha=row[1] / white).add_(b, alpha=row[2] / white)
            above = t > 0.008856
            cube_root = t.clamp(min=0.008856).log_().div_(3.0).exp_()  # within an ulp of pow(1/3), 3x faster
            f.append(torch.where(above, cube_root, t.mul_(7.787).add_(16.0 / 116.0)))  # t itself: the linear part
        fx, fy, fz = f
        torch.mul(fy, 116.0, out=out[0, y0:y1]).sub_(16.0)
        torch.sub(fx, fy, out=out[1, y0:y1]).mul_(500.0)
        torch.sub(fy, fz, out=out[2, y0:y1]).mul_(200.0)

    run_bands(height, rgb8.device, band)
    return out


def delta_e_2000(lab1: torch.Tensor, lab2: torch.Tensor) -> torch.Tensor:
    """CIEDE2000 per pixel (H x W) of two 3 x H x W CIELAB images, as
    ``skimage.color.deltaE_ciede2000`` (kL = kC = kH = 1), the same terms in the same order."""
    out = lab1.new_empty(lab1.shape[1:])

    def band(y0: int, y1: int) -> None:
        out[y0:y1] = _delta_e_2000(lab1[:, y0:y1], lab2[:, y0:y1])

    run_bands(lab1.shape[1], lab1.device, band)
    return out


def _delta_e_2000(lab1: torch.Tensor, lab2: torch.Tensor) -> torch.Tensor:
    # In-place operations on fresh temporaries where a value is used once, and x**7 as products
    # (torch's pow for an exponent of 7 is the general one): about 15% fewer passes over the band.
    import torch

    two_pi = 2 * math.pi
    l1, a1, b1 = lab1.unbind(0)
    l2, a2, b2 = lab2.unbind(0)
    c7 = _seventh_power(torch.hypot(a1, b1).add_(torch.hypot(a2, b2)).mul_(0.5))
    scale = c7.div(c7 + 25.0**7).sqrt_().neg_().add_(1).mul_(0.5).add_(1)
    ap1, ap2 = a1 * scale, a2 * scale
    c1, c2 = torch.hypot(ap1, b1), torch.hypot(ap2, b2)
    h1, h2 = torch.atan2(b1, ap1), torch.atan2(b2, ap2)
    h1, h2 = torch.where(h1 < 0, h1 + two_pi, h1), torch.where(h2 < 0, h2 + two_pi, h2)

    lbar_50 = (l1 + l2).mul_(0.5).sub_(50).square_()
    l_term = (l2 - l1).div_(lbar_50.mul(0.015).div_(lbar_50.add_(20).sqrt_()).add_(1))
    cbar = (c1 + c2).mul_(0.5)
    c_term = (c2 - c1).div_(cbar.mul(0.045).add_(1))

    h_diff, h_sum, cc = h2 - h1, h1 + h2, c1 * c2
    zero = cc == 0
    dh = torch.where(h_diff > math.pi, h_diff - two_pi, torch.where(h_diff < -math.pi, h_diff + two_pi, h_diff))
    dh_term = cc.sqrt().mul_(dh.masked_fill_(zero, 0.0).mul_(0.5).sin_()).mul_(2)
    far = ~zero & (h_diff.abs() > math.pi)
    hbar = torch.where(far, torch.where(h_sum < two_pi, h_sum + two_pi, h_sum - two_pi), h_sum)
    hbar = torch.where(zero, hbar * 2, hbar).mul_(0.5)

    t = (1 - 0.17 * torch.cos(hbar - math.radians(30)) + 0.24 * torch.cos(2 * hbar)
         + 0.32 * torch.cos(3 * hbar + math.radians(6)) - 0.20 * torch.cos(4 * hbar - math.radians(63)))
    h_term = dh_term.div_(t.mul_(cbar).mul_(0.015).add_(1))

    c7 = _seventh_power(cbar)
    rc = c7.div(c7 + 25.0**7).sqrt_().mul_(2)
    dtheta = torch.rad2deg(hbar).sub_(275).div_(25).square_().neg_().exp_().mul_(math.radians(30))
    r_term = dtheta.mul_(2).sin_().neg_().mul_(rc).mul_(c_term).mul_(h_term)
    return l_term.square_().add_(c_term.square()).add_(h_term.square()).add_(r_term).clamp_(min=0).sqrt_()


def _seventh_power(x: torch.Tensor) -> torch.Tensor:
    """x**7 as four products (a new tensor)."""
    x2 = x * x
    return (x2 * x2).mul_(x2).mul_(x)


def gaussian_laplace(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """The Laplacian of Gaussian of each C x H x W image, as ``scipy.ndimage.gaussian_laplace(
    image, sigma, mode="reflect")``: the second derivative along each axis (the other axis
    smoothed), summed."""
    import torch

    radius = int(LOG_TRUNCATE * sigma + 0.5)
    smooth = gaussian_kernel1d(sigma, radius, 0, dtype=images.dtype, device=images.device)
    second = gaussian_kernel1d(sigma, radius, 2, dtype=images.dtype, device=images.device)
    channels = images.shape[0]
    # one filtering of 2C images: d2/dy2 (rows: second, cols: smooth), then d2/dx2
    rows = torch.stack([second, smooth]).repeat_interleave(channels, dim=0)
    cols = torch.stack([smooth, second]).repeat_interleave(channels, dim=0)
    d_yy, d_xx = separable_filter(images.repeat(2, 1, 1), rows, cols).chunk(2)
    return d_yy + d_xx


def percentile(values: torch.Tensor, q: float) -> float:
    """``numpy.percentile(values, q)`` (linear interpolation between the order statistics): numpy's
    own on a CPU (one selection, where torch's kthvalue takes 10x longer), two kthvalue elsewhere."""
    import torch

    flat = values.reshape(-1)
    if flat.device.type == "cpu":
        import numpy as np

        return float(np.percentile(flat.numpy(), q))
    pos = q / 100 * (flat.numel() - 1)
    lo = math.floor(pos)
    low = torch.kthvalue(flat, lo + 1).values
    if pos == lo:
        return float(low)
    high = torch.kthvalue(flat, lo + 2).values
    return float(low + (high - low) * (pos - lo))


def median(values: torch.Tensor) -> float:
    """``numpy.median``: the mean of the two middle values of an even count."""
    return percentile(values, 50.0)
