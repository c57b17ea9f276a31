"""``python -m quant_guard.report DIR``: re-render DIR/index.html from DIR/results.json, and
optionally check it in headless Chromium (``--check``) or save a screenshot (``--screenshot``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quant_guard.report", description=__doc__)
    parser.add_argument("report_dir", type=Path, help="a quant_guard report directory (with results.json)")
    parser.add_argument("--no-render", action="store_true", help="use the index.html that is there")
    parser.add_argument("--check", action="store_true",
                        help="open the report in headless Chromium: images load, no console errors, "
                             "the golden/candidate comparison responds")
    parser.add_argument("--screenshot", type=Path, metavar="PNG", help="save a full-page screenshot")
    parser.add_argument("--width", type=int, default=1280, help="viewport width of the screenshot (px)")
    parser.add_argument("--first-case", action="store_true",
                        help="end the screenshot after the first case (the summary and the worst case)")
    args = parser.parse_args(argv)

    from quant_guard.report.html import INDEX_NAME, write_report

    index = args.report_dir / INDEX_NAME if args.no_render else write_report(args.report_dir)
    print(f"report: {index}")
    if not (args.check or args.screenshot):
        return 0
    from quant_guard.report.browser import Browser, check_report

    with Browser.launch() as browser:
        page = browser.open(index, width=args.width)
        status = 0
        if args.check:
            result = check_report(page)
            problems = [*(f"image does not load: {src}" for src in result.broken_images), *result.problems]
            for line in problems:
                print(f"  {line}")
            print(f"check: {len(result.images)} images, {len(result.widgets)} comparisons, {len(problems)} problems")
            status = 1 if problems else 0
        if args.screenshot:
            page = browser.open(index, width=args.width)  # fresh: the check has moved the sliders
            page.screenshot(args.screenshot, width=args.width)
            bottom = page.evaluate("(() => { const a = document.querySelector('article.case'); "
                                   "return a ? a.getBoundingClientRect().bottom + window.scrollY + 12 : 0; })()")
            _shrink(args.screenshot, int(bottom) if args.first_case else 0)
            print(f"screenshot: {args.screenshot}")
    return status


def _shrink(path: Path, height: int) -> None:
    """Crop to ``height`` (0: keep) and store with a 256-colour palette: a page of flat colours
    stays sharp and a few hundred KB."""
    from PIL import Image

    with Image.open(path) as img:
        image = img.convert("RGB")
    if height:
        image = image.crop((0, 0, image.width, min(height, image.height)))
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


if __name__ == "__main__":
    sys.exit(main())
