"""Text legibility: read the words an image shows and score how much of the expected text survives.

The source article's sharpest finding was text: the bf16 render's "NEON CITY" billboard came out
of float8 with its letters stuck together, while a mean LPIPS over the image barely moved. A case
lists the text its image must show (``expect_text``, optionally a region); golden and candidate
are read with an OCR engine and the candidate's reading is scored as a character error rate
(CER): the edit distance (insertions, deletions, substitutions) to the expected words, divided
by their length.

- Each expected string is looked for in the reading where it matches best (the rest of the
  reading is free): a real scene has other signs, and reading them is not an error. Comparison
  ignores case and collapses whitespace: legibility, not typography (OCR confuses the case of
  small capitals).
- The candidate's reading is also scored against the golden's (plain edit distance over the
  golden's reading): how much of what the golden showed the candidate kept.
- Small images are upscaled before reading (``MIN_SIDE``): Tesseract wants glyphs a few dozen
  pixels tall, and the tiny checkpoint's renders are 64x64.

The engine is Tesseract (Debian's ``tesseract-ocr``, with its English model), called through
pytesseract. pytesseract is a pure-Python wheel that runs the ``tesseract`` program once per
image: nothing to compile, any Tesseract the system packages provide works, and the cost (a
process start and a model load per call, two calls an image: 1-4 s an image on this project's
busy 2-core machine) is small beside a 1024² render; the golden's reading is cached. tesserocr binds Tesseract's C++ API and saves that start-up, but it
is built from source against ``libtesseract-dev`` with a C++ compiler (or comes as a wheel with
its own Tesseract), which a fresh CI machine or a GPU runner would have to provide. Both run
offline on a CPU.

numpy, Pillow and pytesseract are imported inside the functions: the plugin imports this module.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import re
import shutil
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

INSTALL_HINT = ("install the Python binding with pip install 'quant_guard[text]' and the Tesseract OCR engine "
                "from the system's packages (Debian/Ubuntu: apt-get install tesseract-ocr; bash ci/install.sh "
                "does both)")
# An image (or region) whose shorter side is below MIN_SIDE px is upscaled (Lanczos) by an integer factor
# up to MAX_UPSCALE. Tesseract reads best around one scale: a 256x256 render's sign (28 px capitals) read
# "NEON C ... |GHT" as it is and in full at x2; a 360x200 sign lost a word at x3 that it kept at x2.
MIN_SIDE = 400
MAX_UPSCALE = 8
# Tesseract's page segmentation modes tried on the greyscale image; the reading with the most
# confidently read characters (``_confident_chars``) is kept. Measured on neon signs over a noisy
# background (tests/judge/test_text.py): automatic segmentation (3) read a one-line sign that
# "sparse text" (11) lost after a 1 px blur, while 11 kept reading a three-line sign word by word
# where 3 found no text block at all after a 2 px blur (a person still reads both).
TESSERACT_MODES = ("--psm 3", "--psm 11")
MIN_CONFIDENCE = 0.0  # Tesseract's word confidence (0-100, -1 for a non-word); words below are dropped


class OcrUnavailable(RuntimeError):
    """The OCR engine or its binding is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Word:
    """One word read, its box in the image's pixels and Tesseract's confidence (0-100)."""

    text: str
    x: int
    y: int
    w: int
    h: int
    confidence: float


@dataclass(frozen=True)
class Reading:
    words: tuple[Word, ...]

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)


@dataclass(frozen=True)
class TextExpectation:
    """What a case's image must show: the strings, and the region (x, y, w, h in pixels) to read."""

    words: tuple[str, ...]
    region: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class TextScore:
    expected: tuple[str, ...]
    region: tuple[int, int, int, int] | None
    golden: Reading
    candidate: Reading
    cer: float  # the candidate's reading against the expected words; 0 = all there, 1 = none
    golden_cer: float  # the golden's reading against the expected words
    cer_vs_golden: float | None  # the candidate's reading against the golden's; None: the golden shows no text

    def describe(self, limit: str = "") -> str:
        """E.g. 'expected "NEON CITY": golden reads "NEON CITY" (CER 0.00), candidate reads
        "NEDN CTY" (CER 0.22, limit 0.3)'."""
        expected = ", ".join(f'"{w}"' for w in self.expected)
        where = f" in region {self.region}" if self.region is not None else ""
        said = f"CER {self.cer:.2f}" + (f", {limit}" if limit else "")
        text = (f"expected {expected}{where}: golden reads {_quoted(self.golden)} (CER {self.golden_cer:.2f}), "
                f"candidate reads {_quoted(self.candidate)} ({said})")
        if self.cer_vs_golden is not None:
            text += f"; candidate vs golden's reading CER {self.cer_vs_golden:.2f}"
        return text


def _quoted(reading: Reading) -> str:
    return f'"{reading.text}"' if reading.words else "nothing"


# ---- the engine ------------------------------------------------------------------------------

def ocr_problem() -> str | None:
    """Why text cannot be read here (binding or engine missing), or None when it can."""
    try:
        import pytesseract
    except ImportError:
        return f"the OCR binding pytesseract is not installed: {INSTALL_HINT}"
    command = pytesseract.pytesseract.tesseract_cmd
    if shutil.which(command) is None:
        return f"the Tesseract OCR engine ({command!r}) is not on PATH: {INSTALL_HINT}"
    return None


@functools.cache
def engine_version() -> str:
    """Tesseract's version, e.g. '5.3.0' (doctor; raises ``OcrUnavailable`` when missing)."""
    problem = ocr_problem()
    if problem:
        raise OcrUnavailable(problem)
    import pytesseract

    return str(pytesseract.get_tesseract_version())


