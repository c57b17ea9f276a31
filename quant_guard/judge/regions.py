"""Where a candidate differs most, and the pictures of it that the HTML report shows.

The 1-3 worst regions are square windows with the highest mean of the spatial LPIPS map (the
"200% zoom" a reviewer does by hand, done where the perceptual difference is largest). Crops
of them are upscaled by pixel repetition (nearest neighbour: no smoothing that would hide
exactly the blockiness being looked for). numpy, PIL and torch are imported here, on use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

MAX_REGIONS = 3
MIN_RATIO = 0.5  # a further region must score at least this share of the worst one
DIFF_GAIN = 4  # the pixel-difference heatmap amplifies like the gate's diff.png
# A perceptually ordered dark-to-bright ramp (close to matplotlib's "magma"), as RGB anchors.
_RAMP = ((0, 0, 4), (80, 18, 123), (182, 54, 121), (251, 136, 97), (252, 253, 191))


@dataclass(frozen=True)
class Region:
    """A square window of the image, in image pixels, and its mean LPIPS."""

    x: int
    y: int
    size: int
    score: float


def box_size(height: int, width: int) -> int:
    """Side of the region windows: an eighth of the shorter side, 16 to 192 px."""
    return max(16, min(192, min(height, width) // 8, height, width))


def zoom_for(box: int) -> int:
    """Upscale factor of the crops, 2-4x, aiming at about 256 px on screen."""
    return max(2, min(4, 256 // box))


def worst_regions(score_map: np.ndarray, box: int, *, count: int = MAX_REGIONS,
                  min_ratio: float = MIN_RATIO) -> list[Region]:
    """Greedy non-overlapping windows of side ``box`` with the highest mean score."""
    import numpy as np

    height, width = score_map.shape
    box = min(box, height, width)
    means = window_means(score_map, box)
    regions: list[Region] = []
    for _ in range(count):
        y, x = np.unravel_index(int(np.argmax(means)), means.shape)
        score = float(means[y, x])
        if not np.isfinite(score) or score <= 1e-9 or (regions and score < min_ratio * regions[0].score):
            break
        regions.append(Region(int(x), int(y), box, score))
        # no later window may overlap this one
        means[max(0, y - box + 1):y + box, max(0, x - box + 1):x + box] = -np.inf
    return regions


def window_means(score_map: np.ndarray, box: int) -> np.ndarray:
    """The mean of every ``box`` x ``box`` window of the map (non-finite values as 0), the window
    with top-left (y, x) at [y, x]: float64, through an integral image. torch's cumulative sums
    (a copy of the map, never the caller's) take a third of numpy's time at 1024x1024."""
    import torch
    import torch.nn.functional as F

    values = torch.tensor(score_map, dtype=torch.float64).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    integral = F.pad(values.cumsum_(0).cumsum_(1), (1, 0, 1, 0))
    sums = integral[box:, box:] - integral[:-box, box:] - integral[box:, :-box] + integral[:-box, :-box]
    return sums.div_(box * box).numpy()


def colorize(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (HxW) onto the dark-to-bright ramp: uint8 HxWx3."""
    import numpy as np

    ramp = np.asarray(_RAMP, dtype=np.float64)
    stops = np.linspace(0.0, 1.0, len(ramp))
    v = np.clip(np.nan_to_num(values.astype(np.float64)), 0.0, 1.0)
    channels = [np.interp(v, stops, ramp[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscale by an integer factor (each pixel becomes a factor x factor block)."""
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def perceptual_map(golden: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, str]:
    """Spatial LPIPS map; the pixel difference where LPIPS cannot run (images under 31 px)."""
    import numpy as np

    from quant_guard.judge.metrics import lpips_spatial_map

    try:
        return lpips_spatial_map(golden, candidate), "LPIPS"
    except ValueError:
        diff = np.abs(golden.astype(np.float32) - candidate.astype(np.float32)).mean(axis=2) / 255.0
        return diff, "pixel difference"


def _load_rgb(path: Path) -> np.ndarray:
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _save(path: Path, image: np.ndarray) -> None:
    from quant_guard.store.atomic import atomic_write
    from quant_guard.store.golden import encode_png

    atomic_write(path, encode_png(image))


def case_artifacts(golden_png: Path, candidate_png: Path, folder: Path) -> dict[str, Any]:
    """Write heatmap.png, lpips.png and crop{i}-golden/-candidate.png into ``folder``; return
    their file names and the regions found."""
    import numpy as np

    golden, candidate = _load_rgb(golden_png), _load_rgb(candidate_png)
    if golden.shape != candidate.shape:
        raise ValueError(f"golden {golden.shape[1]}x{golden.shape[0]} and candidate "
                         f"{candidate.shape[1]}x{candidate.shape[0]} differ in size")
    diff = np.abs(golden.astype(np.int16) - candidate.astype(np.int16)).max(axis=2)
    _save(folder / "heatmap.png", colorize(np.clip(diff * DIFF_GAIN, 0, 255) / 255.0))
    score, kind = perceptual_map(golden, candidate)
    peak = float(score.max()) if score.size else 0.0
    _save(folder / "lpips.png", colorize(score / peak if peak > 0 else score))
    height, width = score.shape
    box = box_size(height, width)
    zoom = zoom_for(box)
    regions = []
    for i, r in enumerate(worst_regions(score, box), start=1):
        names = {}
        for which, image in (("golden", golden), ("candidate", candidate)):
            names[which] = f"crop{i}-{which}.png"
            _save(folder / names[which], upscale(image[r.y:r.y + r.size, r.x:r.x + r.size], zoom))
        regions.append({"index": i, "x": r.x, "y": r.y, "size": r.size, "score": r.score, "zoom": zoom, **names})
    return {"heatmap": "heatmap.png", "score_map": "lpips.png", "score_kind": kind, "score_peak": peak,
            "width": width, "height": height, "regions": regions}
