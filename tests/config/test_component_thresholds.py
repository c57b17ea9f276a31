"""Thresholds of schemes that quantize more than the DiT (issue 29): a component kind the tiny
checkpoint measured ("text_encoder_t5:float8_e4m3fn") has its own; a combination without an entry of
its own is held to the loosest of its parts', and to the package defaults when a part is unmeasured."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from quant_guard.config.project import parse_config
from quant_guard.config.thresholds import EMBEDDED_THRESHOLDS, ImageMetrics, ThresholdOverrides, Thresholds
from quant_guard.config.tiny_settings import COMPONENT_MEASUREMENTS
from quant_guard.judge.checks import check_thresholds
from quant_guard.run.cases import expand_cases

REPO = Path(__file__).resolve().parents[2]
TINY = EMBEDDED_THRESHOLDS["tiny"]
T5_F8, T5_INT8 = "text_encoder_t5:float8_e4m3fn", "text_encoder_t5:torchao_int8_w8a16"


def configured(tmp_path: Path, *schemes: Any) -> dict[str, Thresholds]:
    """Scheme id -> the thresholds the gate holds it to on the tiny checkpoint (before markers)."""
    config = parse_config({"checkpoints": [{"id": "ck", "embedded": "tiny", "device": "cpu", "schemes": list(schemes)}],
                           "cases": [{"id": "c", "prompt": "a red circle", "seeds": [0]}]},
                          file=tmp_path / "qg.toml", where="tool.quant_guard")
    return {vc.scheme.id: vc.configured_thresholds(config.thresholds) for vc in expand_cases(config)}


def limits(t: Thresholds) -> tuple[float, float, float]:
    return (t.lpips_max, t.ssim_min, t.psnr_min)


def test_a_component_alone_is_held_to_its_own_kinds_measured_thresholds(tmp_path: Path) -> None:
    got = configured(tmp_path, "float8_e4m3fn",
                     {"id": "t5", "components": {"text_encoder_t5": "float8_e4m3fn"}},
                     {"id": "t5-int8", "components": {"text_encoder_t5": "torchao_int8_w8a16"}},
                     {"id": "clip", "components": {"text_encoder_clip": "float8_e4m3fn"}},
                     {"id": "vae", "components": {"vae": "float8_e4m3fn"}})
    for scheme, kind in (("t5", T5_F8), ("t5-int8", T5_INT8), ("clip", "text_encoder_clip:float8_e4m3fn"),
                         ("vae", "vae:float8_e4m3fn")):
        own = TINY[kind]
        assert limits(got[scheme]) == (own.lpips, own.ssim, own.psnr), scheme
    assert limits(got["t5"]) != limits(got["float8_e4m3fn"])  # not the DiT kind's
    assert got["t5"].colour_delta_e_p95 is None  # the DiT's float8 scorecard limit is the DiT's


def test_a_combination_is_held_to_the_loosest_of_its_parts(tmp_path: Path) -> None:
    got = configured(tmp_path, {"id": "both", "components": {"dit": "float8_e4m3fn",
                                                              "text_encoder_t5": "float8_e4m3fn"}})["both"]
    dit, t5 = TINY["float8_e4m3fn"], TINY[T5_F8]
    assert limits(got) == (max(dit.lpips, t5.lpips), min(dit.ssim, t5.ssim), min(dit.psnr, t5.psnr))  # type: ignore[type-var]
    assert got.colour_delta_e_p95 is None and got.sharpness_min is None  # only the DiT part limits them
    assert limits(got) != limits(Thresholds.DEFAULT)


def test_a_combination_measured_as_a_whole_uses_its_own_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = ThresholdOverrides(lpips=0.0123, ssim=0.9, psnr=30.5)
    monkeypatch.setitem(TINY, f"dit:float8_e4m3fn+{T5_F8}", own)
    got = configured(tmp_path, {"id": "both", "components": {"dit": "float8_e4m3fn",
                                                              "text_encoder_t5": "float8_e4m3fn"}})["both"]
    assert limits(got) == (0.0123, 0.9, 30.5)


def test_a_combination_with_an_unmeasured_part_gets_the_package_defaults(tmp_path: Path) -> None:
    got = configured(tmp_path, {"id": "e5m2-t5", "components": {"dit": "float8_e5m2",
                                                                 "text_encoder_t5": "float8_e4m3fn"}},
                     {"id": "t5-clip-int8", "components": {"text_encoder_t5": "float8_e4m3fn",
                                                           "text_encoder_clip": "torchao_int8_w8a16"}})
    assert limits(got["e5m2-t5"]) == limits(got["t5-clip-int8"]) == limits(Thresholds.DEFAULT)


@pytest.mark.parametrize("kind", sorted(COMPONENT_MEASUREMENTS))
def test_each_component_kind_passes_its_worst_honest_image_and_fails_its_mildest_damage(kind: str) -> None:
    honest, damage = COMPONENT_MEASUREMENTS[kind]
    held = TINY[kind].apply(Thresholds.DEFAULT)
    assert [c.metric for c in check_thresholds(ImageMetrics(*honest), held) if not c.passed] == []
    assert [c.metric for c in check_thresholds(ImageMetrics(*damage), held) if not c.passed] == ["LPIPS", "SSIM", "PSNR"]


def test_the_readme_quotes_the_component_measurements_and_thresholds() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for kind, (honest, damage) in COMPONENT_MEASUREMENTS.items():
        t = TINY[kind]
        row = (f"| {kind} | LPIPS {honest[0]:.4f} / SSIM {honest[1]:.4f} / PSNR {honest[2]:.1f} dB | "
               f"LPIPS {damage[0]:.4f} / SSIM {damage[1]:.4f} / PSNR {damage[2]:.1f} dB | "
               f"max LPIPS {t.lpips:g}, min SSIM {t.ssim:g}, min PSNR {t.psnr:g} dB |")
        assert row in readme, row
    assert re.search(r"loosest of its parts", readme)
