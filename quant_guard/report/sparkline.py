"""Inline SVG sparklines: one metric of one test over its last runs, with its threshold as a
dashed horizontal line and each change of environment as a vertical line. Plain SVG markup with
inline styles (no script, no stylesheet, no network), so it shows in the report, in a mail or in
an unzipped CI artifact alike.

Geometry (``Scale``): x spreads the runs evenly between the paddings, oldest left; y runs from the
largest value (top) to the smallest (bottom) over the range of the finite values *and* the
threshold, so the distance between line and threshold is what the eye reads. Values that are
missing or not finite (PSNR of identical images is infinite) are left out of the line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT, PAD = 160, 36, 3
LINE, THRESHOLD, ENV_CHANGE, LAST = "#1565c0", "#c62828", "#ef6c00", "#0d47a1"


@dataclass(frozen=True)
class Scale:
    low: float
    high: float
    count: int
    width: int = WIDTH
    height: int = HEIGHT
    pad: int = PAD

    def x(self, index: int) -> float:
        if self.count <= 1:
            return self.width / 2
        return self.pad + index * (self.width - 2 * self.pad) / (self.count - 1)

    def y(self, value: float) -> float:
        return self.pad + (self.high - value) / (self.high - self.low) * (self.height - 2 * self.pad)


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def scale_for(values: Sequence[float | None], threshold: float | None = None, *, width: int = WIDTH,
              height: int = HEIGHT) -> Scale:
    """The scale over the finite values and the threshold; a flat range is widened by 5% (or 1)."""
    seen = [v for v in (*values, threshold) if finite(v)]
    low, high = (min(seen), max(seen)) if seen else (0.0, 1.0)  # type: ignore[type-var]
    if high == low:
        spread = abs(high) * 0.05 or 1.0
        low, high = low - spread, high + spread
    return Scale(float(low), float(high), len(values), width, height)  # type: ignore[arg-type]


def _n(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def sparkline(values: Sequence[float | None], *, threshold: float | None = None, env_changes: Sequence[int] = (),
              labels: Sequence[str] = (), title: str = "", width: int = WIDTH, height: int = HEIGHT) -> str:
    """SVG markup of ``values`` (oldest first). ``env_changes``: indexes of runs whose environment
    differs from the run before; ``labels``: per run, the hover text of its point (escaped here)."""
    scale = scale_for(values, threshold, width=width, height=height)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="sparkline" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
             f"<title>{escape(title)}</title>"]
    if finite(threshold):
        y = _n(scale.y(threshold))  # type: ignore[arg-type]
        parts.append(f'<line class="threshold" x1="0" y1="{y}" x2="{width}" y2="{y}" stroke="{THRESHOLD}" '
                     f'stroke-width="1" stroke-dasharray="3 2"><title>threshold {threshold:.6g}</title></line>')
    for index in env_changes:
        x = _n(scale.x(index))
        label = labels[index] if index < len(labels) else f"run {index + 1}"
        parts.append(f'<line class="env-change" x1="{x}" y1="0" x2="{x}" y2="{height}" stroke="{ENV_CHANGE}" '
                     f'stroke-width="1"><title>environment changed: {escape(label)}</title></line>')
    points = [(scale.x(i), scale.y(v)) for i, v in enumerate(values) if finite(v)]  # type: ignore[arg-type]
    if points:
        parts.append(f'<polyline class="line" fill="none" stroke="{LINE}" stroke-width="1.5" '
                     f'points="{" ".join(f"{_n(x)},{_n(y)}" for x, y in points)}"/>')
    for i, v in enumerate(values):
        if finite(v):
            last = i == len(values) - 1
            label = labels[i] if i < len(labels) else f"run {i + 1}"
            parts.append(f'<circle class="{"point last" if last else "point"}" cx="{_n(scale.x(i))}" '
                         f'cy="{_n(scale.y(v))}" r="{2.5 if last else 1.5}" fill="{LAST if last else LINE}">'  # type: ignore[arg-type]
                         f"<title>{escape(label)}: {v:.6g}</title></circle>")
    parts.append("</svg>")
    return "".join(parts)
