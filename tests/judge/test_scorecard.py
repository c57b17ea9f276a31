"""The scorecard on synthetic images whose answer is known independently: a hue rotation done in
CIELAB moves hue and ΔE but not detail, a Gaussian blur removes detail but not hue, identical
images score zero difference, and the direction words follow CIELAB's hue order."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.color import lab2rgb, rgb2lab

from drift_support import drift_like
from quant_guard.judge import semantic
from quant_guard.tools.degrade import soften_image
from quant_guard.judge.metrics import ssim
from quant_guard.judge.scorecard import HUE_NAMES, Scorecard, compute_scorecard, hue_name, tiles
from quant_guard.judge.semantic import (
    CLIP_ENV,
    ClipScorer,
    ScorerUnavailable,
    SemanticScorer,
    TinySceneScorer,
    Verdict,
    get_scorer,
    judge,
    register,
)
from quant_guard.judge import scenes as ds


def textured(size: int = 128, seed: int = 0) -> np.ndarray:
    """Smooth colour blobs with fine texture and hard edges, moderate chroma (inside sRGB after
    a hue rotation)."""
    rng = np.random.default_rng(seed)
    lab = np.empty((size, size, 3))
    lab[..., 0] = 55 + 25 * np.sign(gaussian_filter(rng.standard_normal((size, size)), 6))  # hard-edged areas
    lab[..., 0] += 6 * rng.standard_normal((size, size))  # fine texture
    hue = gaussian_filter(rng.standard_normal((size, size)), 10)
    hue = 2 * np.pi * (hue - hue.min()) / np.ptp(hue)
    lab[..., 1], lab[..., 2] = 30 * np.cos(hue), 30 * np.sin(hue)
    return to_uint8(lab)


def to_uint8(lab: np.ndarray) -> np.ndarray:
    return (np.clip(lab2rgb(lab), 0, 1) * 255).round().astype(np.uint8)


def rotate_hue(image: np.ndarray, degrees: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Rotate every pixel's (a*, b*) by ``degrees`` (only where ``mask``): a pure hue change."""
    lab = rgb2lab(image)
    t = np.radians(degrees)
    a, b = lab[..., 1], lab[..., 2]
    rotated = lab.copy()
    rotated[..., 1], rotated[..., 2] = a * np.cos(t) - b * np.sin(t), a * np.sin(t) + b * np.cos(t)
    if mask is not None:
        rotated[~mask] = lab[~mask]
    return to_uint8(rotated)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_filter(image.astype(np.float64), (sigma, sigma, 0)).round().astype(np.uint8)


def flat(rgb: tuple[int, int, int], size: int = 64) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, dtype=np.uint8), (size, size, 3)).copy()


def test_identical_images_score_no_difference() -> None:
    img = textured()
    card = compute_scorecard(img, img.copy())
    assert card.colour.delta_e_mean == 0.0 and card.colour.delta_e_p95 == 0.0
    assert card.colour.hue_shift_deg == 0.0 and card.colour.towards is None
    assert card.sharpness.ratio == 1.0 and card.sharpness.worst is not None and card.sharpness.worst.value == 1.0
    assert card.structure.ssim == pytest.approx(1.0)
    assert card.artifacts.worst is None  # no window of the LPIPS map differs at all
    assert "hue +0°" in card.describe() and "sharpness 1.00 (as sharp)" in card.describe()


@pytest.mark.parametrize("degrees", [-20.0, 12.0])
def test_hue_rotation_moves_hue_and_delta_e_but_not_sharpness(degrees: float) -> None:
    golden = textured()
    card = compute_scorecard(golden, rotate_hue(golden, degrees))
    assert card.colour.hue_shift_deg == pytest.approx(degrees, abs=1.5)
    assert card.colour.delta_e_mean > 3.0
    assert card.colour.saturated_fraction > 0.5
    assert 0.95 < card.sharpness.ratio < 1.05


def test_blur_softens_without_moving_hue() -> None:
    golden = textured()
    card = compute_scorecard(golden, blur(golden, 1.5))
    assert card.sharpness.ratio < 0.3
    assert card.sharpness.words == "softer"
    assert abs(card.colour.hue_shift_deg or 0.0) < 1.0
    assert card.structure.ssim < 0.9


def test_pixel_noise_of_another_cpu_is_not_read_as_lost_detail() -> None:
    """Cross-CPU bf16 drift (a few levels on a few % of the values) on either image of a flat,
    hard-edged drawing keeps the ratio within 5% of 1, while a blur of 0.8 px reads clearly
    softer: the measure works on the finest band the image draws, above single-pixel noise (a
    plain 3x3 Laplacian read such drift as 0.58 on tiny renders)."""
    golden = _dataset_image(CAPTION)
    assert 0.95 < compute_scorecard(drift_like(golden, seed=1), golden).sharpness.ratio < 1.05
    assert 0.95 < compute_scorecard(golden, drift_like(golden, seed=2)).sharpness.ratio < 1.05
    assert compute_scorecard(golden, soften_image(golden, 0.8)).sharpness.ratio < 0.85


