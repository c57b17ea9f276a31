"""Thresholds on the image metrics and the scorecard, how overrides combine, and the verdict of
one comparison.

``LIMITS`` is the one list of what can be limited: each entry is a configuration key (the same
name in ``[tool.quant_guard.thresholds]``, a checkpoint's or case's ``thresholds`` table, the
``qg_thresholds`` marker and ``--qg-limit KEY=VALUE``), the number it bounds (an ``ImageMetrics``
field or a ``Scorecard.values()`` key), its valid range and its tolerance in the expected mode.

Precedence, most specific last: defaults < [tool.quant_guard.thresholds] < an embedded
checkpoint's measured thresholds for the scheme < checkpoint < scheme < case < ``qg_thresholds``
marker < command line. The "expected" check compares with the numbers that
were recorded when the golden was last updated (``GoldenStore.load_expected`` in ``golden.py``;
its tolerances are ``ExpectedSettings`` below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from collections.abc import Mapping

    from quant_guard.judge.metrics import ImageMetrics
    from quant_guard.judge.scorecard import Scorecard


@dataclass(frozen=True)
class Limit:
    """One limit a user can set, and how the expected mode tolerates its number."""

    key: str  # configuration key, marker keyword, --qg-limit name; a ThresholdOverrides field
    value: str  # the number it bounds: an ImageMetrics field or a Scorecard.values() key
    metric: str  # its name in messages
    higher_is_better: bool
    low: float  # valid range of the limit
    high: float
    dimension: str  # the reviewer's dimension (DIMENSIONS) a failure of it counts against
    expected_margin: str  # ExpectedSettings field: how much worse than recorded is tolerated
    expected_factor: str | None = None  # ExpectedSettings field multiplying the recorded value first
    unit: str = ""
    threshold_field: str = ""  # the Thresholds field, when it differs from ``key``

    @property
    def field(self) -> str:
        return self.threshold_field or self.key

    @property
    def bound(self) -> str:
        return "min" if self.higher_is_better else "max"


# What a reviewer looks at (the source article's stability table): each limit counts against one.
DIMENSIONS: dict[str, str] = {
    "structure": "broken structure", "colour": "colour collapse", "sharpness": "softened detail",
    "meaning": "meaning lost",
}

LIMITS: tuple[Limit, ...] = (
    Limit("lpips", "lpips", "LPIPS", False, 0.0, 2.0, "structure", "lpips_margin", "lpips_factor",
          threshold_field="lpips_max"),
    Limit("ssim", "ssim", "SSIM", True, -1.0, 1.0, "structure", "ssim_margin", threshold_field="ssim_min"),
    Limit("psnr", "psnr", "PSNR", True, 0.0, 200.0, "structure", "psnr_margin_db", unit="dB",
          threshold_field="psnr_min"),
    Limit("colour_delta_e_mean", "colour_delta_e_mean", "ΔE mean", False, 0.0, 200.0, "colour", "delta_e_margin"),
    Limit("colour_delta_e_p95", "colour_delta_e_p95", "ΔE p95", False, 0.0, 200.0, "colour", "delta_e_margin"),
    Limit("colour_hue_shift", "colour_hue_shift", "hue shift", False, 0.0, 180.0, "colour", "hue_margin_deg",
          unit="°"),
    Limit("sharpness_min", "sharpness", "sharpness", True, 0.0, 100.0, "sharpness", "sharpness_margin"),
    Limit("sharpness_max", "sharpness", "sharpness", False, 0.0, 1e6, "sharpness", "sharpness_margin"),
    Limit("sharpness_worst_min", "sharpness_worst", "sharpness worst region", True, 0.0, 100.0, "sharpness",
          "sharpness_margin"),
    Limit("structure_worst_min", "structure_worst", "SSIM worst region", True, -1.0, 1.0, "structure",
          "region_margin"),
    Limit("artifacts_max", "artifacts_worst", "worst LPIPS region", False, 0.0, 2.0, "structure",
          "region_margin", "lpips_factor"),
)
LIMITS_BY_KEY: dict[str, Limit] = {limit.key: limit for limit in LIMITS}
LIMIT_KEYS: tuple[str, ...] = tuple(LIMITS_BY_KEY)
MEANING_KEY = "meaning"  # not a number: the semantic scorer whose verdict must hold (quant_guard.judge.semantic)
MEANING_OFF = "off"  # switches off a meaning check set at a less specific level
IMAGE_METRICS = ("lpips", "ssim", "psnr")  # values every comparison has; the rest need a scorecard


@dataclass(frozen=True)
class Thresholds:
    lpips_max: float
    ssim_min: float
    psnr_min: float
    # scorecard limits: None = reported, not enforced
    colour_delta_e_mean: float | None = None
    colour_delta_e_p95: float | None = None
    colour_hue_shift: float | None = None  # degrees, either direction
    sharpness_min: float | None = None
    sharpness_max: float | None = None
    sharpness_worst_min: float | None = None
    structure_worst_min: float | None = None
    artifacts_max: float | None = None
    meaning: str | None = None  # the semantic scorer whose verdict must hold; None or "off": none

    DEFAULT: ClassVar[Thresholds]

    def limit(self, limit: Limit) -> float | None:
        value: float | None = getattr(self, limit.field)
        return value

    @property
    def scorer(self) -> str | None:
        return None if self.meaning in (None, MEANING_OFF) else self.meaning


# The package defaults are a coarse absolute gate for real checkpoints, from published FLUX
# results (README, "Thresholds"): float8 against bf16 of the same seed scores LPIPS 0.02-0.17 and
# SSIM 0.94-0.98, INT W8A8 27 dB PSNR, while a broken render (an unrelated image) scores LPIPS
# 0.77 / SSIM 0.22. Per-case precision comes from the expected mode, or from thresholds measured
# for the checkpoint, like the embedded tiny checkpoint's below. No scorecard limit by default:
# no published float8 measurement of them exists to set one from.
Thresholds.DEFAULT = Thresholds(lpips_max=0.1, ssim_min=0.85, psnr_min=22.0)


@dataclass(frozen=True)
class ThresholdOverrides:
    """Partial thresholds from one level of configuration; None = inherit. Field names are the
    configuration keys (``LIMITS``)."""

    lpips: float | None = None
    ssim: float | None = None
    psnr: float | None = None
    colour_delta_e_mean: float | None = None
    colour_delta_e_p95: float | None = None
    colour_hue_shift: float | None = None
    sharpness_min: float | None = None
    sharpness_max: float | None = None
    sharpness_worst_min: float | None = None
    structure_worst_min: float | None = None
    artifacts_max: float | None = None
    meaning: str | None = None

    def over(self, base: ThresholdOverrides) -> ThresholdOverrides:
        """These overrides on top of ``base`` (ours win where set)."""
        return replace(base, **{k: v for k, v in vars(self).items() if v is not None})

    def apply(self, base: Thresholds) -> Thresholds:
        changes: dict[str, float | str] = {limit.field: getattr(self, limit.key) for limit in LIMITS
                                           if getattr(self, limit.key) is not None}
        if self.meaning is not None:
            changes["meaning"] = self.meaning
        return replace(base, **changes)


# one source: every limit is a field of both, and nothing else is
assert {f.name for f in fields(ThresholdOverrides)} == {*LIMIT_KEYS, MEANING_KEY}
assert {f.name for f in fields(Thresholds)} == {limit.field for limit in LIMITS} | {MEANING_KEY}

# The tiny checkpoint's scorecard limits for float8 (benchmarks/tiny_scorecard.py; README, "The scorecard").
TINY_DELTA_E_P95 = 3.0
TINY_SHARPNESS_MIN = 0.88


# The embedded tiny checkpoint's thresholds, per scheme kind (storage dtype or quantization
# method): each limit lies midway on a log scale between the worst honest image of that scheme and
# the mildest damaged one (quant_guard/model/tiny/settings.py, measured by benchmarks/tiny_quality.py):
# geometric mean for LPIPS and 1 - SSIM, mean of the dB values, rounded. A scheme kind without a
# measurement gets the package defaults: a 4-bit scheme is not held to a float8 limit. The float8
# scorecard limits come from benchmarks/tiny_scorecard.py: sharpness the same way (the worst honest
# float8 image, golden from this CPU or another, against the mildest softened one, rounded towards
# honest), colour above every honest image measured (README, "The scorecard"); the other
# schemes' scorecards are reported, not limited (not measured). No meaning
# check by default: the tiny scorer reads only the dataset's captions, so a case whose prompt is
# one turns it on (meaning = "tiny-scene", as this repository's do).
EMBEDDED_THRESHOLDS: dict[str, dict[str, ThresholdOverrides]] = {
    "tiny": {
        "float8_e4m3fn": ThresholdOverrides(lpips=0.008, ssim=0.975, psnr=34.0, colour_delta_e_p95=TINY_DELTA_E_P95,
                                            sharpness_min=TINY_SHARPNESS_MIN),
        "torchao_int8_w8a16": ThresholdOverrides(lpips=0.003, ssim=0.981, psnr=39.0),
        "torchao_fp8_w8a16": ThresholdOverrides(lpips=0.0066, ssim=0.979, psnr=36.5),
        "torchao_int8_w8a8": ThresholdOverrides(lpips=0.005, ssim=0.981, psnr=38.5),
        "bitsandbytes_nf4": ThresholdOverrides(lpips=0.023, ssim=0.96, psnr=31.0),
    },
}


def embedded_thresholds(embedded: str | None, kind: str) -> ThresholdOverrides:
    """What an embedded checkpoint brings for a scheme kind (nothing for other checkpoints)."""
    return EMBEDDED_THRESHOLDS.get(embedded or "", {}).get(kind, ThresholdOverrides())


def resolve_thresholds(base: Thresholds, *levels: ThresholdOverrides) -> Thresholds:
    for level in levels:
        base = level.apply(base)
    return base


@dataclass(frozen=True)
class ExpectedSettings:
    """The "expected" mode: fail when a number is worse than the value recorded at the last
    ``--update-golden`` by more than its tolerance: ``lpips <= expected * lpips_factor +
    lpips_margin``, ``ssim >= expected - ssim_margin``, ``psnr >= expected - psnr_margin_db``, and
    for each scorecard number that has a limit (``LIMITS``: which margin applies to which) the same
    one-sided rule with its own margin."""

    enabled: bool = True
    lpips_factor: float = 1.1
    lpips_margin: float = 0.005
    ssim_margin: float = 0.005
    psnr_margin_db: float = 1.0
    delta_e_margin: float = 0.5  # CIEDE2000 units; about 1 is the smallest difference a person sees
    hue_margin_deg: float = 2.0
    sharpness_margin: float = 0.05  # of the sharpness ratio
    region_margin: float = 0.02  # worst-region SSIM and LPIPS (one tile moves more than the image)


@dataclass(frozen=True)
class MetricCheck:
    """One number against one limit, e.g. ``LPIPS 0.0712 > max 0.05``."""

    metric: str
    value: float
    limit: float
    higher_is_better: bool
    source: str  # "threshold" or "expected"
    key: str = ""  # the Limit's key ("meaning" for the meaning check)
    unit: str = ""

    @property
    def passed(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    @property
    def dimension(self) -> str:
        limit = LIMITS_BY_KEY.get(self.key)
        return "meaning" if self.key == MEANING_KEY else limit.dimension if limit is not None else "structure"

    def describe(self) -> str:
        op = (">=" if self.passed else "<") if self.higher_is_better else ("<=" if self.passed else ">")
        bound = "min" if self.higher_is_better else "max"
        unit = f" {self.unit}" if self.unit == "dB" else self.unit
        verdict = "ok" if self.passed else "FAIL"
        if self.key == MEANING_KEY:
            return f"meaning {'kept' if self.passed else 'LOST'} ({self.source}) {verdict}"
        return (f"{self.metric:<5} {_fmt(self.value)}{unit} {op} {bound} {_fmt(self.limit)}{unit}"
                f" ({self.source}) {verdict}")


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def measured(metrics: ImageMetrics, scorecard: Scorecard | None) -> dict[str, float]:
    """Every number a limit can bound (``Limit.value`` keys); a scorecard adds its own."""
    values = {"lpips": metrics.lpips, "ssim": metrics.ssim, "psnr": metrics.psnr}
    if scorecard is not None:
        values.update({k: v for k, v in scorecard.values().items() if v is not None})
    return values


def check_thresholds(metrics: ImageMetrics, limits: Thresholds, scorecard: Scorecard | None = None) -> list[MetricCheck]:
    """A check per limit that is set and has its number (a scorecard limit needs the scorecard;
    the hue limit needs saturated pixels to measure on), and the meaning check when a scorer ran."""
    values = measured(metrics, scorecard)
    checks = []
    for limit in LIMITS:
        bound = limits.limit(limit)
        if bound is not None and limit.value in values:
            checks.append(MetricCheck(limit.metric, values[limit.value], bound, limit.higher_is_better, "threshold",
                                      limit.key, limit.unit))
    if scorecard is not None and scorecard.meaning is not None:
        checks.append(MetricCheck("meaning", 1.0 if scorecard.meaning.agrees else 0.0, 1.0, True, "threshold",
                                  MEANING_KEY))
    return checks


def expected_bound(limit: Limit, recorded: float, settings: ExpectedSettings) -> float:
    """The expected mode's bound on a number recorded as ``recorded``: a margin below it for a
    number that is better higher, a factor and a margin above it otherwise."""
    margin = getattr(settings, limit.expected_margin)
    if limit.higher_is_better:
        return recorded - margin
    return recorded * (getattr(settings, limit.expected_factor) if limit.expected_factor else 1.0) + margin


def check_expected(metrics: ImageMetrics, expected: ImageMetrics, settings: ExpectedSettings, *,
                   limits: Thresholds | None = None, scorecard: Scorecard | None = None,
                   expected_scorecard: Mapping[str, float] | None = None) -> list[MetricCheck]:
    """Hold a candidate to the numbers recorded at the last re-baseline (one-sided: being closer
    to the golden than last time always passes). LPIPS, SSIM and PSNR always; a scorecard number
    when it has a limit in ``limits`` and was recorded (goldens updated before the scorecard
    existed have none)."""
    values = measured(metrics, scorecard)
    recorded = {"lpips": expected.lpips, "ssim": expected.ssim, "psnr": expected.psnr, **(expected_scorecard or {})}
    checks = []
    for limit in LIMITS:
        scored = limit.value not in IMAGE_METRICS
        if scored and (limits is None or limits.limit(limit) is None):
            continue
        if limit.value not in values or limit.value not in recorded:
            continue
        base = recorded[limit.value]
        # an identical image at baseline (PSNR inf) gives no bound; the other numbers still hold it
        bound = expected_bound(limit, base, settings) if math.isfinite(base) else \
            (limit.low if limit.higher_is_better else limit.high)
        checks.append(MetricCheck(limit.metric, values[limit.value], bound, limit.higher_is_better, "expected",
                                  limit.key, limit.unit))
    return checks


def limit_words(checks: list[MetricCheck]) -> dict[str, str]:
    """What the scorecard's words say after a number (``Scorecard.describe``): its limits, by
    ``Limit.value``, e.g. {"colour_delta_e_p95": "limit 3.0, expected max 1.5"}; a number held
    by thresholds on both sides says which is which ("min 0.88, max 1.2")."""
    found = [(c, LIMITS_BY_KEY[c.key]) for c in checks if c.key in LIMITS_BY_KEY]
    sides: dict[str, set[str]] = {}  # the bounds ("min", "max") thresholds set on each number
    for c, limit in found:
        if c.source == "threshold":
            sides.setdefault(limit.value, set()).add(limit.bound)
    out: dict[str, list[str]] = {}
    for c, limit in found:
        bound = f"{c.limit:.1f}" if abs(c.limit) >= 1 else f"{c.limit:.3g}"
        if c.source != "threshold":
            text = f"expected {limit.bound} {bound}"
        else:
            text = f"{limit.bound} {bound}" if len(sides[limit.value]) > 1 else f"limit {bound}"
        out.setdefault(limit.value, []).append(text)
    return {k: ", ".join(v) for k, v in out.items()}


def expected_moved(new: Mapping[str, float | None], recorded: Mapping[str, float],
                   settings: ExpectedSettings) -> list[str]:
    """The recorded expected numbers that a re-measurement moved by more than the expected mode's
    tolerance in either direction (``lpips``/``ssim``/``psnr`` and ``Scorecard.values()`` keys),
    as "LPIPS 0.0031 -> 0.0042" lines; a number on one side only counts as moved. Empty: the
    recorded file still describes this candidate, and re-recording it would only churn (a
    re-baseline on another CPU moves NF4's LPIPS by a few 1e-4)."""
    limits = {limit.value: limit for limit in LIMITS}  # both sharpness limits share one margin
    moved = []
    for name in sorted(set(recorded) | {k for k, v in new.items() if v is not None}):
        old, now = recorded.get(name), new.get(name)
        limit = limits.get(name)
        label = limit.metric if limit is not None else name
        if old is None or now is None:
            moved.append(f"{label} {'absent' if old is None else _fmt(old)} -> {'absent' if now is None else _fmt(now)}")
        elif not _within_tolerance(old, now, limit, settings):
            moved.append(f"{label} {_fmt(old)} -> {_fmt(now)}")
    return moved


def _within_tolerance(old: float, now: float, limit: Limit | None, settings: ExpectedSettings) -> bool:
    """``now`` passes the expected check against ``old`` and ``old`` against ``now`` (the check
    is one-sided; keeping a much worse recorded value would loosen it)."""
    if math.isnan(old) or math.isnan(now):
        return False
    if not (math.isfinite(old) and math.isfinite(now)):
        return old == now  # PSNR inf (identical images) stays only while it is inf
    if limit is None:  # a number no limit reads: only its rounding may differ
        return abs(old - now) <= 1e-6
    if limit.higher_is_better:
        return now >= expected_bound(limit, old, settings) and old >= expected_bound(limit, now, settings)
    return now <= expected_bound(limit, old, settings) and old <= expected_bound(limit, now, settings)
