"""Images with real rendered text, and the damage that makes text illegible: what the text
legibility check (``quant_guard.judge.text``) is tested and calibrated on.

A sign is drawn with Pillow in a DejaVu font from the system's packages (Debian:
``fonts-dejavu-core``): neon-coloured capitals on a dark panel over a busy background, as in the
source article's street. The damage, each in steps of increasing strength:

- blur: a Gaussian of ``sigma`` px (``quant_guard.tools.degrade.soften_image``);
- merge: the letters drawn closer (``squeeze`` px less advance each) and thickened (a grey
  dilation of ``grow`` px): letters stuck together, the article's float8 failure;
- JPEG: the image saved at a falling quality.

Used by tests/judge/test_text.py, the pytester test of the gate and benchmarks/text_legibility.py.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
FONT_FILE = "DejaVuSans-Bold.ttf"
PANEL = (24, 16, 48)
INK = (255, 70, 200)  # neon pink


def font_path() -> Path:
    """The DejaVu Sans Bold file; ``FileNotFoundError`` naming the package when it is missing."""
    for folder in FONT_DIRS:
        if (folder / FONT_FILE).is_file():
            return folder / FONT_FILE
    raise FileNotFoundError(f"{FONT_FILE} not found in {', '.join(map(str, FONT_DIRS))}: install the system "
                            "package fonts-dejavu-core (Debian/Ubuntu: apt-get install fonts-dejavu-core)")


def sign_image(lines: tuple[tuple[str, int], ...] = (("NEON CITY", 36),), *, size: tuple[int, int] = (320, 160),
               squeeze: int = 0, at: tuple[int, int] | None = None, seed: int = 0) -> np.ndarray:
    """A uint8 HxWx3 image (``size`` = width, height) with ``lines`` ((text, font size in px), top
    to bottom) drawn on a dark panel over a noisy gradient (``paint_sign``)."""
    import numpy as np

    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack([40 + 80 * xx / width, 60 + 60 * yy / height, 120 + 0 * xx], axis=-1)
    background += rng.normal(0, 12, background.shape)
    return paint_sign(np.clip(background, 0, 255).astype(np.uint8), lines, squeeze=squeeze, at=at)


def paint_sign(image: np.ndarray, lines: tuple[tuple[str, int], ...], *, squeeze: int = 0,
               at: tuple[int, int] | None = None) -> np.ndarray:
    """``image`` (uint8 HxWx3) with a sign painted on it: ``lines`` ((text, font size in px), top to
    bottom) in neon ink on a dark panel, each letter's advance shortened by ``squeeze`` px. ``at``:
    the panel's top left (default: centred)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    fonts = [ImageFont.truetype(str(font_path()), px) for _, px in lines]
    widths = [_advance(draw, font, text, squeeze) for (text, _), font in zip(lines, fonts)]
    pad = max(px for _, px in lines) // 4
    panel_w, panel_h = max(widths) + 2 * pad, sum(round(px * 1.25) for _, px in lines) + pad
    left, top = at if at is not None else ((picture.width - panel_w) // 2, (picture.height - panel_h) // 2)
    draw.rectangle((left, top, left + panel_w, top + panel_h), fill=PANEL)
    y = top + pad // 2
    for (text, px), font, line_w in zip(lines, fonts, widths):
        x = left + (panel_w - line_w) / 2
        for ch in text:
            draw.text((x, y), ch, font=font, fill=INK)
            x += draw.textlength(ch, font=font) - squeeze
        y += round(px * 1.25)
    return np.asarray(picture).copy()


def _advance(draw: object, font: object, line: str, squeeze: int) -> int:
    return round(sum(draw.textlength(ch, font=font) for ch in line) - squeeze * max(len(line) - 1, 0))  # type: ignore[attr-defined]


def dilate_image(image: np.ndarray, grow: int) -> np.ndarray:
    """Bright strokes thickened by ``grow`` px (a grey dilation of each channel)."""
    from scipy.ndimage import grey_dilation

    if grow <= 0:
        return image
    side = 2 * grow + 1
    return grey_dilation(image, size=(side, side, 1))


def jpeg_image(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` after a round trip through JPEG at ``quality`` (1-95)."""
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB")).copy()


# The damage series of the tests and of docs/text_legibility.png (benchmarks/text_legibility.py), each
# from intact to unreadable for a person: the street sign has three sizes of print, as a street shows
# them (damage takes the small print first); JPEG leaves it legible at any quality, so JPEG damages
# a smaller sign.
STREET_SIGN = (("NEON CITY", 40), ("OPEN ALL NIGHT", 26), ("NOODLES RAMEN SAKE", 18))
STREET_SIZE = (360, 200)
SMALL_SIGN = (("NEON CITY", 20), ("OPEN ALL NIGHT", 14))
SMALL_SIZE = (200, 200)
SERIES: dict[str, tuple[float, ...]] = {
    "blur": (0.0, 1.0, 2.0, 2.5, 3.0, 3.5, 4.0),  # Gaussian sigma, px
    "merge": (0, 2, 3, 4, 5, 6),  # px less advance per letter, thickened by a third of that
    "jpeg": (90, 20, 10, 5, 3, 1),  # quality
}


def damaged(kind: str, step: float) -> tuple[np.ndarray, tuple[str, ...]]:
    """The sign of series ``kind`` damaged at ``step``, and the text it shows intact."""
    from quant_guard.tools.degrade import soften_image

    if kind == "jpeg":
        return jpeg_image(sign_image(SMALL_SIGN, size=SMALL_SIZE), int(step)), tuple(t for t, _ in SMALL_SIGN)
    if kind == "merge":
        image = dilate_image(sign_image(STREET_SIGN, size=STREET_SIZE, squeeze=int(step)), int(step) // 3)
    elif kind == "blur":
        image = sign_image(STREET_SIGN, size=STREET_SIZE)
        image = soften_image(image, step) if step else image
    else:
        raise ValueError(f"no damage series {kind!r}; known: {', '.join(SERIES)}")
    return image, tuple(t for t, _ in STREET_SIGN)
