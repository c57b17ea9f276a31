"""A video family's golden: the bf16 clip as one animated PNG beside the usual sidecar
(``store.golden.encode_clip``), written atomically, read back frame for frame, and refused with
the file named when it is truncated, another size or has another number of frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from quant_guard.store.golden import GoldenCorrupt, GoldenKey, GoldenStore, WriteOutcome, encode_clip

KEY = GoldenKey("tiny-wan", "red-circle", 0)
METADATA = {"prompt": "a red circle", "seed": 0, "frames": 5, "fps": 8}


def clip(frames: int = 5, seed: int = 0) -> np.ndarray:
    out = np.random.default_rng(seed).integers(0, 256, (frames, 16, 32, 3), dtype=np.uint8)
    out[2] = out[1]  # a still moment: two identical frames in a row
    return out


def test_a_clip_round_trips_bit_for_bit_with_its_frame_rate(tmp_path: Path) -> None:
    from PIL import Image

    store, frames = GoldenStore(tmp_path), clip()
    assert store.write(KEY, frames, METADATA, None) is WriteOutcome.CREATED
    golden = store.load(KEY, width=32, height=16, frames=5)
    assert golden.frames is not None and np.array_equal(golden.frames, frames)  # the repeated frame kept
    assert np.array_equal(golden.pixels, frames) and np.array_equal(golden.image, frames[0])
    with Image.open(store.png_path(KEY)) as apng:  # one animated PNG a browser plays at the clip's rate
        assert (apng.format, apng.n_frames, apng.info["duration"]) == ("PNG", 5, 125)
    assert store.write(KEY, frames, METADATA, None) is WriteOutcome.UNCHANGED  # same bytes: not rewritten


def test_the_encoding_is_deterministic() -> None:
    assert encode_clip(clip(), 8) == encode_clip(clip(), 8)


def test_a_golden_with_another_frame_count_names_the_file_and_both_counts(tmp_path: Path) -> None:
    store = GoldenStore(tmp_path)
    store.write(KEY, clip(frames=3), METADATA, None)
    with pytest.raises(GoldenCorrupt, match=r"golden .*red-circle-s0\.png has 3 frames, the case renders 5"):
        store.load(KEY, width=32, height=16, frames=5)
    store.write(KEY, clip()[0], METADATA, None)  # an image where a clip belongs
    with pytest.raises(GoldenCorrupt, match=r"red-circle-s0\.png has 1 frame, the case renders 5"):
        store.load(KEY, width=32, height=16, frames=5)


def test_a_truncated_or_resized_clip_is_refused_with_its_path(tmp_path: Path) -> None:
    store = GoldenStore(tmp_path)
    store.write(KEY, clip(), METADATA, None)
    png = store.png_path(KEY)
    whole = png.read_bytes()
    png.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(GoldenCorrupt, match=r"golden .*red-circle-s0\.png cannot be decoded .*truncated or corrupt"):
        store.load(KEY, width=32, height=16, frames=5)
    png.write_bytes(whole)
    with pytest.raises(GoldenCorrupt, match=r"red-circle-s0\.png is 32x16, the case renders 64x64"):
        store.load(KEY, width=64, height=64, frames=5)


def test_a_clip_changed_behind_its_sidecar_is_not_trusted(tmp_path: Path) -> None:
    store = GoldenStore(tmp_path)
    store.write(KEY, clip(), METADATA, None)
    store.png_path(KEY).write_bytes(encode_clip(clip(seed=1), 8))
    with pytest.raises(GoldenCorrupt, match="does not match its sidecar"):
        store.load(KEY, width=32, height=16, frames=5)
    assert json.loads(store.sidecar_path(KEY).read_text())["fps"] == 8


def test_an_interrupted_write_leaves_the_old_clip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    store, old = GoldenStore(tmp_path), clip()
    store.write(KEY, old, METADATA, None)

    def killed(src: object, dst: object) -> None:
        raise KeyboardInterrupt  # the process dies between writing the temporary file and the rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        store.write(KEY, clip(seed=2), METADATA, None)
    monkeypatch.undo()
    assert np.array_equal(store.load(KEY, width=32, height=16, frames=5).frames, old)
