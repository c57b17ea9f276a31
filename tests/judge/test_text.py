"""The text legibility check (quant_guard.judge.text) on images with real rendered text: DejaVu
Sans Bold drawn by Pillow (quant_guard.tools.text_signs), read by Tesseract.

The damage series (blur, letters merged, JPEG; ``text_signs.SERIES``) must raise the character
error rate monotonically and cross the default limit (``TEXT_CER_MAX``) where the sign stops
being readable; the intact sign passes. Which steps a person can still read was judged on the
images of docs/text_legibility.png (benchmarks/text_legibility.py draws them with the figures)."""

from __future__ import annotations

import numpy as np
import pytest

from quant_guard.config.thresholds import TEXT_CER_MAX, Thresholds
from quant_guard.judge.checks import limit_words
from quant_guard.judge.judgement import judge
from quant_guard.judge.text import (
    MAX_UPSCALE,
    MIN_SIDE,
    OcrUnavailable,
    TextExpectation,
    best_match_errors,
    character_error_rate,
    crop,
    edit_distance,
    read_text,
    reading_error_rate,
    text_score,
    upscale_factor,
)
from quant_guard.tools.degrade import soften_image
from quant_guard.tools.text_signs import SERIES, STREET_SIGN, STREET_SIZE, damaged, jpeg_image, sign_image

LINES, SIZE = STREET_SIGN, STREET_SIZE
EXPECTED = tuple(text for text, _ in LINES)


@pytest.fixture(scope="module")
def sign() -> np.ndarray:
    return sign_image(LINES, size=SIZE)


def blurred(sign: np.ndarray, sigma: float) -> np.ndarray:
    return soften_image(sign, sigma) if sigma else sign


# ---- scoring -----------------------------------------------------------------------------------

def test_edit_distance_counts_insertions_deletions_and_substitutions() -> None:
    assert edit_distance("NEON CITY", "NEON CITY") == 0
    assert edit_distance("NEON CITY", "NEDN CTY") == 2  # one substitution, one deletion
    assert edit_distance("", "ABC") == 3 and edit_distance("ABC", "") == 3


def test_the_expected_text_is_found_where_it_matches_best_in_the_reading() -> None:
    # the other signs of a street are no error; a garbled letter inside the match is
    assert best_match_errors("neon city", "open 24h neon city noodles") == 0
    assert best_match_errors("neon city", "open 24h nedn city noodles") == 1
    assert character_error_rate(["NEON CITY"], "BAR neon  City\nRAMEN") == 0.0  # case and whitespace: legibility only
    assert character_error_rate(["NEON CITY"], "") == 1.0
    assert character_error_rate(["NEON CITY"], "NEONCITY") == pytest.approx(1 / 9)  # letters stuck together
    # several strings: their edits over their total length
    assert character_error_rate(["NEON", "CITY"], "NEON CTY") == pytest.approx(1 / 8)
    with pytest.raises(ValueError, match="no expected text"):
        character_error_rate(["  "], "x")


def test_the_reading_against_the_golden_is_a_plain_edit_distance() -> None:
    assert reading_error_rate("NEON CITY", "NEON CITY") == 0.0
    assert reading_error_rate("NEON CITY", "NEON CITY BAR") == pytest.approx(4 / 9)  # extra words count here
    assert reading_error_rate("", "NEON") is None  # a golden that shows no text gives no rate


def test_small_images_are_upscaled_before_reading() -> None:
    assert upscale_factor(1024, 1024) == 1 and upscale_factor(MIN_SIDE, 2 * MIN_SIDE) == 1
    assert upscale_factor(256, 256) == 2 and upscale_factor(200, 360) == 2 and upscale_factor(64, 64) == 7  # tiny renders
    assert upscale_factor(20, 300) == MAX_UPSCALE


# ---- reading -----------------------------------------------------------------------------------

def test_an_intact_sign_is_read_word_by_word_with_boxes_in_image_pixels(sign: np.ndarray) -> None:
    reading = read_text(sign)
    assert character_error_rate(EXPECTED, reading.text) == 0.0
    neon = next(w for w in reading.words if w.text == "NEON")
    # the box lies on the sign's ink: the pink letters fill part of it
    box = sign[neon.y:neon.y + neon.h, neon.x:neon.x + neon.w]
    ink = (box[..., 0] > 200) & (box[..., 1] < 120)
    assert 0.15 < ink.mean() < 0.8 and neon.confidence > 50


def test_a_region_reads_only_the_text_inside_it() -> None:
    image = sign_image((("NEON CITY", 36),), size=(360, 240), at=(20, 20))
    image = np.concatenate([image[:120], sign_image((("RAMEN BAR", 36),), size=(360, 120))], axis=0)
    top, bottom = (0, 0, 360, 120), (0, 120, 360, 120)
    upper, lower = read_text(image, top), read_text(image, bottom)
    # (Tesseract also reads a few "words" in the noisy background: that is no error against the expected text)
    assert character_error_rate(["NEON CITY"], upper.text) == 0.0 and "RAMEN" not in upper.text
    assert character_error_rate(["RAMEN BAR"], lower.text) == 0.0 and "NEON" not in lower.text
    assert all(w.y >= 120 for w in lower.words)  # boxes in the whole image's pixels
    with pytest.raises(ValueError, match=r"text region \[300, 0, 100, 50\] .* does not lie inside the 360x240 image"):
        crop(image, (300, 0, 100, 50))


