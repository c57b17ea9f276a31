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

from dataclasses import dataclass, fields, replace
from typing import ClassVar


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
    "meaning": "meaning lost", "text": "garbled text", "temporal": "flicker",
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
    # only for a case that sets expect_text (quant_guard.judge.text): the candidate's reading against the expected words
    Limit("text_cer_max", "text_cer", "text CER", False, 0.0, 1.0, "text", "text_cer_margin"),
    # only for a clip (a video family; quant_guard.judge.temporal), in pixel levels: how much the
    # candidate's change from frame to frame differs from the golden's own (per pixel; per frame mean)
    Limit("flicker_max", "flicker", "flicker", False, 0.0, 255.0, "temporal", "flicker_margin"),
    Limit("exposure_flicker_max", "exposure_flicker", "exposure flicker", False, 0.0, 255.0, "temporal",
          "exposure_flicker_margin"),
    Limit("tlp_max", "tlp", "tLP", False, 0.0, 2.0, "temporal", "tlp_margin"),
)
LIMITS_BY_KEY: dict[str, Limit] = {limit.key: limit for limit in LIMITS}
LIMIT_KEYS: tuple[str, ...] = tuple(LIMITS_BY_KEY)
MEANING_KEY = "meaning"  # not a number: the semantic scorer whose verdict must hold (quant_guard.judge.semantic)
MEANING_OFF = "off"  # switches off a meaning check set at a less specific level
IMAGE_METRICS = ("lpips", "ssim", "psnr")  # values every comparison has; the rest need a scorecard


@dataclass(frozen=True)
class ImageMetrics:
    """LPIPS (lower is closer, 0 = identical), SSIM (1 = identical), PSNR in dB (inf = identical)."""

    lpips: float
    ssim: float
    psnr: float


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
    text_cer_max: float | None = None  # judged only for a case with expect_text
    flicker_max: float | None = None  # judged only for a clip, like the two below
    exposure_flicker_max: float | None = None
    tlp_max: float | None = None
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
# no published float8 measurement of them exists to set one from. The text limit is the exception: it
# only judges a case that lists the text its image must show (``expect_text``), and a third of the
# expected characters wrong is where the damaged signs of tests/judge/test_text.py stopped being
# readable (README, "Text legibility").
TEXT_CER_MAX = 0.3
Thresholds.DEFAULT = Thresholds(lpips_max=0.1, ssim_min=0.85, psnr_min=22.0, text_cer_max=TEXT_CER_MAX)


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
    text_cer_max: float | None = None
    flicker_max: float | None = None
    exposure_flicker_max: float | None = None
    tlp_max: float | None = None
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
# the mildest damaged one (quant_guard/config/tiny_settings.py, measured by benchmarks/tiny_quality.py):
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
        # the other components, each quantized alone ("component:kind", config.schemes.Scheme.kind):
        # midway between the worst honest image and the mildest text encoder damaged at the degrade
        # default (benchmarks/tiny_text_encoder.py, tiny_settings.COMPONENT_MEASUREMENTS). A
        # combination of parts without an entry of its own is held to the loosest of its parts'.
        "text_encoder_t5:float8_e4m3fn": ThresholdOverrides(lpips=0.011, ssim=0.981, psnr=36.0),
        "text_encoder_t5:torchao_int8_w8a16": ThresholdOverrides(lpips=0.0018, ssim=0.984, psnr=41.0),
        "text_encoder_clip:float8_e4m3fn": ThresholdOverrides(lpips=0.0015, ssim=0.984, psnr=41.0),
        "vae:float8_e4m3fn": ThresholdOverrides(lpips=0.017, ssim=0.96, psnr=33.5),
    },
}


def embedded_thresholds(embedded: str | None, kind: str, parts: tuple[str, ...] = ()) -> ThresholdOverrides:
    """What an embedded checkpoint brings for a scheme kind (nothing for other checkpoints): the
    trained tiny's above, the other families' tinies' in ``families.EMBEDDED``.

    A scheme quantizing several components (``parts``: each one's kind, ``Scheme.threshold_parts``)
    gets its own kind's entry when one was measured, else the loosest of its parts' entries, limit
    by limit (a limit some part leaves unset stays unset), and nothing when a part has no entry:
    the package defaults, as for any unmeasured kind."""
    table = _measured(embedded)
    if kind in table or len(parts) < 2:
        return table.get(kind, ThresholdOverrides())
    measured = [table.get(part) for part in parts]
    return loosest([m for m in measured if m is not None]) if None not in measured else ThresholdOverrides()


def _measured(embedded: str | None) -> dict[str, ThresholdOverrides]:
    from quant_guard.config.families import EMBEDDED

    if embedded in EMBEDDED_THRESHOLDS:
        return EMBEDDED_THRESHOLDS[embedded]
    own = EMBEDDED[embedded].thresholds if embedded in EMBEDDED else {}
    return {k: ThresholdOverrides(**v) for k, v in own.items()}


def loosest(levels: list[ThresholdOverrides]) -> ThresholdOverrides:
    """Limit by limit the loosest of ``levels`` (the largest max, the smallest min); a limit that
    one of them does not set is not set, and a meaning check only when all name the same."""
    out: dict[str, float | str | None] = {}
    for limit in LIMITS:
        values = [getattr(level, limit.key) for level in levels]
        if values and None not in values:
            out[limit.key] = min(values) if limit.higher_is_better else max(values)
    meanings = {level.meaning for level in levels}
    out[MEANING_KEY] = meanings.pop() if len(meanings) == 1 else None
    return ThresholdOverrides(**out)  # type: ignore[arg-type]


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
    text_cer_margin: float = 0.1  # of the text CER: about one more wrong character in ten
    flicker_margin: float = 0.3  # pixel levels (float8 on the tiny Wan: 1.3)
    exposure_flicker_margin: float = 0.05  # pixel levels (float8 on the tiny Wan: 0.03-0.07)
    tlp_margin: float = 0.005
