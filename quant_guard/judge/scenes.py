"""The procedural scene world of the embedded ``tiny`` checkpoint: the dataset it is trained on,
and the check that reads an image back. Pure numpy, in the judge wing because the ``tiny-scene``
meaning scorer reads renders with it; the tiny's training (model wing) draws its dataset from it.

64x64 RGB scenes: one flat-coloured shape (circle, square, triangle, cross) of one of five
colours on one of four plain backgrounds, at one of five positions, with a caption such as
"a red circle on a blue background at the top left". Every word is in
``quant_guard.model.tiny.tokenizers.CAPTION_WORDS``. Rendering is deterministic for a seed. With
``jitter`` > 0 each image shifts and resizes the shape a little (the VAE trains on those);
with ``jitter=0`` every caption has exactly one image (the DiT trains on those: a model that
maps each caption to one image turns small weight errors into small image errors, while a
model that learned the jitter turns them into sub-pixel shifts of every edge).

``read_colours`` reads shape and background colour back from any image (a training image or
a render of the trained model), which is how the prompt-fidelity benchmark scores renders;
``read_scene`` reads shape, position and size as well (the ``tiny-scene`` meaning check).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

import numpy as np

# the model's settings live in settings.py (importable without numpy); re-exported here
from quant_guard.config.tiny_settings import EMBEDDED_GUIDANCE, IMAGE_SIZE, RECOMMENDED_STEPS, T5_SEQUENCE_LENGTH  # noqa: F401

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
# Saturated, well-separated colours: the shape colour is one of COLOURS, the background one of BACKGROUNDS.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 50),
    "blue": (30, 70, 230),
    "yellow": (245, 215, 30),
    "white": (245, 245, 245),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
    "blue": (30, 70, 230),
    "white": (245, 245, 245),
}
# Caption phrase -> shape centre in pixels. Corner shapes stay >= 6 px off the image edge,
# so the outer frame is always background.
POSITIONS: dict[str, tuple[int, int]] = {
    "at the top left": (20, 20),
    "at the top right": (44, 20),
    "at the bottom left": (20, 44),
    "at the bottom right": (44, 44),
    "in the center": (32, 32),
}
RADIUS = 11  # half the shape's extent in pixels (before jitter)
JITTER = 2  # default max shift of the centre and change of the radius, in pixels
_SUPERSAMPLE = 4  # draw at 4x and downsample: anti-aliased edges


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    background: str
    position: str

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} on a {self.background} background {self.position}"


def all_scenes() -> list[Scene]:
    """Every (shape, colour, background, position) whose colour differs from the background,
    in a fixed order (360 scenes)."""
    return [
        Scene(shape, colour, bg, pos)
        for shape in SHAPES for colour in COLOURS for bg in BACKGROUNDS for pos in POSITIONS
        if COLOURS[colour] != BACKGROUNDS[bg]
    ]


def parse_caption(caption: str) -> Scene:
    """Inverse of ``Scene.caption`` (``ValueError`` for a caption not made by this module)."""
    for scene in all_scenes():
        if scene.caption == caption:
            return scene
    raise ValueError(f"not a dataset caption: {caption!r}")


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        r *= 0.85  # same visual area as the circle, roughly
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)]
    if shape == "cross":
        t = r * 0.38
        return [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t),
                (cx + r, cy + t), (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r),
                (cx - t, cy + t), (cx - r, cy + t), (cx - r, cy - t), (cx - t, cy - t)]
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, rng: random.Random, jitter: int = JITTER) -> np.ndarray:
    """The scene as a uint8 (64, 64, 3) array; ``rng`` draws the jitter (up to ``jitter`` px)."""
    cx, cy = POSITIONS[scene.position]
    cx += rng.randint(-jitter, jitter)
    cy += rng.randint(-jitter, jitter)
    r = RADIUS + rng.randint(-jitter, jitter)
    return draw(scene.shape, COLOURS[scene.colour], BACKGROUNDS[scene.background], cx, cy, r)


def draw(shape: str, fill: tuple[int, int, int], background: tuple[int, int, int],
         cx: float, cy: float, r: float) -> np.ndarray:
    """One shape centred at (``cx``, ``cy``) with half-extent ``r`` px, anti-aliased, as a uint8
    (64, 64, 3) array: how every dataset image, and every template ``read_scene`` compares, is drawn."""
    from PIL import Image, ImageDraw

    s = _SUPERSAMPLE
    img = Image.new("RGB", (IMAGE_SIZE * s, IMAGE_SIZE * s), background)
    canvas = ImageDraw.Draw(img)
    if shape == "circle":
        canvas.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=fill)
    else:
        canvas.polygon([(x * s, y * s) for x, y in _polygon(shape, cx, cy, r)], fill=fill)
    img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.uint8).copy()


def make_dataset(seed: int = 0, per_scene: int = 12, jitter: int = JITTER) -> tuple[np.ndarray, list[str]]:
    """``per_scene`` renders of every scene, jittered by up to ``jitter`` px: (N, 64, 64, 3)
    uint8 images and their captions, in a seed-determined order."""
    rng = random.Random(seed)
    scenes = [sc for sc in all_scenes() for _ in range(per_scene)]
    rng.shuffle(scenes)
    images = np.stack([render(sc, rng, jitter) for sc in scenes])
    return images, [sc.caption for sc in scenes]


def _nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    dist = [float(np.sum((rgb - np.asarray(palette[n], dtype=np.float64)) ** 2)) for n in names]
    return names[int(np.argmin(dist))]


def read_colours(image: np.ndarray, *, frame: int = 4, min_pixels: int = 24) -> tuple[str | None, str]:
    """(shape colour, background colour) read from a uint8 HWC image.

    Background: the median of the outer ``frame`` pixels (never covered by a shape), snapped
    to the nearest of ``BACKGROUNDS``. Shape: the median of the pixels far (> 1/3 of the way
    to the farthest pixel, and > 60 RGB units) from that background, snapped to the nearest
    of ``COLOURS``; ``None`` when fewer than ``min_pixels`` pixels stand out (no shape)."""
    img = np.asarray(image, dtype=np.float64)[..., :3]
    bg, shape = _background_and_shape(img, frame, min_pixels)
    return (None if shape is None else _nearest(shape, COLOURS)), _nearest(bg, BACKGROUNDS)


def _frame_mask(shape: tuple[int, ...], frame: int) -> np.ndarray:
    mask = np.ones(shape[:2], dtype=bool)
    mask[frame:-frame, frame:-frame] = False
    return mask


def _background_and_shape(img: np.ndarray, frame: int, min_pixels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(background RGB, shape RGB or None): ``read_colours``' estimates, before snapping."""
    mask = _frame_mask(img.shape, frame)
    bg = np.median(img[mask], axis=0)
    dist = np.sqrt(np.sum((img - bg) ** 2, axis=-1))
    fg = dist > max(60.0, dist.max() / 3)
    fg[mask] = False
    if int(fg.sum()) < min_pixels:
        return bg, None
    return bg, np.median(img[fg], axis=0)