def test_worst_regions_find_the_damaged_quadrant() -> None:
    golden = textured(128)
    candidate = golden.copy()
    candidate[64:, :64] = blur(golden, 2.0)[64:, :64]  # bottom-left quadrant only
    card = compute_scorecard(golden, candidate)
    for tile in (card.sharpness.worst, card.structure.worst, card.artifacts.worst):
        assert tile is not None
        cx, cy = tile.x + tile.w / 2, tile.y + tile.h / 2
        assert cx < 64 and cy > 64, tile
    assert card.sharpness.worst.value < card.sharpness.ratio < 1.0  # the quadrant is softer than the whole
    assert card.structure.worst.value < card.structure.ssim


def test_structure_is_the_gates_ssim() -> None:
    golden = textured()
    candidate = blur(golden, 0.8)
    assert compute_scorecard(golden, candidate).structure.ssim == ssim(golden, candidate)


# CIELAB hue angle grows red -> yellow -> green -> cyan -> blue -> purple -> red
@pytest.mark.parametrize(("rgb", "degrees", "words"), [
    ((220, 30, 30), 20.0, "orange"),  # red turning towards yellow
    ((220, 30, 30), -20.0, "pink"),  # red turning towards magenta
    ((30, 70, 230), 15.0, "purple/magenta"),  # blue turning towards red: the article's "slightly purple"
    ((30, 70, 230), -15.0, "cyan"),
    ((245, 215, 30), -10.0, "orange"),
    ((30, 180, 50), 20.0, "cyan"),
])
def test_direction_words_for_known_rotations(rgb: tuple[int, int, int], degrees: float, words: str) -> None:
    golden = flat(rgb)
    card = compute_scorecard(golden, rotate_hue(golden, degrees))
    assert np.sign(card.colour.hue_shift_deg or 0.0) == np.sign(degrees)
    assert card.colour.towards == words
    assert f"(towards {words})" in card.describe()


def test_hue_names_cover_the_srgb_primaries() -> None:
    expected = {(255, 0, 0): "red", (255, 128, 0): "orange", (255, 255, 0): "yellow", (0, 255, 0): "green",
                (0, 255, 255): "cyan", (0, 0, 255): "blue", (255, 0, 255): "purple/magenta", (255, 0, 128): "pink"}
    for rgb, name in expected.items():
        lab = rgb2lab(np.asarray([[rgb]], dtype=np.uint8))[0, 0]
        assert hue_name(float(np.degrees(np.arctan2(lab[2], lab[1])))) == name, rgb
    assert len({n for _, n in HUE_NAMES}) == len(HUE_NAMES)


def test_shift_in_the_bright_half_is_placed_there() -> None:
    golden = textured()
    bright = rgb2lab(golden)[..., 0] > 60
    card = compute_scorecard(golden, rotate_hue(golden, 15.0, mask=bright))
    assert card.colour.where == "in the bright regions"
    card = compute_scorecard(golden, rotate_hue(golden, 15.0, mask=~bright))
    assert card.colour.where == "in the dark regions"
    assert compute_scorecard(golden, rotate_hue(golden, 15.0)).colour.where == "across the image"


def test_grey_images_have_no_hue_to_measure() -> None:
    golden = flat((120, 120, 120))
    card = compute_scorecard(golden, flat((140, 140, 140)))
    assert card.colour.hue_shift_deg is None and card.colour.delta_e_mean > 5
    assert "no saturated colours" in card.describe()


def test_tiles_cover_the_image() -> None:
    covered = np.zeros((70, 100), dtype=int)
    for x, y, w, h in tiles(70, 100, 32):
        assert (w, h) == (32, 32) and x + w <= 100 and y + h <= 70
        covered[y:y + h, x:x + w] += 1
    assert covered.min() >= 1


def test_describe_and_json_say_the_same() -> None:
    golden = textured()
    card = compute_scorecard(golden, blur(rotate_hue(golden, 10.0), 1.0))
    text = card.describe()
    for part in ("colour: ΔE mean", "hue +10°", "sharpness", "(softer)", "structure: SSIM",
                 "artifacts: worst LPIPS region"):
        assert part in text, (part, text)
    data = json.loads(json.dumps(card.to_json(), allow_nan=False))
    assert data["colour"]["hue_shift_deg"] == pytest.approx(card.colour.hue_shift_deg)
    assert data["sharpness"]["words"] == "softer"
    assert data["structure"]["worst"]["value"] == pytest.approx(card.structure.worst.value)
    assert data["meaning"] is None
    assert isinstance(card, Scorecard)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="image shapes differ"):
        compute_scorecard(flat((1, 2, 3), 64), flat((1, 2, 3), 32))
    with pytest.raises(ValueError, match="needs the prompt"):
        compute_scorecard(flat((1, 2, 3)), flat((1, 2, 3)), scorer=TinySceneScorer())


