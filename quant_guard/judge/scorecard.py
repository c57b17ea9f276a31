"""A scorecard of what a reviewer looks at when comparing a candidate with its golden: colour,
sharpness, structure, artifacts and (optionally) meaning, each a number with a plain meaning.

LPIPS/SSIM/PSNR say how much an image changed; the scorecard says how:

- colour: CIEDE2000 (``torch_ops.delta_e_2000``, as scikit-image's) per pixel, mean and 95th percentile; the signed hue shift of
  the pixels that are saturated in the golden (CIELAB chroma above ``SATURATED_CHROMA``), as a
  circular mean in degrees, with the direction in words (``HUE_NAMES``) and where it sits
  (bright or dark pixels, or across the image).
- sharpness: the candidate's fine detail relative to the golden's, as the ratio of the mean
  square of the Laplacian of Gaussian (sigma ``SHARPNESS_SIGMA`` px) of the lightness: the
  energy of the finest band an image draws, above single-pixel noise; below 1 is softer. Over
  the whole image and in the tile where it is lowest.
- structure: SSIM (``quant_guard.judge.metrics``, the gate's own settings) and its worst tile.
- artifacts: the worst window of the spatial LPIPS map (``quant_guard.judge.regions``).
- meaning: a semantic check of golden and candidate against the prompt
  (``quant_guard.judge.semantic``), only when a scorer is given.
- text: the words golden and candidate show, read by OCR, and the candidate's character error
  rate against the text the case expects (``quant_guard.judge.text``), only for a case with
  ``expect_text``.

The per-pixel work runs as torch operations (``quant_guard.judge.torch_ops``, each held to the
scikit-image / scipy function it replaces) on the images of a ``metrics.ImagePair``, converted
once and shared with the gate's LPIPS and SSIM; the maps of those are reused, not recomputed.
numpy and torch are imported inside the functions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np
    import torch

    from quant_guard.judge.metrics import ImagePair
    from quant_guard.judge.semantic import MeaningScore, SemanticScorer
    from quant_guard.judge.text import TextExpectation, TextScore
    from quant_guard.judge.temporal import ClipMetrics

SATURATED_CHROMA = 20.0  # CIELAB C*ab above which a golden pixel counts as saturated (sRGB primaries: 50-134)
MIN_SATURATED_PIXELS = 16  # fewer saturated golden pixels: no hue shift is reported
# Hue sectors of the CIELAB hue angle h_ab (degrees), named after the sRGB colours inside them:
# red 40, orange 60, yellow 103, green 136, cyan 196, azure 285, blue 306, violet 312, magenta
# and purple 328, rose 3. A positive shift turns counter-clockwise in the a*b* plane
# (red -> yellow -> green -> cyan -> blue -> purple -> red).
HUE_NAMES: tuple[tuple[float, str], ...] = (
    (25.0, "red"), (50.0, "orange"), (80.0, "yellow"), (115.0, "green"), (170.0, "cyan"),
    (240.0, "blue"), (310.0, "purple/magenta"), (345.0, "pink"),
)  # (start of the sector, name); each sector ends where the next starts, "pink" wraps past 0
BRIGHT_DARK_FACTOR = 2.0  # a shift "in the bright regions" is at least this many times the dark one
MIN_LIGHTNESS_SPREAD = 10.0  # CIELAB L*: saturated pixels closer in lightness than this have no bright/dark
# The Laplacian of Gaussian's sigma, in pixels. A plain 3x3 Laplacian is dominated by isolated
# pixel noise: cross-CPU bf16 drift (a few levels on a few % of the pixels, tests/drift_support.py)
# moved its ratio down to 0.58 on tiny renders, into the range of a Gaussian blur of 0.6 px
# (0.43-0.69); at 0.7 px the same drift stays above 0.92 while that blur reads 0.67-0.83
# (benchmarks/tiny_scorecard.py).
SHARPNESS_SIGMA = 0.7
SOFTER, SHARPER = 0.9, 1.1  # sharpness ratios below / above which the words say "softer" / "more detail"
DETAIL_FLOOR = 0.25  # tiles whose golden detail is below this share of the mean tile's are not ranked
_EPS = 1e-9


@dataclass(frozen=True)
class Tile:
    """A rectangle of the image in pixels and the value of a dimension inside it."""

    x: int
    y: int
    w: int
    h: int
    value: float


@dataclass(frozen=True)
class ColourScore:
    delta_e_mean: float  # CIEDE2000 over all pixels; about 1 is the smallest difference a person sees
    delta_e_p95: float
    hue_shift_deg: float | None  # signed circular mean over saturated golden pixels; None: none saturated
    saturated_fraction: float  # share of the pixels the hue shift is measured on
    towards: str | None  # the hue the saturated pixels move towards (HUE_NAMES), None when no shift
    where: str | None  # "in the bright regions", "in the dark regions" or "across the image"


@dataclass(frozen=True)
class SharpnessScore:
    ratio: float  # candidate / golden high-frequency energy; 1 = same detail, < 1 = softer
    worst: Tile | None  # the tile with the lowest ratio among tiles with detail in the golden

    @property
    def words(self) -> str:
        return "softer" if self.ratio < SOFTER else "more fine detail or noise" if self.ratio > SHARPER else "as sharp"


@dataclass(frozen=True)
class StructureScore:
    ssim: float
    worst: Tile  # the tile with the lowest mean of the SSIM map


@dataclass(frozen=True)
class ArtifactScore:
    kind: str  # "LPIPS", or "pixel difference" for images too small for LPIPS
    worst: Tile | None  # the worst window of the map (square, side = report's region size); None: no difference


@dataclass(frozen=True)
class TemporalScore:
    """A clip's per-frame numbers and how its change from frame to frame differs from the golden's
    (``judge.temporal``); the rest of its scorecard is of the worst-LPIPS frame, ``worst_frame``."""

    frames: int
    worst_frame: int
    lpips: tuple[float, ...]  # per frame, in order
    ssim: tuple[float, ...]
    psnr: tuple[float, ...]
    tlp: float
    flicker: float  # pixel levels
    exposure_flicker: float  # pixel levels

    @classmethod
    def of(cls, clip: ClipMetrics) -> TemporalScore:
        return cls(len(clip.frames), clip.worst_lpips[1], tuple(m.lpips for m in clip.frames),
                   tuple(m.ssim for m in clip.frames), tuple(m.psnr for m in clip.frames), clip.tlp, clip.flicker,
                   clip.exposure_flicker)


@dataclass(frozen=True)
class Scorecard:
    colour: ColourScore
    sharpness: SharpnessScore
    structure: StructureScore
    artifacts: ArtifactScore
    meaning: MeaningScore | None = None
    text: TextScore | None = None
    temporal: TemporalScore | None = None  # a clip's

    def values(self) -> dict[str, float | None]:
        """The numbers a limit can bound (``quant_guard.config.thresholds.LIMITS``), by key; None where
        there is nothing to measure (no saturated pixels for a hue, no detail for a worst tile)."""
        c, s, a = self.colour, self.sharpness, self.artifacts
        return {
            "colour_delta_e_mean": c.delta_e_mean, "colour_delta_e_p95": c.delta_e_p95,
            "colour_hue_shift": None if c.hue_shift_deg is None else abs(c.hue_shift_deg),
            "sharpness": s.ratio, "sharpness_worst": s.worst.value if s.worst is not None else None,
            "structure_worst": self.structure.worst.value,
            # an LPIPS limit bounds LPIPS only (images under 31 px get a pixel-difference map)
            "artifacts_worst": (a.worst.value if a.worst is not None else 0.0) if a.kind == "LPIPS" else None,
            "text_cer": self.text.cer if self.text is not None else None,
            **({"flicker": self.temporal.flicker, "exposure_flicker": self.temporal.exposure_flicker,
                "tlp": self.temporal.tlp} if self.temporal is not None else {}),
        }

    @property
    def words(self) -> str:
        return self.describe()

    def describe(self, limits: Mapping[str, str] | None = None) -> str:
        """The scorecard in the words a person reads, one clause per dimension. ``limits`` (by
        ``values()`` key, e.g. {"colour_delta_e_p95": "limit 3.0"}) are said after their number."""
        limits = limits or {}

        def said(key: str, text: str) -> str:
            return f"{text} ({limits[key]})" if key in limits else text

        c, s, st, a = self.colour, self.sharpness, self.structure, self.artifacts
        colour = ("colour: " + said("colour_delta_e_mean", f"ΔE mean {c.delta_e_mean:.1f}") + ", "
                  + said("colour_delta_e_p95", f"p95 {c.delta_e_p95:.1f}"))
        if c.hue_shift_deg is None:
            colour += ", no saturated colours to measure hue on"
        else:
            colour += ", " + said("colour_hue_shift", f"hue {c.hue_shift_deg:+.0f}°")
            if c.towards is not None:
                colour += f" (towards {c.towards}) {c.where}"
        sharp = said("sharpness", f"sharpness {s.ratio:.2f}") + f" ({s.words})"
        if s.worst is not None and (s.worst.value < s.ratio - 0.05 or "sharpness_worst" in limits):
            sharp += ", " + said("sharpness_worst", f"worst region {_box(s.worst)} {s.worst.value:.2f}")
        structure = (f"structure: SSIM {st.ssim:.3f}, "
                     + said("structure_worst", f"worst region {_box(st.worst)} {st.worst.value:.3f}"))
        if a.worst is None:
            artifacts = f"artifacts: no {a.kind} difference"
        else:
            artifacts = said("artifacts_worst", f"artifacts: worst {a.kind} region {_box(a.worst)} "
                                                f"({a.worst.w}x{a.worst.h} px) {a.worst.value:.4f}")
        parts = [colour, sharp, structure, artifacts]
        if self.meaning is not None:
            parts.append(f"meaning: {self.meaning.describe()}")
        if self.text is not None:
            parts.append(f"text: {self.text.describe(limits.get('text_cer', ''))}")
        if (t := self.temporal) is not None:
            parts.insert(0, f"worst frame {t.worst_frame + 1} of {t.frames}")
            parts.append("over time: " + said("flicker", f"flicker {t.flicker:.2f}") + ", "
                         + said("exposure_flicker", f"exposure flicker {t.exposure_flicker:.3f}") + ", "
                         + said("tlp", f"tLP {t.tlp:.4f}") + " (pixel levels against the golden's own motion)")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (for results.json); a non-finite number becomes null."""
        data = asdict(self)
        data["sharpness"]["words"] = self.sharpness.words
        if self.text is not None:  # the readings as one string each, beside their words and boxes
            data["text"]["golden"]["text"] = self.text.golden.text
            data["text"]["candidate"]["text"] = self.text.candidate.text
        return _finite(data)


