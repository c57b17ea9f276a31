"""The judgement of one candidate image against its golden: LPIPS/SSIM/PSNR, the scorecard (with
the meaning check when the thresholds name a scorer) and every check of the thresholds, then of
the expected mode when metrics were recorded.

A clip (a video family's T x H x W x 3 frames) is judged the same way on its worst frames: LPIPS,
SSIM and PSNR each at the frame where it is worst, the scorecard of the worst-LPIPS frame, and
the temporal measures (``judge.temporal``: flicker, exposure flicker, tLP) in the scorecard, where
their limits (``flicker_max``...) find them.

One function for every caller that decides pass or fail on images: the gate (``gate._judge``
and its drift comparison) and the sensitivity sweep (``sweep._Run.measure``), so that a limit the
gate enforces can never be one the sweep ignores.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from quant_guard.config.thresholds import MEANING_KEY, ExpectedSettings, Thresholds
from quant_guard.judge.checks import check_expected, check_thresholds

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np

    from quant_guard.judge.metrics import ImageMetrics
    from quant_guard.judge.scorecard import Scorecard
    from quant_guard.judge.semantic import ScorerUnavailable, SemanticScorer
    from quant_guard.judge.checks import MetricCheck
    from quant_guard.judge.text import TextExpectation


@dataclass(frozen=True)
class Judgement:
    metrics: ImageMetrics
    scorecard: Scorecard
    checks: tuple[MetricCheck, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> tuple[MetricCheck, ...]:
        return tuple(c for c in self.checks if not c.passed)


def judge(golden: np.ndarray, candidate: np.ndarray, limits: Thresholds, *, prompt: str,
          expected: ImageMetrics | None = None, expected_scorecard: Mapping[str, float] | None = None,
          settings: ExpectedSettings = ExpectedSettings(), text: TextExpectation | None = None,
          device: str | None = None) -> Judgement:
    """Compare ``candidate`` with ``golden`` and check every limit of ``limits`` (scorecard and
    meaning included; the text a case expects when ``text`` is given), then the expected mode's
    when ``expected`` metrics were recorded. The measures run on ``device`` (the render's; default
    the CPU)."""
    metrics, card = compare(golden, candidate, limits, prompt=prompt, text=text, device=device)
    checks = judge_checks(metrics, card, limits, expected=expected, expected_scorecard=expected_scorecard,
                          settings=settings)
    return Judgement(metrics, card, tuple(checks))


def judge_checks(metrics: ImageMetrics, card: Scorecard, limits: Thresholds, *, expected: ImageMetrics | None = None,
                 expected_scorecard: Mapping[str, float] | None = None,
                 settings: ExpectedSettings = ExpectedSettings()) -> list[MetricCheck]:
    """The limits of the thresholds, then the expected mode's (when metrics were recorded)."""
    checks = check_thresholds(metrics, limits, card)
    if expected is not None:
        checks += check_expected(metrics, expected, settings, limits=limits, scorecard=card,
                                 expected_scorecard=expected_scorecard)
    return checks


def compare(golden: np.ndarray, candidate: np.ndarray, limits: Thresholds, *,
            prompt: str, text: TextExpectation | None = None,
            device: str | None = None) -> tuple[ImageMetrics, Scorecard]:
    """LPIPS/SSIM/PSNR and the scorecard, the images converted once (on ``device``) and the LPIPS
    and SSIM maps computed once for both; the meaning check when the thresholds name a scorer
    (``ScorerUnavailable`` when it cannot run: never a silent pass); the text legibility check when
    ``text`` is given (``OcrUnavailable`` when no OCR engine is installed, likewise)."""
    from quant_guard.judge.metrics import compare_with_maps
    from quant_guard.judge.scorecard import compute_scorecard

    if golden.ndim == 4:
        return _compare_clip(golden, candidate, limits, prompt=prompt, text=text, device=device)
    metrics, maps = compare_with_maps(golden, candidate, device=device)
    scorer = semantic_scorer(limits.scorer) if limits.scorer else None
    card = compute_scorecard(golden, candidate, prompt=prompt, scorer=scorer, lpips_map=maps.lpips,
                             ssim=(metrics.ssim, maps.ssim), pair=maps.pair, text=text)
    return metrics, card


def _compare_clip(golden: np.ndarray, candidate: np.ndarray, limits: Thresholds, *, prompt: str,
                  text: TextExpectation | None, device: str | None) -> tuple[ImageMetrics, Scorecard]:
    """A clip's worst-frame metrics, and the worst-LPIPS frame's scorecard with the temporal measures."""
    from dataclasses import replace

    from quant_guard.judge.scorecard import TemporalScore
    from quant_guard.judge.temporal import compare_clips

    clip = compare_clips(golden, candidate, device=device)  # the render's device, as for an image
    worst = clip.worst_lpips[1]
    _, card = compare(golden[worst], candidate[worst], limits, prompt=prompt, text=text, device=device)
    return clip.worst, replace(card, temporal=TemporalScore.of(clip))


def image_metrics(golden: np.ndarray, candidate: np.ndarray) -> ImageMetrics:
    """LPIPS/SSIM/PSNR of an image, or of a clip's worst frames (a drift comparison)."""
    from quant_guard.judge.metrics import compare_images
    from quant_guard.judge.temporal import compare_frames

    return compare_frames(golden, candidate) if golden.ndim == 4 else compare_images(golden, candidate)


@functools.cache
def semantic_scorer(name: str) -> SemanticScorer:
    """Built once per process (a CLIP model takes seconds to load); a failure is not cached."""
    from quant_guard.judge.semantic import get_scorer

    return get_scorer(name)


def meaning_unavailable(exc: ScorerUnavailable) -> str:
    """Why a judgement could not be made: the meaning check's scorer cannot run."""
    return f"the meaning check (thresholds key {MEANING_KEY!r}) cannot run: {exc}"