# What ``read_scene`` accepts as the dataset's drawing. Measured on every caption rendered by the
# tiny checkpoint (benchmarks/tiny_meaning.py, seeds 0 and 1; README, "The meaning check"): the read
# size of a right render lies in 0.85-1.14 and its centre within 2.8 px of its position's (half-size
# renders read 0.43-0.55, 1.8x ones 1.44-1.90); positions are 17-24 px apart, and the training
# images' jitter (JITTER) reaches a size of 0.82-1.18.
SIZE_RANGE = (0.7, 1.4)  # radius read / RADIUS
POSITION_TOLERANCE = 6.0  # px between the shape's centre and its position's
# A shape whose fit is this close to the best one's also counts as read: the model's softest
# drawings (a blue cross in the center) fit two shapes almost alike, and bf16 and float8 may pick
# either (1 of 360 honest float8 renders lost its meaning without it; benchmarks/tiny_meaning.py).
SHAPE_TOLERANCE = 0.02  # overlap over union
RENDER_BLUR = 1.0  # px (Gaussian sigma): the model draws softer edges than ``draw``; templates match it
_NO_CENTRE = (float("nan"), float("nan"))


@dataclass(frozen=True)
class SceneReading:
    """What an image shows in the dataset's terms (``read_scene``)."""

    colour: str | None  # None: no shape stands out
    background: str
    shape: str | None
    position: str | None  # a POSITIONS phrase; None when the shape's centre is near none
    size: float  # the shape's radius / RADIUS (from its area, for the shape read); 0 without one
    centre: tuple[float, float] = _NO_CENTRE  # (x, y) px
    fits: tuple[tuple[str, float], ...] = ()  # (shape, overlap over union with its template), per shape

    @property
    def size_word(self) -> str:
        low, high = SIZE_RANGE
        return "too small" if self.size < low else "too large" if self.size > high else "dataset size"

    def attributes(self) -> dict[str, str]:
        """The reading word by word: ``Scene``'s fields and "size"."""
        x, y = self.centre
        return {"shape": self.shape or "none", "colour": self.colour or "none", "background": self.background,
                "position": self.position or f"at ({x:.0f}, {y:.0f}) px", "size": self.size_word}

    def misses(self, scene: Scene) -> tuple[str, ...]:
        """The attributes read otherwise than ``scene`` says (its size is always the dataset's)."""
        asked = {**vars(scene), "size": "dataset size"}
        fits = dict(self.fits)
        near = fits and fits.get(scene.shape, 0.0) >= max(fits.values()) - SHAPE_TOLERANCE
        return tuple(k for k, v in self.attributes().items() if v != asked[k] and not (k == "shape" and near))

    def describe(self) -> str:
        if self.colour is None:
            return f"no shape on a {self.background} background"
        a = self.attributes()
        return (f"a {self.colour} {self.shape} on a {self.background} background {a['position']}, "
                f"{self.size_word} (x{self.size:.2f})")


