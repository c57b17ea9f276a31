"""The judge's torch path (quant_guard.judge.torch_ops through metrics.ImagePair) against the
scikit-image / scipy functions it replaced, on the real goldens in golden/ and perturbed copies:
SSIM and LPIPS to 1e-4, CIEDE2000 to 1e-3 (issue 32), in float32 (the CPU's arithmetic) and in
float64 (the arithmetic a CUDA device runs, here on the CPU); on CUDA too where there is one.

The references are computed in float64 by the libraries themselves (skimage.metrics.
structural_similarity with the gate's settings, skimage.color.rgb2lab / deltaE_ciede2000,
scipy.ndimage.gaussian_laplace), never by the code under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter, gaussian_laplace
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import structural_similarity

from quant_guard.judge import metrics
from quant_guard.judge.metrics import ImagePair
from quant_guard.judge.scorecard import SHARPNESS_SIGMA, compute_scorecard
from quant_guard.judge.torch_ops import BAND_ROWS, delta_e_2000, gaussian_laplace as torch_laplace

GOLDENS = sorted((Path(__file__).resolve().parents[2] / "golden").rglob("*.png"))
SSIM_TOL, LPIPS_TOL, DELTA_E_TOL = 1e-4, 1e-4, 1e-3
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _clip(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def perturbed(golden: np.ndarray, kind: str) -> np.ndarray:
    """What quantization and damage do to a render: noise, softening, a colour cast."""
    rng = np.random.default_rng(7)
    img = golden.astype(np.float64)
    if kind == "noise":
        return _clip(img + rng.normal(0, 6, img.shape))
    if kind == "blur":
        return _clip(gaussian_filter(img, (1.0, 1.0, 0)))
    if kind == "cast":
        return _clip(img + np.array([9.0, -6.0, 3.0]))
    raise ValueError(kind)


def enlarged(golden: np.ndarray, height: int, width: int) -> np.ndarray:
    """A golden resized (bicubic) past one band of rows, to a size that is no multiple of a band."""
    return np.asarray(Image.fromarray(golden).resize((width, height), Image.Resampling.BICUBIC), dtype=np.uint8).copy()


def _pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    assert GOLDENS, "no golden PNG under golden/"
    pairs = [(f"{p.stem}-{kind}", g, perturbed(g, kind)) for p in GOLDENS
             for g in [_load(p)] for kind in ("noise", "blur", "cast")]
    big = enlarged(_load(GOLDENS[0]), 2 * BAND_ROWS + 37, 150)
    pairs.append(("enlarged-noise", big, perturbed(big, "noise")))
    return pairs


PAIRS = _pairs()


def _ssim_reference(golden: np.ndarray, candidate: np.ndarray) -> tuple[float, np.ndarray]:
    value, full = structural_similarity(golden, candidate, full=True, **metrics._SSIM_SETTINGS)
    return float(value), full.mean(axis=-1)


def _lab_reference(img: np.ndarray) -> np.ndarray:
    return rgb2lab(img / 255.0)  # float64


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "golden", "candidate"), PAIRS, ids=[p[0] for p in PAIRS])
def test_ssim_lab_delta_e_and_log_agree_with_skimage_and_scipy(name: str, golden: np.ndarray, candidate: np.ndarray,
                                                               dtype: str, device: str) -> None:
    pair = ImagePair(golden, candidate, device, DTYPES[dtype])
    value, local = pair.ssim()
    ref_value, ref_local = _ssim_reference(golden, candidate)
    assert abs(value - ref_value) < SSIM_TOL
    assert np.abs(local - ref_local).max() < 10 * SSIM_TOL  # the map, per pixel (its worst tile is ranked)

    ref_lab = [_lab_reference(img) for img in (golden, candidate)]
    lab = [t.permute(1, 2, 0).to("cpu", torch.float64).numpy() for t in pair.lab]
    assert max(np.abs(a - b).max() for a, b in zip(lab, ref_lab)) < DELTA_E_TOL
    ref_de = deltaE_ciede2000(*ref_lab, channel_axis=-1)
    assert ref_de.max() > 1.0  # the pair differs visibly: the comparison measures something
    # CIEDE2000 alone (on the reference's own CIELAB) and after the torch CIELAB
    alone = delta_e_2000(*(torch.from_numpy(x).permute(2, 0, 1).to(device, DTYPES[dtype]) for x in ref_lab))
    assert np.abs(alone.to("cpu", torch.float64).numpy() - ref_de).max() < DELTA_E_TOL
    assert np.abs(delta_e_2000(*pair.lab).to("cpu", torch.float64).numpy() - ref_de).max() < DELTA_E_TOL

    ref_log = np.stack([gaussian_laplace(x[..., 0], SHARPNESS_SIGMA, mode="reflect") for x in ref_lab])
    log = torch_laplace(torch.stack([pair.lab[0][0], pair.lab[1][0]]), SHARPNESS_SIGMA)
    assert np.abs(log.to("cpu", torch.float64).numpy() - ref_log).max() < DELTA_E_TOL


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("name", "golden", "candidate"), PAIRS[::3], ids=[p[0] for p in PAIRS[::3]])
def test_lpips_and_scorecard_agree_between_the_cpu_and_the_gpu_arithmetic(name: str, golden: np.ndarray,
                                                                          candidate: np.ndarray, device: str) -> None:
    """float32 on the CPU (the official LPIPS values) against float64 (CUDA's arithmetic)."""
    cpu_metrics, cpu_maps = metrics.compare_with_maps(golden, candidate)
    wide = ImagePair(golden, candidate, device, torch.float64)
    assert abs(metrics._lpips_distance(wide) - cpu_metrics.lpips) < LPIPS_TOL
    assert abs(wide.ssim()[0] - cpu_metrics.ssim) < SSIM_TOL
    wide_map = metrics._lpips_with_map(wide)[1]
    assert np.abs(wide_map - cpu_maps.lpips).max() < 10 * LPIPS_TOL

    cpu_card = compute_scorecard(golden, candidate).colour
    wide_card = compute_scorecard(golden, candidate, pair=wide).colour
    # and both against numpy on the scikit-image CIEDE2000 map
    ref_de = deltaE_ciede2000(*(_lab_reference(img) for img in (golden, candidate)), channel_axis=-1)
    for card in (cpu_card, wide_card):
        assert card.delta_e_mean == pytest.approx(float(ref_de.mean()), abs=DELTA_E_TOL)
        assert card.delta_e_p95 == pytest.approx(float(np.percentile(ref_de, 95)), abs=DELTA_E_TOL)
    assert wide_card.hue_shift_deg == pytest.approx(cpu_card.hue_shift_deg, abs=1e-3)


def test_sharpness_ratio_agrees_with_scipy() -> None:
    golden = enlarged(_load(GOLDENS[0]), 2 * BAND_ROWS + 37, 150)
    candidate = perturbed(golden, "blur")
    energy = [float(np.mean(gaussian_laplace(_lab_reference(img)[..., 0], SHARPNESS_SIGMA, mode="reflect") ** 2))
              for img in (golden, candidate)]
    ratio = compute_scorecard(golden, candidate).sharpness.ratio
    assert ratio < 0.9  # the blur is seen
    assert ratio == pytest.approx(energy[1] / energy[0], rel=1e-4)


def test_the_cpu_bands_leave_torch_threads_as_they_were() -> None:
    """The bands run on worker threads that set torch to one thread each: the caller's count, and
    the count a thread started later begins with, are what they were."""
    import threading

    golden = enlarged(_load(GOLDENS[0]), 2 * BAND_ROWS + 37, 150)
    before = torch.get_num_threads()
    metrics.compare_with_maps(golden, perturbed(golden, "noise"))
    seen: list[int] = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    assert (torch.get_num_threads(), seen) == (before, [before])