def _box(tile: Tile) -> str:
    return f"({tile.x}, {tile.y}, {tile.w}, {tile.h})"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def hue_name(angle_deg: float) -> str:
    """The ``HUE_NAMES`` sector a CIELAB hue angle lies in."""
    angle = angle_deg % 360.0
    name = HUE_NAMES[-1][1]  # below the first start: the last sector, which wraps past 0
    for start, sector in HUE_NAMES:
        if angle >= start:
            name = sector
    return name


def colour_score(golden_lab: torch.Tensor, candidate_lab: torch.Tensor) -> ColourScore:
    """The colour dimension of two CIELAB images, 3 x H x W tensors (``metrics.ImagePair.lab``)."""
    import torch

    from quant_guard.judge.torch_ops import delta_e_2000, median, percentile

    de = delta_e_2000(golden_lab, candidate_lab)
    sat = torch.hypot(golden_lab[1], golden_lab[2]) > SATURATED_CHROMA
    n = int(sat.sum())
    base = dict(delta_e_mean=float(de.mean()), delta_e_p95=percentile(de, 95), saturated_fraction=n / sat.numel())
    if n < MIN_SATURATED_PIXELS:
        return ColourScore(hue_shift_deg=None, towards=None, where=None, **base)
    if n == sat.numel():  # every pixel (often): no copy through the mask
        g, c = golden_lab.reshape(3, -1), candidate_lab.reshape(3, -1)
    else:
        g, c = golden_lab[:, sat], candidate_lab[:, sat]
    h_g = torch.atan2(g[2], g[1])
    diff = torch.remainder(torch.atan2(c[2], c[1]) - h_g + math.pi, 2 * math.pi) - math.pi
    diff = torch.where(diff == -math.pi, math.pi, diff)  # wrapped to (-pi, pi]
    shift = _circular_mean_deg(diff)
    if abs(shift) < 0.5:  # below what the words could honestly name
        return ColourScore(hue_shift_deg=shift, towards=None, where=None, **base)
    sign = 1 if shift > 0 else -1
    moved = torch.sign(diff) == sign
    # the neighbour, in the direction of the shift, of the sector most of the moved pixels start in
    names = [n for _, n in HUE_NAMES]
    start = int(torch.argmax(_sector_counts(torch.rad2deg(h_g[moved]))))
    towards = names[(start + sign) % len(names)]
    lightness = g[0]
    bright = lightness > median(lightness)
    spread = 0.0
    if 0 < int(bright.sum()) < bright.numel():
        spread = median(lightness[bright]) - median(lightness[~bright])
    if spread < MIN_LIGHTNESS_SPREAD:
        return ColourScore(hue_shift_deg=shift, towards=towards, where="across the image", **base)
    shift_bright = abs(_circular_mean_deg(diff[bright]))
    shift_dark = abs(_circular_mean_deg(diff[~bright]))
    if shift_bright >= BRIGHT_DARK_FACTOR * shift_dark:
        where = "in the bright regions"
    elif shift_dark >= BRIGHT_DARK_FACTOR * shift_bright:
        where = "in the dark regions"
    else:
        where = "across the image"
    return ColourScore(hue_shift_deg=shift, towards=towards, where=where, **base)


