"""Each number behind the tiny checkpoint's thresholds has one source
(``quant_guard/config/tiny_settings.py`` for the measurements, ``EMBEDDED_THRESHOLDS`` for the limits).
Here the thresholds the configuration resolves for the tiny checkpoint (what the gate holds a
candidate to) are put to work on those measurements, and every place that quotes a limit is
checked against the resolved value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quant_guard.run.cases import VisualCase
from quant_guard.config.project import load_config
from quant_guard.tools.degrade import SOFTEN_SIGMA, soften_image
from quant_guard.judge.metrics import ImageMetrics
from quant_guard.judge.scorecard import compute_scorecard
from quant_guard.config.thresholds import Thresholds
from quant_guard.judge.checks import check_thresholds
from quant_guard.config.tiny_settings import (MILDEST_DAMAGE, SCHEME_MEASUREMENTS, SHARPNESS_MILDEST_SOFTEN,
                                       SHARPNESS_WORST_HONEST, WORST_HONEST_FLOAT8)

REPO = Path(__file__).resolve().parents[1]
CONFIG = load_config(REPO / "pyproject.toml")
TINY = CONFIG.checkpoint("tiny")
# every scheme kind the tiny checkpoint ships thresholds for: (worst honest, mildest damage)
MEASURED = {"float8_e4m3fn": (WORST_HONEST_FLOAT8, MILDEST_DAMAGE), **SCHEME_MEASUREMENTS}


def resolved(scheme_id: str) -> Thresholds:
    """The thresholds the gate holds this scheme of the repository's tiny checkpoint to (before
    markers and the command line), on the first of its cases."""
    case = next(c for c in CONFIG.cases if TINY.id in c.checkpoints)
    scheme = next(s for s in TINY.schemes if s.id == scheme_id)
    return VisualCase(TINY, case, case.seeds[0], scheme).configured_thresholds(CONFIG.thresholds)


@pytest.mark.parametrize("scheme", [s.id for s in TINY.schemes])
def test_each_tiny_scheme_passes_its_worst_honest_image_and_fails_its_mildest_damage(scheme: str) -> None:
    # a scheme of the tiny checkpoint without a measurement would be held to the package defaults
    honest, damage = MEASURED[scheme]
    limits = resolved(scheme)
    assert [c.metric for c in check_thresholds(ImageMetrics(*honest), limits) if not c.passed] == []
    assert [c.metric for c in check_thresholds(ImageMetrics(*damage), limits) if not c.passed] == [
        "LPIPS", "SSIM", "PSNR"]


def _scheme_row(kind: str, limits: Thresholds) -> str:
    honest, damage = MEASURED[kind]
    return (f"| {kind} | {_figures(honest)} | {_figures(damage)} | max LPIPS {limits.lpips_max:g}, "
            f"min SSIM {limits.ssim_min:g}, min PSNR {limits.psnr_min:g} dB |")


def test_the_readme_scheme_table_quotes_the_resolved_thresholds() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8").replace("`", "")
    for scheme in TINY.schemes:
        row = _scheme_row(scheme.id, resolved(scheme.id))
        assert row in text, f"README's scheme table does not say {row!r}"


def _figures(values: tuple[float, float, float]) -> str:
    lpips, ssim, psnr = values
    return f"LPIPS {lpips:.4f} / SSIM {ssim:.4f} / PSNR {psnr:.1f} dB"


def _limits() -> list[str]:
    t = resolved("float8_e4m3fn")
    return [f"max LPIPS {t.lpips_max:g}", f"min SSIM {t.ssim_min:g}", f"min PSNR {t.psnr_min:g} dB"]


@pytest.mark.parametrize("document", ["README.md", "quant_guard/model/tiny/weights/README.md"])
def test_the_documents_quote_the_measurements_and_the_resolved_limits(document: str) -> None:
    text = " ".join((REPO / document).read_text(encoding="utf-8").replace("`", "").split())
    for quote in [_figures(WORST_HONEST_FLOAT8), _figures(MILDEST_DAMAGE), *_limits()]:
        assert quote in text, f"{document} does not say {quote!r}"


def _rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_the_float8_sharpness_limit_fails_the_mildest_blur_of_every_golden() -> None:
    # measured here: each stored tiny golden against itself blurred by the degrade command's mildest
    # softening; the float8 candidates' side (honest ones pass) is test_scorecard_gate's first test
    limit = resolved("float8_e4m3fn").sharpness_min
    assert limit is not None
    goldens = sorted((REPO / "golden" / "tiny").glob("*.png"))
    assert goldens
    ratios = {g.stem: compute_scorecard(_rgb(g), soften_image(_rgb(g), SOFTEN_SIGMA)).sharpness.ratio for g in goldens}
    assert {stem: r for stem, r in ratios.items() if r >= limit} == {}
    text = " ".join((REPO / "README.md").read_text(encoding="utf-8").replace("`", "").split())
    for quote in (f"sharpness_min = {limit:g}", f"Worst honest {SHARPNESS_WORST_HONEST:g}",
                  f"{SHARPNESS_MILDEST_SOFTEN:g} on the 48 other pairs", f"mildest {SOFTEN_SIGMA:g} px blur"):
        assert quote in text, f"README.md does not say {quote!r}"
