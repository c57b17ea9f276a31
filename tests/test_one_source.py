"""Each number behind the tiny checkpoint's thresholds has one source
(``quant_guard/tiny/settings.py`` for the measurements, ``EMBEDDED_THRESHOLDS`` for the limits);
every place that quotes them is checked against it here."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from quant_guard.degrade import SOFTEN_SIGMA
from quant_guard.thresholds import EMBEDDED_THRESHOLDS, ThresholdOverrides
from quant_guard.tiny.settings import (MILDEST_DAMAGE, SCHEME_MEASUREMENTS, SHARPNESS_MILDEST_SOFTEN,
                                       SHARPNESS_WORST_HONEST, WORST_HONEST_FLOAT8)

REPO = Path(__file__).resolve().parents[1]
TINY = EMBEDDED_THRESHOLDS["tiny"]["float8_e4m3fn"]


# every scheme kind the tiny checkpoint ships thresholds for: (worst honest, mildest damage)
MEASURED = {"float8_e4m3fn": (WORST_HONEST_FLOAT8, MILDEST_DAMAGE), **SCHEME_MEASUREMENTS}


def test_every_scheme_with_thresholds_has_its_measurement() -> None:
    assert set(EMBEDDED_THRESHOLDS["tiny"]) == set(MEASURED)


@pytest.mark.parametrize("kind", sorted(MEASURED))
def test_the_thresholds_lie_midway_between_honest_and_damaged(kind: str) -> None:
    (h_lpips, h_ssim, h_psnr), (d_lpips, d_ssim, d_psnr) = MEASURED[kind]
    limits = EMBEDDED_THRESHOLDS["tiny"][kind]
    assert limits.lpips == pytest.approx(math.sqrt(h_lpips * d_lpips), abs=0.0005)
    assert 1 - limits.ssim == pytest.approx(math.sqrt((1 - h_ssim) * (1 - d_ssim)), abs=0.001)
    assert limits.psnr == pytest.approx((h_psnr + d_psnr) / 2, abs=0.5)
    # and each separates: honest passes, damage fails
    assert h_lpips <= limits.lpips < d_lpips and h_ssim >= limits.ssim > d_ssim and h_psnr >= limits.psnr > d_psnr


def _scheme_row(kind: str, limits: ThresholdOverrides) -> str:
    honest, damage = MEASURED[kind]
    return (f"| {kind} | {_figures(honest)} | {_figures(damage)} | max LPIPS {limits.lpips:g}, "
            f"min SSIM {limits.ssim:g}, min PSNR {limits.psnr:g} dB |")


def test_the_readme_scheme_table_quotes_the_source() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8").replace("`", "")
    for kind, limits in EMBEDDED_THRESHOLDS["tiny"].items():
        assert _scheme_row(kind, limits) in text, f"README's scheme table does not say {_scheme_row(kind, limits)!r}"


def _figures(values: tuple[float, float, float]) -> str:
    lpips, ssim, psnr = values
    return f"LPIPS {lpips:.4f} / SSIM {ssim:.4f} / PSNR {psnr:.1f} dB"


def _limits() -> list[str]:
    return [f"max LPIPS {TINY.lpips:g}", f"min SSIM {TINY.ssim:g}", f"min PSNR {TINY.psnr:g} dB"]


@pytest.mark.parametrize("document", ["README.md", "quant_guard/tiny/weights/README.md"])
def test_the_documents_quote_the_source(document: str) -> None:
    text = " ".join((REPO / document).read_text(encoding="utf-8").replace("`", "").split())
    for quote in [_figures(WORST_HONEST_FLOAT8), _figures(MILDEST_DAMAGE), *_limits()]:
        assert quote in text, f"{document} does not say {quote!r}"


def test_the_damage_strengths_comment_quotes_the_source() -> None:
    text = (REPO / "quant_guard/degrade.py").read_text(encoding="utf-8")
    assert f"LPIPS {MILDEST_DAMAGE[0]:.4f} / PSNR {MILDEST_DAMAGE[2]:.1f} dB" in text
    assert f"worst {WORST_HONEST_FLOAT8[0]:.4f} / {WORST_HONEST_FLOAT8[2]:.1f} dB" in text


def test_the_sharpness_limit_lies_midway_rounded_towards_honest() -> None:
    midway = math.sqrt(SHARPNESS_WORST_HONEST * SHARPNESS_MILDEST_SOFTEN)
    assert TINY.sharpness_min == math.floor(midway * 100) / 100
    assert SHARPNESS_MILDEST_SOFTEN < TINY.sharpness_min < SHARPNESS_WORST_HONEST
    text = " ".join((REPO / "README.md").read_text(encoding="utf-8").replace("`", "").split())
    for quote in (f"sharpness_min = {TINY.sharpness_min:g}", f"Worst honest {SHARPNESS_WORST_HONEST:g}",
                  f"{SHARPNESS_MILDEST_SOFTEN:g} on the 48 other pairs", f"mildest {SOFTEN_SIGMA:g} px blur",
                  f"midway over all 72 pairs {midway:.3f}"):
        assert quote in text, f"README.md does not say {quote!r}"