def _circular_mean_deg(radians: torch.Tensor) -> float:
    import torch

    return math.degrees(math.atan2(float(torch.sin(radians).mean()), float(torch.cos(radians).mean())))


def _sector_counts(h_deg: torch.Tensor) -> torch.Tensor:
    """How many of the angles lie in each ``HUE_NAMES`` sector, in order."""
    import torch

    starts = torch.tensor([s for s, _ in HUE_NAMES], dtype=h_deg.dtype, device=h_deg.device)
    index = torch.searchsorted(starts, h_deg % 360.0, right=True) - 1  # -1: below the first start
    return torch.bincount(index % len(HUE_NAMES), minlength=len(HUE_NAMES))


def tiles(height: int, width: int, side: int) -> list[tuple[int, int, int, int]]:
    """A grid of ``side`` x ``side`` tiles (x, y, w, h) covering the image; the last row and
    column are aligned with the image's edge (they may overlap their neighbours)."""
    side_y, side_x = min(side, height), min(side, width)
    ys = sorted({*range(0, height - side_y + 1, side_y), height - side_y})
    xs = sorted({*range(0, width - side_x + 1, side_x), width - side_x})
    return [(x, y, side_x, side_y) for y in ys for x in xs]


def _tile_means(values: np.ndarray | torch.Tensor, grid: list[tuple[int, int, int, int]]) -> list[float]:
    import numpy as np

    means = [values[y:y + h, x:x + w].mean() for x, y, w, h in grid]
    if isinstance(values, np.ndarray):
        return [float(m) for m in means]
    import torch

    return [float(m) for m in torch.stack(means).tolist()]  # one transfer from the device


