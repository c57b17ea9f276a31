"""The text legibility check on damaged signs: each series of ``quant_guard.tools.text_signs.SERIES``
(blur, letters merged, JPEG) from intact to unreadable, read by Tesseract
(``quant_guard.judge.text``). Prints the character error rate per step against the default limit
(``TEXT_CER_MAX``) and draws the images with their readings into a grid (docs/text_legibility.png):
the figure a person judges "still readable" on, and the basis of the limit.

Usage: python benchmarks/text_legibility.py [--out docs/text_legibility.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from quant_guard.config.thresholds import TEXT_CER_MAX
from quant_guard.judge.text import character_error_rate, read_text
from quant_guard.tools.text_signs import SERIES, damaged, font_path

CELL = (240, 150)  # each image fitted into this box, px
CAPTION = 46  # px below each image for the step, the reading and its CER
UNITS = {"blur": "σ {:g} px", "merge": "squeeze {:g} px", "jpeg": "quality {:g}"}


def measure() -> dict[str, list[tuple[float, np.ndarray, str, float]]]:
    """Per series: (step, image, reading, CER) for every step."""
    out: dict[str, list[tuple[float, np.ndarray, str, float]]] = {}
    for kind, steps in SERIES.items():
        for step in steps:
            image, expected = damaged(kind, step)
            reading = read_text(image).text
            out.setdefault(kind, []).append((step, image, reading, character_error_rate(expected, reading)))
    return out


def grid(results: dict[str, list[tuple[float, np.ndarray, str, float]]]) -> Image.Image:
    columns = max(len(v) for v in results.values())
    width, height = CELL[0] * columns, (CELL[1] + CAPTION) * len(results)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    small = ImageFont.truetype(str(font_path()).replace("-Bold", ""), 11)
    bold = ImageFont.truetype(str(font_path()), 12)
    for row, (kind, steps) in enumerate(results.items()):
        for col, (step, image, reading, cer) in enumerate(steps):
            picture = Image.fromarray(image)
            picture.thumbnail(CELL)
            x, y = col * CELL[0], row * (CELL[1] + CAPTION)
            sheet.paste(picture, (x + (CELL[0] - picture.width) // 2, y))
            verdict = "pass" if cer <= TEXT_CER_MAX else "FAIL"
            colour = (26, 127, 55) if cer <= TEXT_CER_MAX else (207, 34, 46)
            draw.text((x + 4, y + CELL[1] + 2), f"{kind}: {UNITS[kind].format(step)}", font=bold, fill=(0, 0, 0))
            draw.text((x + 4, y + CELL[1] + 16), f"CER {cer:.2f} {verdict} (max {TEXT_CER_MAX})", font=bold, fill=colour)
            shown = reading if len(reading) <= 28 else reading[:27] + "…"
            draw.text((x + 4, y + CELL[1] + 31), f"read: “{shown}”" if reading else "read: nothing", font=small,
                      fill=(80, 80, 80))
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/text_legibility.png"))
    args = parser.parse_args()
    results = measure()
    for kind, steps in results.items():
        print(f"{kind}:")
        for step, _, reading, cer in steps:
            print(f"  {UNITS[kind].format(step):<16} CER {cer:.2f} {'pass' if cer <= TEXT_CER_MAX else 'FAIL'}  "
                  f"read {reading!r}")
    # a 256-colour palette: flat colours and text stay sharp, the file a fraction of the size
    grid(results).quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(args.out,
                                                                                                    optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
