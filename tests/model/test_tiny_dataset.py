"""The procedural dataset the tiny checkpoint is trained on: deterministic, captions in the
tokenizer's vocabulary, pixels of the colours the caption names."""

from __future__ import annotations

import random

import numpy as np
import pytest

from quant_guard.judge import scenes as ds
from quant_guard.model.tiny.tokenizers import CAPTION_WORDS


def test_same_seed_same_dataset() -> None:
    a_img, a_cap = ds.make_dataset(seed=3, per_scene=1)
    b_img, b_cap = ds.make_dataset(seed=3, per_scene=1)
    assert a_cap == b_cap
    assert np.array_equal(a_img, b_img)
    c_img, c_cap = ds.make_dataset(seed=4, per_scene=1)
    assert c_cap != a_cap or not np.array_equal(c_img, a_img)


def test_shapes_and_sizes() -> None:
    images, captions = ds.make_dataset(seed=0, per_scene=1)
    assert images.shape == (len(ds.all_scenes()), ds.IMAGE_SIZE, ds.IMAGE_SIZE, 3)
    assert images.dtype == np.uint8
    assert len(captions) == len(images) == len(set(captions))


def test_captions_use_known_words() -> None:
    words = {w for scene in ds.all_scenes() for w in scene.caption.split()}
    assert words <= set(CAPTION_WORDS)


def test_captions_fit_t5_sequence_length(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from transformers import T5TokenizerFast

    from quant_guard.model.tiny.tokenizers import write_tokenizers

    write_tokenizers(tmp_path / "clip", tmp_path / "t5")
    tok = T5TokenizerFast.from_pretrained(str(tmp_path / "t5"))
    for scene in ds.all_scenes():
        ids = tok(scene.caption).input_ids
        assert len(ids) <= ds.T5_SEQUENCE_LENGTH
        assert tok.unk_token_id not in ids


def test_no_scene_has_shape_colour_equal_to_background() -> None:
    for scene in ds.all_scenes():
        assert ds.COLOURS[scene.colour] != ds.BACKGROUNDS[scene.background]


@pytest.mark.parametrize("scene", ds.all_scenes()[::7], ids=lambda s: s.caption.replace(" ", "_"))
def test_pixels_have_the_caption_colours(scene: ds.Scene) -> None:
    image = ds.render(scene, random.Random(0))
    corner = image[0, 0]
    assert tuple(corner) == ds.BACKGROUNDS[scene.background]
    cx, cy = ds.POSITIONS[scene.position]
    assert tuple(image[cy, cx]) == ds.COLOURS[scene.colour]  # the shape covers its centre
    assert ds.read_colours(image) == (scene.colour, scene.background)


def test_position_is_where_the_caption_says() -> None:
    rng = random.Random(0)
    for name, (cx, cy) in ds.POSITIONS.items():
        image = ds.render(ds.Scene("square", "red", "black", name), rng)
        ys, xs = np.nonzero(np.abs(image.astype(int) - ds.BACKGROUNDS["black"]).sum(-1) > 30)
        assert abs(xs.mean() - cx) <= ds.JITTER + 1 and abs(ys.mean() - cy) <= ds.JITTER + 1


def test_without_jitter_one_image_per_caption() -> None:
    a_img, a_cap = ds.make_dataset(seed=0, per_scene=2, jitter=0)
    b_img, b_cap = ds.make_dataset(seed=5, per_scene=1, jitter=0)
    by_caption = dict(zip(b_cap, b_img))
    for img, cap in zip(a_img, a_cap):
        assert np.array_equal(img, by_caption[cap])


def test_read_colours_on_the_whole_dataset() -> None:
    images, captions = ds.make_dataset(seed=1, per_scene=1)
    assert all(all(ds.caption_matches(i, c)) for i, c in zip(images, captions))


def test_read_colours_without_a_shape() -> None:
    blank = np.full((64, 64, 3), ds.BACKGROUNDS["gray"], dtype=np.uint8)
    assert ds.read_colours(blank) == (None, "gray")


def test_parse_caption_round_trip() -> None:
    for scene in ds.all_scenes()[::11]:
        assert ds.parse_caption(scene.caption) == scene
    with pytest.raises(ValueError):
        ds.parse_caption("a neon city street at night")


def test_benchmark_pairs_deterministic_and_varied() -> None:
    pairs = ds.benchmark_pairs(120)
    assert pairs == ds.benchmark_pairs(120)
    scenes = [ds.parse_caption(c) for c, _ in pairs]
    assert {s.colour for s in scenes} == set(ds.COLOURS)
    assert {s.background for s in scenes} == set(ds.BACKGROUNDS)
    assert len({seed for _, seed in pairs}) == 120