@pytest.mark.parametrize("kind", list(SERIES))
def test_damage_raises_the_error_rate_monotonically_past_the_limit(kind: str) -> None:
    """Each series ends on an image a person cannot read (docs/text_legibility.png); its CER must
    rise step by step from 0 and end above the limit, with a partial reading on the way."""
    rates = []
    for step in SERIES[kind]:
        image, expected = damaged(kind, step)
        rates.append(character_error_rate(expected, read_text(image).text))
    assert rates == sorted(rates), f"{kind}: CER {rates} over steps {SERIES[kind]} is not monotonic"
    assert rates[0] == 0.0 <= TEXT_CER_MAX  # intact: passes
    assert rates[-1] > TEXT_CER_MAX, f"{kind}: the unreadable last step reads CER {rates[-1]}"
    assert any(0 < r < 1 for r in rates), f"{kind}: no partial reading between intact and destroyed: {rates}"


# ---- the judgement -----------------------------------------------------------------------------

def test_the_judgement_fails_unreadable_text_and_passes_readable_text(sign: np.ndarray) -> None:
    expectation = TextExpectation(("NEON CITY",))
    loose = Thresholds(lpips_max=2.0, ssim_min=-1.0, psnr_min=0.0, text_cer_max=TEXT_CER_MAX)
    ok = judge(sign, jpeg_image(sign, 90), loose, prompt="a sign", text=expectation)
    assert ok.passed and [c.key for c in ok.checks if c.key.startswith("text")] == ["text_cer_max"]
    bad = judge(sign, blurred(sign, 4.0), loose, prompt="a sign", text=expectation)
    assert [c.key for c in bad.failed] == ["text_cer_max"] and bad.failed[0].dimension == "text"
    words = bad.scorecard.describe(limit_words(list(bad.checks)))
    # the failure quotes what was expected and what each image shows
    assert 'text: expected "NEON CITY": golden reads "' in words and 'NEON CITY OPEN ALL NIGHT' in words
    assert "candidate reads nothing (CER 1.00, limit 0.3)" in words
    # a case without expect_text has no text check, whatever the limit
    assert judge(sign, blurred(sign, 4.0), loose, prompt="a sign").scorecard.text is None


def test_text_the_golden_lacks_fails_even_when_the_candidate_matches_the_golden() -> None:
    """The expected words are the reference, not the golden: a model that never draws the sign
    fails its case however faithfully the candidate copies the golden."""
    ramen = sign_image((("RAMEN BAR", 36),), size=(360, 120))
    loose = Thresholds(lpips_max=2.0, ssim_min=-1.0, psnr_min=0.0, text_cer_max=TEXT_CER_MAX)
    result = judge(ramen, ramen, loose, prompt="a sign", text=TextExpectation(("NEON CITY",)))
    (failed,) = result.failed
    text = result.scorecard.text
    assert failed.key == "text_cer_max" and text is not None and text.cer_vs_golden == 0.0
    assert text.golden_cer == text.cer > TEXT_CER_MAX
    assert 'golden reads "' in text.describe() and "RAMEN BAR" in text.describe()


def test_the_expected_mode_holds_the_text_cer_to_its_recorded_value(sign: np.ndarray) -> None:
    from quant_guard.config.thresholds import ExpectedSettings

    expectation = TextExpectation(EXPECTED)
    loose = Thresholds(lpips_max=2.0, ssim_min=-1.0, psnr_min=0.0, text_cer_max=1.0)
    baseline = judge(sign, sign, loose, prompt="a sign", text=expectation)
    recorded = baseline.scorecard.values()
    assert recorded["text_cer"] == 0.0
    worse = judge(sign, blurred(sign, 3.0), loose, prompt="a sign", text=expectation, expected=baseline.metrics,
                  expected_scorecard={"text_cer": 0.0}, settings=ExpectedSettings(lpips_margin=2.0, lpips_factor=100.0,
                                                                                   ssim_margin=2.0, psnr_margin_db=200.0))
    (failed,) = worse.failed
    assert failed.key == "text_cer_max" and failed.source == "expected" and failed.limit == pytest.approx(0.1)


def test_results_carry_the_readings_with_their_boxes(sign: np.ndarray) -> None:
    score = text_score(sign, blurred(sign, 4.0), TextExpectation(("NEON CITY",), (0, 0, 360, 200)))
    data = judge(sign, sign, Thresholds.DEFAULT, prompt="p", text=TextExpectation(("NEON CITY",))).scorecard.to_json()
    golden = data["text"]["golden"]
    assert "NEON CITY" in golden["text"] and {"text", "x", "y", "w", "h", "confidence"} <= set(golden["words"][0])
    assert score.cer == 1.0 and score.golden_cer == 0.0 and score.cer_vs_golden == 1.0 and score.region == (0, 0, 360, 200)


def test_missing_ocr_is_an_error_naming_how_to_install_it(monkeypatch: pytest.MonkeyPatch, sign: np.ndarray) -> None:
    import pytesseract

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "no-such-tesseract")
    with pytest.raises(OcrUnavailable, match=r"not on PATH: install .*quant_guard\[text\].*apt-get install tesseract-ocr"):
        read_text(sign[:, ::-1].copy())  # an image not read before (the cache would answer)
