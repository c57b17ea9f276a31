"""The CLIP-type meaning scorer end to end with a small CLIP model built here (transformers'
``CLIPModel`` at a tiny size, trained for seconds on a few tiny-dataset pictures and their
captions, saved to a folder like a downloaded model): it keeps the meaning of a picture of its
prompt and loses that of a picture of something else; a model that scores every caption alike,
and so would keep every candidate, is refused instead of vouched for."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from quant_guard.judge.scorecard import compute_scorecard
from quant_guard.judge.semantic import ClipScorer, ScorerUnavailable, judge
from quant_guard.judge import scenes as ds

SCENES = tuple(ds.Scene(shape, colour, background, "in the center") for shape, colour, background in (
    ("circle", "red", "black"), ("square", "blue", "white"), ("triangle", "yellow", "gray"), ("cross", "white", "blue")))
CAPTIONS = tuple(scene.caption for scene in SCENES)
PROMPT = CAPTIONS[0]
CONTROLS = CAPTIONS[1:]  # captions of the other pictures: unrelated to the prompt's


def _picture(scene: ds.Scene, seed: int) -> np.ndarray:
    return ds.render(scene, random.Random(seed))  # jittered: a new picture of the same caption per seed


def _build_clip(folder: Path) -> Path:
    """A 2-layer CLIP (width 32, 32x32 images) with the tiny checkpoint's byte-level CLIP tokenizer,
    trained contrastively on jittered pictures of ``SCENES``; saved as transformers saves a model."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from quant_guard.model.tiny.tokenizers import clip_vocab

    torch.manual_seed(0)
    vocab = clip_vocab()
    eos = vocab["<|endoftext|>"]
    layers = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(text_config={**layers, "vocab_size": len(vocab), "max_position_embeddings": 64,
                                     "eos_token_id": eos, "pad_token_id": eos, "bos_token_id": vocab["<|startoftext|>"]},
                        vision_config={**layers, "image_size": 32, "patch_size": 8}, projection_dim=16)
    model = CLIPModel(config)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=CLIPTokenizer(vocab=vocab, merges=[]))
    pool = 8  # jittered pictures per scene, prepared once
    pixels = processor(images=[_picture(s, 100 + i) for i in range(pool) for s in SCENES],
                       return_tensors="pt")["pixel_values"].reshape(pool, len(SCENES), 3, 32, 32)
    text = processor(text=list(CAPTIONS), return_tensors="pt", padding=True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only wait on each other on a busy machine
    try:
        for step in range(150):
            loss = model(**text, pixel_values=pixels[step % pool], return_loss=True).loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_clip(tmp_path_factory.mktemp("clip"))


def test_a_small_clip_model_keeps_the_prompts_picture_and_loses_another(clip_folder: Path) -> None:
    scorer = ClipScorer(clip_folder, controls=CONTROLS)
    golden = _picture(SCENES[0], 0)
    g = scorer.verdict(golden, PROMPT)
    assert g.agrees and g.score is not None and g.score > 0.3  # its prompt well above the other captions
    kept = compute_scorecard(golden, _picture(SCENES[0], 1), prompt=PROMPT, scorer=scorer)
    assert kept.meaning is not None and kept.meaning.agrees
    for other in SCENES[1:]:
        lost = compute_scorecard(golden, _picture(other, 1), prompt=PROMPT, scorer=scorer)
        assert lost.meaning is not None and not lost.meaning.agrees, other.caption
        assert lost.meaning.candidate.score is not None and lost.meaning.candidate.score < g.score - 0.1
        assert "meaning: LOST: candidate CLIPScore" in lost.describe()


def test_a_model_that_scores_every_caption_alike_is_refused_not_vouched_for(clip_folder: Path,
                                                                             tmp_path: Path) -> None:
    import torch
    from transformers import CLIPModel

    # no token or position reaches the text tower: every caption gets the same embedding, so every
    # picture scores its prompt exactly as it scores the controls
    model = CLIPModel.from_pretrained(str(clip_folder), local_files_only=True)
    with torch.no_grad():
        model.text_model.embeddings.token_embedding.weight.zero_()
        model.text_model.embeddings.position_embedding.weight.zero_()
    constant = tmp_path / "constant"
    model.save_pretrained(str(constant))
    for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json"):
        (constant / name).write_bytes((clip_folder / name).read_bytes())
    scorer = ClipScorer(constant, controls=CONTROLS)
    golden, other = _picture(SCENES[0], 0), _picture(SCENES[1], 1)
    assert len(set(np.round(scorer.scores(golden, [PROMPT, *CONTROLS]), 6))) == 1  # a constant scorer indeed
    with pytest.raises(ScorerUnavailable, match="cannot vouch for this case's meaning: on the golden, CLIPScore"):
        judge(scorer, golden, other, PROMPT)
    with pytest.raises(ScorerUnavailable, match="cannot vouch"):
        judge(scorer, golden, golden.copy(), PROMPT)


def test_clip_needs_control_captions(clip_folder: Path) -> None:
    with pytest.raises(ScorerUnavailable, match="needs control captions"):
        ClipScorer(clip_folder, controls=())