def sharpness_score(golden_l: torch.Tensor, candidate_l: torch.Tensor, side: int) -> SharpnessScore:
    """Ratio of the mean square Laplacian of Gaussian (``SHARPNESS_SIGMA``) of the CIELAB
    lightness (H x W tensors), candidate over golden."""
    import torch

    from quant_guard.judge.torch_ops import gaussian_laplace

    energy_g, energy_c = gaussian_laplace(torch.stack([golden_l, candidate_l]), SHARPNESS_SIGMA).square()
    total_g, total_c = float(energy_g.mean()), float(energy_c.mean())
    ratio = 1.0 if total_g < _EPS and total_c < _EPS else total_c / max(total_g, _EPS)
    grid = tiles(*golden_l.shape, side)
    tg, tc = _tile_means(energy_g, grid), _tile_means(energy_c, grid)
    floor = DETAIL_FLOOR * sum(tg) / len(tg)
    ranked = [(c / g, t) for g, c, t in zip(tg, tc, grid) if g > max(floor, _EPS)]
    if not ranked:
        return SharpnessScore(ratio=ratio, worst=None)
    value, (x, y, w, h) = min(ranked)
    return SharpnessScore(ratio=ratio, worst=Tile(x, y, w, h, value))


def structure_score(golden: np.ndarray, candidate: np.ndarray, side: int,
                    ssim: tuple[float, np.ndarray] | None = None) -> StructureScore:
    """SSIM and its worst tile; ``ssim`` reuses ``metrics.ssim_with_map``'s result when given."""
    from quant_guard.judge.metrics import ssim_with_map

    value, local = ssim if ssim is not None else ssim_with_map(golden, candidate)
    grid = tiles(*golden.shape[:2], side)
    means = _tile_means(local, grid)
    i = min(range(len(grid)), key=means.__getitem__)
    return StructureScore(ssim=value, worst=Tile(*grid[i], means[i]))