def read_scene(image: np.ndarray, *, frame: int = 4, min_pixels: int = 24) -> SceneReading:
    """Colours (as ``read_colours``), shape, position and size read back from a uint8 HWC image
    (another size than 64x64 is first resized to it).

    The shape's coverage of each pixel is its colour's share between background and shape colour.
    Its area and centroid give the size; each of ``SHAPES``, drawn by ``draw`` with that area and
    centroid and softened like a render, is compared with the coverage (overlap over union), and
    the best is the shape read (a caption's shape within ``SHAPE_TOLERANCE`` of it also counts as
    read, ``SceneReading.misses``). Its centre is the nearest of ``POSITIONS`` within
    ``POSITION_TOLERANCE``."""
    img = _dataset_sized(np.asarray(image)[..., :3]).astype(np.float64)
    bg, rgb = _background_and_shape(img, frame, min_pixels)
    background = _nearest(bg, BACKGROUNDS)
    if rgb is None:
        return SceneReading(None, background, None, None, 0.0)
    cover = _coverage(img, bg, rgb, frame)
    area, cx, cy = _moments(cover)
    fits = {shape: _overlap(cover, _template_like(shape, area, cx, cy)) for shape in SHAPES}
    shape = max(fits, key=lambda s: fits[s])
    ref_area, ox, oy = _reference(shape)
    k = float(np.sqrt(area / ref_area))
    centre = (cx - ox * k, cy - oy * k)
    near = min(POSITIONS, key=lambda p: float(np.hypot(centre[0] - POSITIONS[p][0], centre[1] - POSITIONS[p][1])))
    off = float(np.hypot(centre[0] - POSITIONS[near][0], centre[1] - POSITIONS[near][1]))
    return SceneReading(_nearest(rgb, COLOURS), background, shape, near if off <= POSITION_TOLERANCE else None,
                        k, centre, tuple(fits.items()))


def _dataset_sized(image: np.ndarray) -> np.ndarray:
    if image.shape[:2] == (IMAGE_SIZE, IMAGE_SIZE):
        return image
    from PIL import Image

    resized = Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(resized)


def _coverage(img: np.ndarray, bg: np.ndarray, rgb: np.ndarray, frame: int) -> np.ndarray:
    """Per pixel, how far its colour lies from the background towards the shape's, in [0, 1]."""
    axis = rgb - bg
    cover = np.clip((img - bg) @ axis / float(axis @ axis), 0.0, 1.0)
    cover[_frame_mask(cover.shape, frame)] = 0.0
    return cover


def _moments(cover: np.ndarray) -> tuple[float, float, float]:
    """(area, centroid x, centroid y) of a coverage map."""
    ys, xs = np.mgrid[:cover.shape[0], :cover.shape[1]]
    area = float(cover.sum())
    return area, float((xs * cover).sum() / area), float((ys * cover).sum() / area)


def _template(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    drawn = draw(shape, (255, 255, 255), (0, 0, 0), cx, cy, r)[..., 0] / 255.0
    return np.asarray(gaussian_filter(drawn, RENDER_BLUR))


@functools.cache
def _reference(shape: str) -> tuple[float, float, float]:
    """(area, centroid x - centre x, centroid y - centre y) of ``shape`` drawn at RADIUS."""
    centre = IMAGE_SIZE / 2
    area, x, y = _moments(_template(shape, centre, centre, RADIUS))
    return area, x - centre, y - centre


def _template_like(shape: str, area: float, cx: float, cy: float) -> np.ndarray:
    """``shape`` drawn with ``area`` and its centroid at (``cx``, ``cy``)."""
    ref_area, ox, oy = _reference(shape)
    k = np.sqrt(area / ref_area)
    return _template(shape, cx - ox * k, cy - oy * k, RADIUS * k)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.minimum(a, b).sum() / np.maximum(a, b).sum())


def caption_matches(image: np.ndarray, caption: str) -> tuple[bool, bool]:
    """(shape colour right, background colour right) for an image rendered from ``caption``."""
    scene = parse_caption(caption)
    shape, background = read_colours(image)
    return shape == scene.colour, background == scene.background


def benchmark_pairs(n: int = 120, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` deterministic (caption, seed) pairs spread over every shape, colour, background
    and position, for prompt-fidelity checks of the trained model."""
    rng = random.Random(seed)
    scenes = all_scenes()
    rng.shuffle(scenes)
    return [(scenes[i % len(scenes)].caption, 1000 + i) for i in range(n)]
