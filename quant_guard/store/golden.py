"""The golden store: ``<golden_dir>/<checkpoint-id>/<case-id>-s<seed>.png`` (the bf16 reference
image, or a video family's bf16 clip as an animated PNG: see ``encode_clip``), a ``.json`` sidecar saying how it was made, and a ``.expected.yml`` with the candidate's
metrics at the time (written in pytest-regressions' ``data_regression`` YAML format).

Every write goes to a temporary file in the same folder and is renamed into place, so an
interrupted update leaves either the old or the new file, never half of one. The sidecar records
the PNG's sha256, so a PNG and sidecar from different updates are detected, not trusted; the
old expected metrics are removed before a changed golden is written (an interrupted update
leaves none rather than ones measured against the other image).
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import math
import struct
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant_guard.store.atomic import atomic_write

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np

    from quant_guard.config.thresholds import ImageMetrics

SIDECAR_VERSION = 1
SCORECARD_KEY = "scorecard"  # in the expected-metrics file: the scorecard numbers recorded with them
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Recorded render parameters: a difference in any of these makes a golden stale.
RENDER_KEYS = ("prompt", "seed", "steps", "width", "height", "guidance", "t5_sequence_length", "frames",
               "scheduler", "checkpoint_hashes")


class GoldenError(Exception):
    """A golden that cannot be used; the message names the file and what to do."""


class GoldenMissing(GoldenError):
    pass



class GoldenCorrupt(GoldenError):
    pass


class WriteOutcome(str, Enum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    WITHIN_DRIFT = "within-drift"  # kept: the new render differs, but within the drift tolerance


@dataclass(frozen=True)
class GoldenKey:
    checkpoint_id: str
    case_id: str
    seed: int

    @property
    def stem(self) -> str:
        return f"{self.case_id}-s{self.seed}"


@dataclass(frozen=True)
class Golden:
    image: np.ndarray  # a clip's first frame
    metadata: dict[str, Any]
    png: Path
    frames: np.ndarray | None = None  # uint8, T x H x W x 3: a clip's frames; None for an image

    @property
    def pixels(self) -> np.ndarray:
        """What a candidate is judged against: the clip (of 2 frames or more), else the image."""
        return self.image if self.frames is None else self.frames


class GoldenStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def png_path(self, key: GoldenKey) -> Path:
        path = self.root / key.checkpoint_id / f"{key.stem}.png"
        # ids are validated by the config; this guards against anything slipping through
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise GoldenError(f"golden path {path} would leave the golden directory {self.root}")
        return path

    def sidecar_path(self, key: GoldenKey) -> Path:
        return self.png_path(key).with_suffix(".json")

    def expected_path(self, key: GoldenKey, scheme: str | None = None) -> Path:
        """The candidate metrics recorded against this golden: ``<case>-s<seed>.expected.yml`` for
        the single default candidate, ``<case>-s<seed>.<scheme>.expected.yml`` per listed scheme."""
        return self.png_path(key).with_suffix(f".{scheme}.expected.yml" if scheme else ".expected.yml")

    def expected_paths(self, key: GoldenKey) -> list[Path]:
        """Every scheme's expected-metrics file of this golden."""
        png = self.png_path(key)
        stem = glob.escape(png.stem)
        return sorted({*png.parent.glob(f"{stem}.expected.yml"), *png.parent.glob(f"{stem}.*.expected.yml")})

    def baseline_id(self, key: GoldenKey, scheme: str | None = None) -> str | None:
        """What a run of this case is judged against, as a short hash of the golden image (its
        sidecar's sha256) and the expected metrics recorded with it. A re-baseline that changes
        either, the expected metrics of an unchanged golden included, gives a new id: the metrics
        history starts the case's series afresh there. None without a readable sidecar."""
        try:
            digest = hashlib.sha256(str(_read_sidecar(self.sidecar_path(key)).get("image_sha256")).encode())
            expected = self.expected_path(key, scheme)
            if expected.is_file():
                digest.update(expected.read_bytes())
        except (GoldenError, OSError):
            return None
        return digest.hexdigest()[:16]

    # ---- reading ----------------------------------------------------------------------------

    def load(self, key: GoldenKey, *, width: int, height: int, frames: int = 1) -> Golden:
        """The golden image, or with ``frames`` > 1 the golden clip of that many frames."""
        png, sidecar = self.png_path(key), self.sidecar_path(key)
        if not png.exists():
            raise GoldenMissing(f"no golden image {png}")
        try:
            data = png.read_bytes()
        except OSError as exc:  # a folder in its place, no permission, ...
            raise GoldenCorrupt(f"golden {png} cannot be read ({exc})") from None
        # first: a truncated file is named as such
        clip = _decode_clip(data, png, (width, height), frames) if frames > 1 else None
        image = clip[0] if clip is not None else _decode_png(data, png, size=(width, height))
        if image.shape != (height, width, 3):
            raise GoldenCorrupt(f"golden {png} is {image.shape[1]}x{image.shape[0]}, the case renders {width}x{height}")
        metadata = _read_sidecar(sidecar)
        if metadata.get("image_sha256") != hashlib.sha256(data).hexdigest():
            raise GoldenCorrupt(f"golden {png} does not match its sidecar {sidecar.name} (sha256 differs): "
                                "the PNG was changed or an update was interrupted")
        return Golden(image=image, metadata=metadata, png=png, frames=clip)

    def write_expected(self, key: GoldenKey, expected: ImageMetrics,
                       scorecard: Mapping[str, float | None] | None = None, scheme: str | None = None) -> None:
        atomic_write(self.expected_path(key, scheme), _expected_yaml(expected, scorecard))

    def load_expected(self, key: GoldenKey, scheme: str | None = None) -> ImageMetrics | None:
        """The candidate metrics recorded at the last update, or None if none were recorded."""
        found = self._read_expected(key, scheme)
        return None if found is None else found[0]

    def load_expected_with_scorecard(self, key: GoldenKey,
                                     scheme: str | None = None) -> tuple[ImageMetrics, dict[str, float]] | None:
        """``load_expected`` and the scorecard numbers recorded with those metrics
        (``Scorecard.values()`` keys; empty when none were: a golden updated before the scorecard
        existed), from one read of the file; None if nothing was recorded."""
        found = self._read_expected(key, scheme)
        if found is None:
            return None
        metrics, data, path = found
        try:
            return metrics, {str(k): float(v) for k, v in (data.get(SCORECARD_KEY) or {}).items()}
        except (AttributeError, TypeError, ValueError) as exc:
            raise GoldenCorrupt(f"expected-metrics file {path} has no valid {SCORECARD_KEY!r} ({exc}); "
                                "re-create it with pytest --update-golden") from None

    def _read_expected(self, key: GoldenKey, scheme: str | None) -> tuple[ImageMetrics, Any, Path] | None:
        """The recorded metrics, the parsed file and its path; None when there is no file."""
        import yaml

        from quant_guard.config.thresholds import ImageMetrics

        path = self.expected_path(key, scheme)
        if not path.exists():
            return None
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            return (ImageMetrics(lpips=float(data["lpips"]), ssim=float(data["ssim"]), psnr=float(data["psnr"])),
                    data, path)
        except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
            raise GoldenCorrupt(f"expected-metrics file {path} is not valid ({exc}); "
                                "re-create it with pytest --update-golden") from None

    # ---- writing ----------------------------------------------------------------------------

    def write(self, key: GoldenKey, image: np.ndarray, metadata: dict[str, Any],  # image: or T x H x W x 3
              expected: ImageMetrics | None, *, scheme: str | None = None, force: bool = False,
              expected_scorecard: Mapping[str, float | None] | None = None) -> WriteOutcome:
        """Write the golden, its sidecar and the ``scheme``'s expected metrics. UNCHANGED (nothing rewritten, the
        original date kept) when the pixels and render parameters are what is stored already,
        unless ``force``."""
        png, sidecar = self.png_path(key), self.sidecar_path(key)
        data = encode_png(image) if image.ndim == 3 else encode_clip(image, metadata.get("fps") or DEFAULT_FPS)
        metadata = {**metadata, "sidecar_version": SIDECAR_VERSION,
                    "image_sha256": hashlib.sha256(data).hexdigest()}
        outcome = WriteOutcome.CREATED
        same_image = False  # the image the sidecar records (what the expected metrics were measured on)
        if png.exists():
            outcome = WriteOutcome.UPDATED
            try:
                old = _read_sidecar(sidecar)
                same_image = old.get("image_sha256") == metadata["image_sha256"] and stale_fields(old, metadata) == []
                if not force and same_image and png.read_bytes() == data:
                    outcome = WriteOutcome.UNCHANGED
            except GoldenError:
                pass  # a damaged old golden is simply replaced
        png.parent.mkdir(parents=True, exist_ok=True)
        if outcome is not WriteOutcome.UNCHANGED:
            # The old expected metrics (of every scheme) were measured against the old image: drop
            # them first, so an interrupted update never leaves them next to the new golden. A
            # golden rewritten with the very image its sidecar records (a truncated PNG restored,
            # --qg-force) keeps them: they were measured against these pixels.
            for path in ([] if same_image else self.expected_paths(key)):
                path.unlink(missing_ok=True)
            atomic_write(png, data)
            atomic_write(sidecar, (json.dumps(metadata, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode())
        if expected is not None:
            atomic_write(self.expected_path(key, scheme), _expected_yaml(expected, expected_scorecard))
        for path in (png, sidecar, self.expected_path(key, scheme)):
            remove_stale_temporaries(path)
        return outcome


def stale_fields(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Render parameters that differ between a golden's sidecar and the current case, as
    "name: recorded -> current" lines."""
    out = []
    for name in RENDER_KEYS:
        old, new = recorded.get(name), current.get(name)
        if old != new:
            if isinstance(old, dict) and isinstance(new, dict):
                changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                out.append(f"{name}: {', '.join(changed)} changed")
            else:
                out.append(f"{name}: {old!r} -> {new!r}")
    return out


def encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    # no timestamps or other chunks: the same pixels always give the same bytes
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG", optimize=False, compress_level=9)
    return buffer.getvalue()


# A clip's golden is ONE animated PNG (APNG) rather than a folder of frame PNGs: one file keeps
# the store's one-file-plus-sidecar shape (one sha256, one atomic rename, no half-written folder to
# detect), lossless like a PNG, and a browser plays it in a plain <img> (the report's player). Its
# first frame is what an APNG-blind viewer shows.
DEFAULT_FPS = 16  # a clip written without an fps in its sidecar


def encode_clip(frames: np.ndarray, fps: int) -> bytes:
    """The frames (uint8, T x H x W x 3) as one animated PNG at ``fps`` (``DEFAULT_FPS`` when not
    positive), every frame kept exactly. Pillow merges
    a frame identical to the one before into its duration unless their disposal differs, so the
    disposal alternates (NONE, BACKGROUND): every frame is stored whole or as a delta that replaces
    (blend SOURCE), and decoding gives the frames back bit for bit (``_decode_clip``)."""
    from PIL import Image

    images = [Image.fromarray(frame, mode="RGB") for frame in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="PNG", save_all=True, append_images=images[1:], default_image=False,
                   duration=round(1000 / (fps if fps > 0 else DEFAULT_FPS)), loop=0,
                   disposal=[i % 2 for i in range(len(images))], blend=0, optimize=False, compress_level=9)
    return buffer.getvalue()


def _decode_clip(data: bytes, path: Path, size: tuple[int, int], frames: int) -> np.ndarray:
    """A golden clip's frames; the size, then the frame count are checked before the pixels."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    _check_png_size(data, path, size)
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG":
                raise GoldenCorrupt(f"golden {path} is a {img.format} file, not an animated PNG")
            count = getattr(img, "n_frames", 1)
            if count != frames:
                raise GoldenCorrupt(f"golden {path} has {count} frame{'s' if count != 1 else ''}, the case renders "
                                    f"{frames}")
            out = []
            for index in range(count):
                img.seek(index)
                out.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
            return np.stack(out)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise GoldenCorrupt(f"golden {path} cannot be decoded ({exc}); it is truncated or corrupt") from None


def _check_png_size(data: bytes, path: Path, size: tuple[int, int]) -> None:
    """Refuse a wrong-size file (a decompression bomb included) from its header, before any pixel."""
    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        declared = struct.unpack(">II", data[16:24])
        if declared != size:
            raise GoldenCorrupt(f"golden {path} is {declared[0]}x{declared[1]}, the case renders {size[0]}x{size[1]}")


def _decode_png(data: bytes, path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a golden PNG; ``size`` (width, height) is checked from the header first, so a
    wrong-size file (a decompression bomb included) is refused before any pixel is decoded."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if size is not None:
        _check_png_size(data, path, size)
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG":
                raise GoldenCorrupt(f"golden {path} is a {img.format} file, not a PNG")
            if img.mode != "RGB":
                raise GoldenCorrupt(f"golden {path} has mode {img.mode}, expected RGB")
            img.load()
            return np.asarray(img, dtype=np.uint8).copy()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise GoldenCorrupt(f"golden {path} cannot be decoded ({exc}); it is truncated or corrupt") from None


def _read_sidecar(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise GoldenCorrupt(f"golden sidecar {path} is missing: the golden is not trusted without it")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GoldenCorrupt(f"golden sidecar {path} cannot be read ({exc})") from None
    except UnicodeDecodeError as exc:
        raise GoldenCorrupt(f"golden sidecar {path} is not valid JSON ({exc})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise GoldenCorrupt(f"golden sidecar {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("sidecar_version") != SIDECAR_VERSION:
        raise GoldenCorrupt(f"golden sidecar {path} is not a quant_guard sidecar (version {SIDECAR_VERSION})")
    return data


def _expected_yaml(metrics: ImageMetrics, scorecard: Mapping[str, float | None] | None = None) -> bytes:
    import yaml
    from pytest_regressions.data_regression import RegressionYamlDumper

    data: dict[str, Any] = {"lpips": round(metrics.lpips, 6), "ssim": round(metrics.ssim, 6),
                            "psnr": round(metrics.psnr, 4) if metrics.psnr != float("inf") else float("inf")}
    if scorecard:  # the numbers a scorecard limit can bound; one with nothing to measure is left out
        data[SCORECARD_KEY] = {k: round(v, 6) for k, v in scorecard.items() if v is not None and math.isfinite(v)}
    text: bytes = yaml.dump_all([data], Dumper=RegressionYamlDumper, default_flow_style=False,
                                allow_unicode=True, indent=2, encoding="utf-8")
    return text


# A temporary file of atomic_write this old was left by a killed process (a live write takes
# seconds); removing it never races with a write in progress.
STALE_TEMPORARY_S = 15 * 60


def remove_stale_temporaries(path: Path) -> None:
    """Delete what killed writes of ``path`` left behind (never read: they are not goldens)."""
    now = time.time()
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TEMPORARY_S:
                tmp.unlink()
        except OSError:
            pass  # gone already, or not ours to delete

