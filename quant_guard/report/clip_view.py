"""A video case on its report page: the contact sheet (golden, candidate and difference rows, a
column per frame), a player that steps the three rows through the frames together, and the
per-frame LPIPS curve with the worst frame marked.

The player shows windows onto the one sheet image (CSS background position), so golden,
candidate and difference cannot fall out of step: they are the same picture, one frame index.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

SHEET_GAP = 2  # px between the sheet's frames and rows
SHEET_ROWS = ("golden (bf16)", "candidate", "difference ×4")
CURVE_WIDTH, CURVE_HEIGHT, CURVE_PAD = 260, 80, 6
PLAYER_WIDTH = 192  # px


def contact_sheet(*rows: np.ndarray) -> np.ndarray:
    """Clips of equal shape (T x H x W x 3) as one image: a row per clip, a column per frame."""
    import numpy as np

    frames, height, width = rows[0].shape[:3]
    step_x, step_y = width + SHEET_GAP, height + SHEET_GAP
    sheet = np.full((len(rows) * step_y - SHEET_GAP, frames * step_x - SHEET_GAP, 3), 255, dtype=np.uint8)
    for r, clip in enumerate(rows):
        for t, frame in enumerate(clip):
            sheet[r * step_y:r * step_y + height, t * step_x:t * step_x + width] = frame
    return sheet


@dataclass(frozen=True)
class ClipWindow:
    label: str
    y: int  # the row's offset in the displayed sheet, px


@dataclass(frozen=True)
class ClipView:
    frames: int
    fps: int
    worst_frame: int  # 0-based
    sheet: str  # URL of the contact sheet
    width: int  # one displayed frame, px
    height: int
    step_x: int  # from one displayed frame to the next in the sheet, px
    sheet_width: int  # the displayed sheet, px
    sheet_height: int
    windows: tuple[ClipWindow, ...]
    curve_points: str  # SVG polyline of per-frame LPIPS
    curve_x: tuple[float, ...]  # each frame's x on the curve
    worst_xy: tuple[float, float]
    lpips: tuple[str, ...]  # per frame, formatted


def clip_view(record: Mapping[str, Any], images: Mapping[str, str], width: int, height: int) -> ClipView | None:
    """The clip section of a case whose record has a sheet and per-frame numbers; None otherwise.
    Small frames are shown enlarged (pixelated), to about ``PLAYER_WIDTH``."""
    temporal = (record.get("scorecard") or {}).get("temporal") or {}
    lpips = [float(v) if v is not None else math.nan for v in temporal.get("lpips") or ()]
    frames = len(lpips)
    if "sheet" not in images or frames < 2:
        return None
    scale = max(1, PLAYER_WIDTH // max(width, 1))
    gap = SHEET_GAP * scale
    step_x, step_y = (width + SHEET_GAP) * scale, (height + SHEET_GAP) * scale
    worst = int(temporal.get("worst_frame") or 0)
    xs, points = _curve(lpips)
    return ClipView(
        frames=frames, fps=int((record.get("render") or {}).get("fps") or 8), worst_frame=worst,
        sheet=images["sheet"], width=width * scale, height=height * scale, step_x=step_x,
        sheet_width=frames * step_x - gap, sheet_height=len(SHEET_ROWS) * step_y - gap,
        windows=tuple(ClipWindow(label, r * step_y) for r, label in enumerate(SHEET_ROWS)),
        curve_points=" ".join(f"{x:.1f},{y:.1f}" for x, y in points), curve_x=tuple(xs),
        worst_xy=points[worst] if worst < frames else points[0],
        lpips=tuple(f"{v:.4f}" for v in lpips))


def _curve(values: Sequence[float]) -> tuple[list[float], list[tuple[float, float]]]:
    """Each frame's x, and (x, y) of its value on a 0..max scale (higher is worse, drawn higher)."""
    finite = [v for v in values if math.isfinite(v)]
    top = max(finite, default=0.0) or 1.0
    span_x = (CURVE_WIDTH - 2 * CURVE_PAD) / max(len(values) - 1, 1)
    xs = [CURVE_PAD + i * span_x for i in range(len(values))]
    ys = [CURVE_HEIGHT - CURVE_PAD - (v if math.isfinite(v) else 0.0) / top * (CURVE_HEIGHT - 2 * CURVE_PAD)
          for v in values]
    return xs, list(zip(xs, ys))