def upscale_factor(height: int, width: int) -> int:
    """The integer factor that brings the shorter side to ``MIN_SIDE`` (at most ``MAX_UPSCALE``)."""
    short = max(1, min(height, width))
    return max(1, min(MAX_UPSCALE, math.ceil(MIN_SIDE / short)))


def crop(image: np.ndarray, region: tuple[int, int, int, int] | None) -> np.ndarray:
    """The region (x, y, w, h) of ``image``; the whole image for None. A region that does not lie
    inside the image is a ``ValueError`` naming both."""
    if region is None:
        return image
    x, y, w, h = region
    height, width = image.shape[:2]
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise ValueError(f"text region {list(region)} (x, y, w, h) does not lie inside the {width}x{height} image")
    return image[y:y + h, x:x + w]


def read_text(image: np.ndarray, region: tuple[int, int, int, int] | None = None) -> Reading:
    """The words a uint8 HxWx3 image shows (inside ``region`` when given), in reading order, with
    their boxes in the image's own pixels. The last ``CACHE_SIZE`` readings are kept: a golden is
    read once for all its candidates."""
    key = (hashlib.sha256(image.tobytes()).hexdigest(), image.shape, region)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    reading = _read(image, region)
    _CACHE[key] = reading
    if len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return reading


CACHE_SIZE = 32
_CACHE: OrderedDict[tuple[object, ...], Reading] = OrderedDict()


def _read(image: np.ndarray, region: tuple[int, int, int, int] | None) -> Reading:
    problem = ocr_problem()
    if problem:
        raise OcrUnavailable(problem)
    import pytesseract
    from PIL import Image

    part = crop(image, region)
    factor = upscale_factor(*part.shape[:2])
    picture = Image.fromarray(part).convert("L")
    if factor > 1:
        picture = picture.resize((picture.width * factor, picture.height * factor), Image.Resampling.LANCZOS)
    ox, oy = (region[0], region[1]) if region is not None else (0, 0)
    with _one_ocr_thread():
        readings = [_words(pytesseract.image_to_data(picture, config=mode, output_type=pytesseract.Output.DICT),
                           factor, ox, oy) for mode in TESSERACT_MODES]
    return max(readings, key=_confident_chars)  # the first of equals: mode 3 on a tie


@contextlib.contextmanager
def _one_ocr_thread() -> Iterator[None]:
    """Tesseract with one OpenMP thread (``OMP_THREAD_LIMIT=1``, Tesseract's advice when several
    run at once): its threads only slow it down on a busy CPU (a sign read in 3.8 s instead of 5.7
    on this project's loaded 2-core machine). pytesseract hands ``os.environ`` to the program, so
    the variable is set for the call and restored after; a user's own setting wins."""
    if "OMP_THREAD_LIMIT" in os.environ:
        yield
        return
    os.environ["OMP_THREAD_LIMIT"] = "1"
    try:
        yield
    finally:
        os.environ.pop("OMP_THREAD_LIMIT", None)


def _words(data: dict[str, list[Any]], factor: int, ox: int, oy: int) -> Reading:
    """Tesseract's word table as ``Word``s in the original image's pixels."""
    words = []
    for i, text in enumerate(data["text"]):
        text = text.strip()
        confidence = float(data["conf"][i])
        if not text or confidence < MIN_CONFIDENCE:
            continue
        words.append(Word(text, ox + data["left"][i] // factor, oy + data["top"][i] // factor,
                          max(1, round(data["width"][i] / factor)), max(1, round(data["height"][i] / factor)),
                          confidence))
    return Reading(tuple(words))


def _confident_chars(reading: Reading) -> float:
    """Characters read, each weighted by its word's confidence (0-1)."""
    return sum(len(w.text) * w.confidence / 100 for w in reading.words)


# ---- scoring ---------------------------------------------------------------------------------

def normalise(text: str) -> str:
    """Case folded, whitespace collapsed to single spaces, trimmed."""
    return re.sub(r"\s+", " ", text).strip().casefold()


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between ``a`` and ``b`` (unit costs)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def best_match_errors(expected: str, read: str) -> int:
    """The fewest edits that turn ``expected`` into some substring of ``read`` (approximate
    substring matching: the text around the match costs nothing)."""
    previous = [0] * (len(read) + 1)  # the match may start anywhere in ``read``
    for i, ce in enumerate(expected, 1):
        current = [i]
        for j, cr in enumerate(read, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ce != cr)))
        previous = current
    return min(previous)  # ... and end anywhere


def character_error_rate(expected: Sequence[str], read: str) -> float:
    """The CER of a reading against the expected strings: each string's edits at its best match in
    the reading, summed, over their total length (0 = all present, 1 = nothing of them read)."""
    wanted = [normalise(w) for w in expected if normalise(w)]
    if not wanted:
        raise ValueError("no expected text to score against")
    text = normalise(read)
    return sum(best_match_errors(w, text) for w in wanted) / sum(len(w) for w in wanted)


def reading_error_rate(reference: str, read: str) -> float | None:
    """The CER of ``read`` against a whole ``reference`` reading; None when the reference is empty."""
    ref = normalise(reference)
    return edit_distance(ref, normalise(read)) / len(ref) if ref else None


def text_score(golden: np.ndarray, candidate: np.ndarray, expectation: TextExpectation) -> TextScore:
    """Read golden and candidate (inside the expectation's region) and score the candidate."""
    read_g = read_text(golden, expectation.region)
    read_c = read_text(candidate, expectation.region)
    return TextScore(expected=expectation.words, region=expectation.region, golden=read_g, candidate=read_c,
                     cer=character_error_rate(expectation.words, read_c.text),
                     golden_cer=character_error_rate(expectation.words, read_g.text),
                     cer_vs_golden=reading_error_rate(read_g.text, read_c.text))
