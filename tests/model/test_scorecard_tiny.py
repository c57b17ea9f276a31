"""The scorecard on real renders of the tiny checkpoint: each damage aimed at one dimension is
caught by that dimension and not read as the other (a colour cast of the VAE's final layer by
colour, a softened render by sharpness), honest float8 passes the shipped limits even against a
golden from another CPU, DiT colour damage moves colour beyond honest float8, and the meaning
check reads the caption back from both images and loses a picture of another shape, position or
size, or a speck."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from drift_support import drift_like
from safetensors.torch import load_file, save_file

from quant_guard.tools.degrade import Degradation, degrade, soften_image, zoom_image
from quant_guard.judge.metrics import compare_images
from quant_guard.model.pipelines import build_pipeline
from quant_guard.model.render import RenderRequest, render
from quant_guard.config.schemes import FLOAT8_E4M3FN, REFERENCE, Scheme
from quant_guard.judge.scorecard import compute_scorecard
from quant_guard.judge.semantic import TinySceneScorer, judge
from quant_guard.config.thresholds import EMBEDDED_THRESHOLDS, Thresholds
from quant_guard.judge import scenes as ds
from quant_guard.model.tiny.build import ensure_tiny_checkpoint
from quant_guard.model.checkpoints import tiny_resolved

CAPTION = "a yellow triangle on a black background in the center"  # a case of this repository's suite
SHIFT_CAPTION = "a red circle on a blue background at the top left"
LIMITS = EMBEDDED_THRESHOLDS["tiny"]["float8_e4m3fn"].apply(Thresholds.DEFAULT)


def _pipeline(scheme: Scheme, *, dit: Path | None = None, vae: Path | None = None) -> Any:
    return build_pipeline(tiny_resolved(ensure_tiny_checkpoint(), {scheme.id: dit} if dit else None, vae=vae), scheme, "cpu")


def _render(pipe: Any, caption: str = CAPTION) -> np.ndarray:
    request = RenderRequest(caption, 0, ds.RECOMMENDED_STEPS, ds.IMAGE_SIZE, ds.IMAGE_SIZE, ds.EMBEDDED_GUIDANCE,
                            ds.T5_SEQUENCE_LENGTH)
    return render(pipe, request).image


def _damaged(tmp: Path, source: Path, kind: Degradation) -> Path:
    path = tmp / f"{kind.value}.safetensors"
    save_file(degrade(load_file(str(source)), kind), str(path))
    return path


@pytest.fixture(scope="module")
def bf16_pipe() -> Any:
    return _pipeline(REFERENCE)


@pytest.fixture(scope="module")
def float8_pipe() -> Any:
    return _pipeline(FLOAT8_E4M3FN)


@pytest.fixture(scope="module")
def golden(bf16_pipe: Any) -> np.ndarray:
    return _render(bf16_pipe)


@pytest.fixture(scope="module")
def honest(float8_pipe: Any) -> np.ndarray:
    return _render(float8_pipe)


def test_honest_float8_passes_the_tiny_limits_even_against_a_golden_from_another_cpu(
        golden: np.ndarray, honest: np.ndarray) -> None:
    assert LIMITS.colour_delta_e_p95 is not None and LIMITS.sharpness_min is not None
    for reference in (golden, drift_like(golden, seed=0)):
        card = compute_scorecard(reference, honest)
        assert card.colour.delta_e_p95 <= LIMITS.colour_delta_e_p95
        assert card.sharpness.ratio >= LIMITS.sharpness_min


def test_a_colour_cast_is_caught_by_colour_and_not_read_as_softening(
        golden: np.ndarray, honest: np.ndarray, tmp_path: Path) -> None:
    cast = _render(_pipeline(FLOAT8_E4M3FN, vae=_damaged(tmp_path, ensure_tiny_checkpoint().vae,
                                                          Degradation.COLOUR_CAST)))
    card = compute_scorecard(golden, cast, prompt=CAPTION, scorer=TinySceneScorer())
    assert card.colour.delta_e_p95 > LIMITS.colour_delta_e_p95  # type: ignore[operator]
    assert card.colour.delta_e_p95 > 3 * compute_scorecard(golden, honest).colour.delta_e_p95
    assert 0.95 < card.sharpness.ratio < 1.05 and card.sharpness.words == "as sharp"
    assert card.meaning is not None and card.meaning.agrees  # a cast, not a different picture


def test_softening_is_caught_by_sharpness_and_by_nothing_else(golden: np.ndarray, honest: np.ndarray) -> None:
    soft = soften_image(honest)
    card = compute_scorecard(golden, soft, prompt=CAPTION, scorer=TinySceneScorer())
    assert card.sharpness.ratio < LIMITS.sharpness_min  # type: ignore[operator]
    assert card.sharpness.words == "softer"
    assert card.colour.delta_e_p95 <= LIMITS.colour_delta_e_p95  # type: ignore[operator]
    # LPIPS, SSIM and PSNR let it through: only the scorecard says the detail went
    metrics = compare_images(golden, soft)
    assert metrics.lpips <= LIMITS.lpips_max and metrics.ssim >= LIMITS.ssim_min and metrics.psnr >= LIMITS.psnr_min
    assert card.meaning is not None and card.meaning.agrees


def test_dit_colour_shift_moves_colour_beyond_honest_float8(bf16_pipe: Any, float8_pipe: Any,
                                                            tmp_path: Path) -> None:
    golden = _render(bf16_pipe, SHIFT_CAPTION)
    honest = compute_scorecard(golden, _render(float8_pipe, SHIFT_CAPTION), prompt=SHIFT_CAPTION,
                               scorer=TinySceneScorer())
    dit = _damaged(tmp_path, ensure_tiny_checkpoint().dit, Degradation.COLOUR_SHIFT)
    damaged = compute_scorecard(golden, _render(_pipeline(FLOAT8_E4M3FN, dit=dit), SHIFT_CAPTION),
                                prompt=SHIFT_CAPTION, scorer=TinySceneScorer())
    # benchmarks/tiny_scorecard.py, 72 other pairs: honest ΔE p95 at most 1.65, DiT colour-shift 1.03 to 10.35
    assert honest.colour.delta_e_p95 < 1.7
    assert damaged.colour.delta_e_p95 > max(2.0, 3 * honest.colour.delta_e_p95)
    assert honest.meaning is not None and honest.meaning.agrees and honest.meaning.golden.agrees
    assert damaged.meaning is not None and damaged.meaning.agrees  # the shape and background keep their names


# One caption per shape, every position among them; each one the model draws as asked.
MEANING_CAPTIONS = (SHIFT_CAPTION, CAPTION, "a white square on a gray background at the bottom right",
                    "a blue cross on a white background at the top right")


def _speck(scene: ds.Scene, size: int = 5) -> np.ndarray:
    image = np.empty((ds.IMAGE_SIZE, ds.IMAGE_SIZE, 3), dtype=np.uint8)
    image[:] = ds.BACKGROUNDS[scene.background]
    cx, cy = ds.POSITIONS[scene.position]
    image[cy - size // 2:cy + size // 2 + 1, cx - size // 2:cx + size // 2 + 1] = ds.COLOURS[scene.colour]
    return image


@pytest.mark.parametrize("caption", MEANING_CAPTIONS)
def test_meaning_is_lost_by_a_picture_of_another_shape_position_or_size_or_a_speck(
        caption: str, bf16_pipe: Any, float8_pipe: Any) -> None:
    scene = ds.parse_caption(caption)
    shapes, positions = list(ds.SHAPES), list(ds.POSITIONS)
    other_shape = shapes[(shapes.index(scene.shape) + 1) % len(shapes)]
    other_position = positions[(positions.index(scene.position) + 1) % len(positions)]
    golden = _render(bf16_pipe, caption)
    honest = _render(float8_pipe, caption)
    centre = ds.POSITIONS[scene.position]
    wrong = {  # candidate -> the attribute it gets wrong
        "shape": _render(float8_pipe, caption.replace(scene.shape, other_shape)),
        "position": _render(float8_pipe, caption.replace(scene.position, other_position)),
        "half size": zoom_image(honest, 0.5, centre),
        "1.8x size": zoom_image(honest, 1.8, centre),
        "speck": _speck(scene),
    }
    scorer = TinySceneScorer()
    kept = judge(scorer, golden, honest, caption)
    assert kept.agrees and kept.golden.agrees and kept.candidate.score == 1.0, kept.describe()
    # margins (benchmarks/tiny_meaning.py, every caption): a right render reads 0.85-1.14 of the
    # dataset's size and within 2.8 px of its position; the limits are 0.7-1.4 and 6 px
    reading = ds.read_scene(honest)
    assert 0.8 <= reading.size <= 1.2
    assert np.hypot(reading.centre[0] - centre[0], reading.centre[1] - centre[1]) <= 4.0
    for name, image in wrong.items():
        lost = judge(scorer, golden, image, caption)
        assert not lost.agrees and (lost.candidate.score or 0.0) <= 0.8, (name, lost.describe())
        expected = "size" if "size" in name or name == "speck" else name
        assert expected in lost.candidate.misses, (name, lost.describe())
        # what the meaning check read before (colours only) took each of them for the caption
        assert ds.read_colours(image) == (scene.colour, scene.background), name
    assert ds.read_scene(wrong["half size"]).size < 0.6 and ds.read_scene(wrong["1.8x size"]).size > 1.5