def artifact_score(golden: np.ndarray, candidate: np.ndarray, lpips_map: np.ndarray | None = None) -> ArtifactScore:
    """The worst window of the spatial LPIPS map (computed here unless given)."""
    from quant_guard.judge.regions import box_size, perceptual_map, worst_regions

    score, kind = (lpips_map, "LPIPS") if lpips_map is not None else perceptual_map(golden, candidate)
    found = worst_regions(score, box_size(*score.shape), count=1)
    if not found:
        return ArtifactScore(kind=kind, worst=None)
    r = found[0]
    return ArtifactScore(kind=kind, worst=Tile(r.x, r.y, r.size, r.size, r.score))


def compute_scorecard(golden: np.ndarray, candidate: np.ndarray, *, prompt: str | None = None,
                      scorer: SemanticScorer | None = None, lpips_map: np.ndarray | None = None,
                      ssim: tuple[float, np.ndarray] | None = None, pair: ImagePair | None = None,
                      device: str | None = None, text: TextExpectation | None = None) -> Scorecard:
    """The scorecard of two uint8 HxWx3 images of equal shape. ``scorer`` (with ``prompt``) adds
    the meaning check, ``text`` the text legibility check; ``lpips_map``, ``ssim`` (value, map) and
    ``pair`` (the converted images) reuse what the gate's comparison computed
    (``metrics.compare_with_maps``): the scorecard then costs only its own measures. Without
    ``pair`` the images are converted on ``device``."""
    from quant_guard.judge.metrics import ImagePair, _check_pair
    from quant_guard.judge.regions import box_size

    _check_pair(golden, candidate)
    if scorer is not None and prompt is None:
        raise ValueError("a semantic scorer needs the prompt the images were rendered from")
    if pair is None or pair.golden is not golden or pair.candidate is not candidate:
        pair = ImagePair(golden, candidate, device)
    side = box_size(*golden.shape[:2])
    lab_g, lab_c = pair.lab
    meaning = None
    if scorer is not None:
        from quant_guard.judge.semantic import judge

        meaning = judge(scorer, golden, candidate, prompt or "")
    return Scorecard(
        colour=colour_score(lab_g, lab_c),
        sharpness=sharpness_score(lab_g[0], lab_c[0], side),
        structure=structure_score(golden, candidate, side, ssim if ssim is not None else pair.ssim()),
        artifacts=artifact_score(golden, candidate, lpips_map),
        meaning=meaning,
        text=_text_score(golden, candidate, text) if text is not None else None,
    )


def _text_score(golden: np.ndarray, candidate: np.ndarray, text: TextExpectation) -> TextScore:
    from quant_guard.judge.text import text_score

    return text_score(golden, candidate, text)
