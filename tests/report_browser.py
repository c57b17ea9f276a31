"""A quant_guard report in headless Chromium, driven with Playwright: what the report's browser
tests and the README screenshot need.

Playwright drives the system's Chromium (``ci/install_browser.sh`` installs Debian's), never a
browser of its own download: ``$QG_CHROMIUM`` when set, else the first of CANDIDATES on PATH.

    python tests/report_browser.py qg-report --first-case --screenshot docs/report.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

BROWSER_ENV = "QG_CHROMIUM"  # explicit path of the browser binary
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
LAUNCH_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--disable-extensions", "--hide-scrollbars", "--mute-audio")
VIEWPORT = {"width": 1280, "height": 900}


def find_browser() -> str | None:
    """Path of a Chromium binary: ``$QG_CHROMIUM``, else the first of CANDIDATES on PATH."""
    explicit = os.environ.get(BROWSER_ENV)
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_requirement() -> str | None:
    """Why the browser tests cannot run here (no Playwright, no Chromium), or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: pip install -e '.[test]'"
    if find_browser() is None:
        return f"no Chromium found: run ci/install_browser.sh (or set ${BROWSER_ENV})"
    return None


def require_browser() -> None:
    """Skip the calling test when Playwright or Chromium is missing, but fail it in CI (``CI`` or
    ``QG_REQUIRE_BROWSER`` set): a report nobody has opened is not tested."""
    import pytest

    missing = missing_requirement()
    if missing is None:
        return
    if os.environ.get("CI") or os.environ.get("QG_REQUIRE_BROWSER"):
        pytest.fail(f"{missing}; in CI the browser test must run, not skip", pytrace=False)
    pytest.skip(missing)


@contextmanager
def chromium(binary: str | None = None) -> Iterator[Browser]:
    """The system Chromium under Playwright, closed on exit."""
    from playwright.sync_api import sync_playwright

    binary = binary or find_browser()
    if binary is None:
        raise RuntimeError(f"no Chromium found (set ${BROWSER_ENV} or run ci/install_browser.sh)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, args=list(LAUNCH_ARGS))
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class ReportPage:
    """One open report and everything that went wrong while it was open."""

    page: Page
    problems: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, failed loads
    requests: list[str] = field(default_factory=list)  # every URL the page asked for

    @classmethod
    def open(cls, browser: Browser, index: Path, *, width: int = VIEWPORT["width"],
             height: int = VIEWPORT["height"]) -> ReportPage:
        """A fresh tab on ``index``, returned once the page and all its images have loaded."""
        report = cls(browser.new_page(viewport={"width": width, "height": height}))
        page = report.page
        page.on("console", report._console)
        page.on("pageerror", lambda e: report.problems.append(f"exception: {e}"))
        page.on("requestfailed", lambda r: report.problems.append(f"load failed: {r.failure} ({r.url})"))
        page.on("request", lambda r: report.requests.append(r.url))
        page.goto(index.resolve().as_uri(), wait_until="load")
        return report

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "assert"):
            self.problems.append(f"console.{message.type}: {message.text}")

    def foreign_requests(self) -> list[str]:
        """Requests that leave the report folder (a CDN, a web font): an artifact must open offline."""
        return [u for u in self.requests if not u.startswith(("file:", "data:", "about:"))]

    def images(self, selector: str = "img") -> list[dict[str, Any]]:
        """src and naturalWidth (0: did not load) of the images matching ``selector``."""
        return self.page.eval_on_selector_all(
            selector, "els => els.map(i => ({src: i.getAttribute('src'), naturalWidth: i.naturalWidth}))")

    def broken_images(self, selector: str = "img") -> list[str]:
        return [i["src"] for i in self.images(selector) if not i["naturalWidth"]]

    def overflow(self) -> dict[str, Any]:
        """Page width against the viewport, with the elements that stick out on the right."""
        return self.page.evaluate(_OVERFLOW_JS)  # type: ignore[no-any-return]

    def comparison(self, n: int) -> dict[str, Any]:
        """Compare widget number ``n`` (scrolled into view): its slider value, what it shows, and
        which image is on top at 5%, 50% and 95% of its width."""
        return self.page.evaluate(_WIDGET_JS, n)  # type: ignore[no-any-return]


# The outermost elements that stick out on the right (their parent does not).
_OVERFLOW_JS = """() => {
  const width = window.innerWidth, out = e => e.getBoundingClientRect().right > width + 0.5;
  const wide = [...document.body.querySelectorAll('*')].filter(e => out(e) && !out(e.parentElement))
      .map(e => `${e.tagName.toLowerCase()}.${[...e.classList].join('.')} right=${Math.round(e.getBoundingClientRect().right)}`);
  return {scrollWidth: document.scrollingElement.scrollWidth, innerWidth: width, wide: wide.slice(0, 8)};
}"""

# Geometry of compare widget number N after scrolling it into view, and what is on top where.
_WIDGET_JS = """(n) => {
  const fig = document.querySelectorAll('[data-qg-compare]')[n];
  fig.scrollIntoView({block: 'center'});
  const box = e => { const r = e.getBoundingClientRect(); return {x: r.left, y: r.top, w: r.width, h: r.height}; };
  const stack = box(fig.querySelector('.stack'));
  const onTop = f => {
    const e = document.elementFromPoint(stack.x + stack.w * f, stack.y + stack.h / 2);
    if (!e) return 'nothing';
    return e.classList.contains('gold') ? 'golden' : (e.classList.contains('cand') ? 'candidate' : 'other');
  };
  const range = fig.querySelector('input[type=range]');
  return {range: box(range), value: Number(range.value), showing: fig.getAttribute('data-showing'),
          output: fig.querySelector('[data-qg-showing]').textContent,
          at: {left: onTop(0.05), middle: onTop(0.5), right: onTop(0.95)}};
}"""


# ---- the README screenshot -------------------------------------------------------------------

def screenshot(browser: Browser, index: Path, target: Path, *, width: int, first_case: bool) -> None:
    """A full-page screenshot, cut after the first case when asked, stored with a 256-colour
    palette: a page of flat colours stays sharp and a few hundred KB."""
    from PIL import Image

    report = ReportPage.open(browser, index, width=width)
    bottom = report.page.evaluate("(() => { const a = document.querySelector('article.case'); "
                                  "return a ? a.getBoundingClientRect().bottom + window.scrollY + 12 : 0; })()")
    report.page.screenshot(path=str(target), full_page=True)
    with Image.open(target) as img:
        image = img.convert("RGB")
    if first_case and bottom:
        image = image.crop((0, 0, image.width, min(int(bottom), image.height)))
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(target, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/report_browser.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report_dir", type=Path, help="a quant_guard report directory (with index.html)")
    parser.add_argument("--screenshot", type=Path, metavar="PNG", required=True, help="where to save it")
    parser.add_argument("--width", type=int, default=VIEWPORT["width"], help="viewport width (px)")
    parser.add_argument("--first-case", action="store_true",
                        help="end after the first case (the summary and the worst case)")
    args = parser.parse_args(argv)
    with chromium() as browser:
        screenshot(browser, args.report_dir / "index.html", args.screenshot, width=args.width,
                   first_case=args.first_case)
    print(f"screenshot: {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