# --- meaning -------------------------------------------------------------------------------------

CAPTION = "a red circle on a blue background at the top left"


def _dataset_image(caption: str) -> np.ndarray:
    return ds.render(ds.parse_caption(caption), random.Random(0), jitter=0)


def test_tiny_scorer_agrees_on_the_dataset_image_and_sees_a_lost_colour() -> None:
    golden = _dataset_image(CAPTION)
    card = compute_scorecard(golden, golden.copy(), prompt=CAPTION, scorer=get_scorer("tiny-colours"))
    assert card.meaning is not None and card.meaning.agrees and card.meaning.scorer == "tiny-scene"
    assert (f"{CAPTION}, dataset size (x1.0" in card.describe()
            and "golden and candidate agree with the prompt (tiny-scene)" in card.describe())
    assert card.meaning.candidate.score == 1.0
    wrong = _dataset_image(CAPTION.replace("red", "yellow"))
    card = compute_scorecard(golden, wrong, prompt=CAPTION, scorer=TinySceneScorer())
    assert card.meaning is not None and not card.meaning.agrees
    assert "meaning: LOST: candidate a yellow circle on a blue background" in card.describe()
    assert "(not as asked: colour)" in card.describe()
    assert card.meaning.candidate.score == pytest.approx(0.8)  # four of the five attributes
    assert card.to_json()["meaning"]["candidate"]["agrees"] is False


def test_tiny_scorer_holds_a_candidate_to_what_its_golden_drew_where_the_model_missed_the_caption() -> None:
    # the model draws a blob where the caption asks for a cross: the candidate must draw the same blob
    prompt = CAPTION.replace("circle", "cross")
    scorer = TinySceneScorer()
    golden = _dataset_image(CAPTION)
    assert scorer.verdict(golden, prompt).misses == ("shape",)
    assert judge(scorer, golden, golden.copy(), prompt).agrees
    assert judge(scorer, golden, _dataset_image(prompt), prompt).agrees  # drawing the caption is always right
    for other in (CAPTION.replace("circle", "triangle"), CAPTION.replace("top left", "bottom right")):
        assert not judge(scorer, golden, _dataset_image(other), prompt).agrees, other


def test_tiny_scorer_refuses_a_prompt_it_cannot_read() -> None:
    with pytest.raises(ScorerUnavailable, match="tiny dataset's captions"):
        TinySceneScorer().verdict(flat((1, 2, 3)), "a cyberpunk city at night")


class _FakeScorer:
    """Stands in for a text-image model: the score is the mean red level."""

    name = "fake"

    def verdict(self, image: np.ndarray, prompt: str) -> Verdict:
        score = float(image[..., 0].mean()) / 255
        return Verdict(score > 0.5, f"redness {score:.2f}", score)

    def candidate_agrees(self, golden: Verdict, candidate: Verdict) -> bool:
        return (candidate.score or 0.0) >= (golden.score or 0.0) - 0.1


def test_a_registered_scorer_is_used_through_the_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(_FakeScorer(), SemanticScorer)
    monkeypatch.setattr("quant_guard.judge.semantic.SCORERS", dict(semantic.SCORERS))  # leave the registry as it was
    register("fake", _FakeScorer)
    scorer = get_scorer("fake")
    kept = judge(scorer, flat((200, 0, 0)), flat((190, 0, 0)), "red")
    lost = judge(scorer, flat((200, 0, 0)), flat((60, 0, 0)), "red")
    assert kept.agrees and not lost.agrees
    assert lost.describe() == "LOST: candidate redness 0.24, golden redness 0.78 (fake)"


def test_unknown_scorer_names_the_known_ones() -> None:
    with pytest.raises(ScorerUnavailable, match="unknown semantic scorer 'blip'; known: .*clip.*tiny-colours"):
        get_scorer("blip")


def test_clip_without_a_model_is_a_clear_error_never_a_pass(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CLIP_ENV, raising=False)
    with pytest.raises(ScorerUnavailable, match=f"set {CLIP_ENV}"):
        get_scorer("clip")
    monkeypatch.setenv(CLIP_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ScorerUnavailable, match="nowhere does not exist"):
        get_scorer("clip")
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text("{}")
    with pytest.raises(ScorerUnavailable, match="lacks preprocessor_config.json or processor_config.json, "
                                                "tokenizer.json or vocab.json, model.safetensors or pytorch_model.bin"):
        ClipScorer(tmp_path / "clip")
