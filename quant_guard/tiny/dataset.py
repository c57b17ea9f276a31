"""The procedural dataset the embedded ``tiny`` checkpoint is trained on, and the check that
reads an image back.

64x64 RGB scenes: one flat-coloured shape (circle, square, triangle, cross) of one of five
colours on one of four plain backgrounds, at one of five positions, with a caption such as
"a red circle on a blue background at the top left". Every word is in
``quant_guard.tiny.tokenizers.CAPTION_WORDS``. Rendering is deterministic for a seed. With
``jitter`` > 0 each image shifts and resizes the shape a little (the VAE trains on those);
with ``jitter=0`` every caption has exactly one image (the DiT trains on those: a model that
maps each caption to one image turns small weight errors into small image errors, while a
model that learned the jitter turns them into sub-pixel shifts of every edge).

``read_colours`` reads shape and background colour back from any image (a training image or
a render of the trained model), which is how the prompt-fidelity benchmark scores renders.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

# the model's settings live in settings.py (importable without numpy); re-exported here
from quant_guard.tiny.settings import EMBEDDED_GUIDANCE, IMAGE_SIZE, RECOMMENDED_STEPS, T5_SEQUENCE_LENGTH  # noqa: F401

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
    from PIL import Image, ImageDraw

    s = _SUPERSAMPLE
    cx, cy = POSITIONS[scene.position]
    cx += rng.randint(-jitter, jitter)
    cy += rng.randint(-jitter, jitter)
    r = RADIUS + rng.randint(-jitter, jitter)
    img = Image.new("RGB", (IMAGE_SIZE * s, IMAGE_SIZE * s), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    fill = COLOURS[scene.colour]
    if scene.shape == "circle":
        draw.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=fill)
    else:
        draw.polygon([(x * s, y * s) for x, y in _polygon(scene.shape, cx, cy, r)], fill=fill)
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
    mask = np.ones(img.shape[:2], dtype=bool)
    mask[frame:-frame, frame:-frame] = False
    bg = np.median(img[mask], axis=0)
    dist = np.sqrt(np.sum((img - bg) ** 2, axis=-1))
    fg = dist > max(60.0, dist.max() / 3)
    fg[mask] = False
    if int(fg.sum()) < min_pixels:
        return None, _nearest(bg, BACKGROUNDS)
    return _nearest(np.median(img[fg], axis=0), COLOURS), _nearest(bg, BACKGROUNDS)


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
