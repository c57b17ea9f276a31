"""The tokenizer of the tiny Wan checkpoint, built in memory (no download) and saved with
``save_pretrained``. Wan's is umT5-XXL's (``google/umt5-xxl/`` in Wan2.1-T2V-1.3B): a SentencePiece
unigram model that ``WanVideoPipeline`` loads with ``AutoTokenizer`` through DiffSynth's
``HuggingfaceTokenizer(seq_len=512, clean="whitespace")``, padded to 512 ids with ``</s>`` appended.
The tiny one is a unigram ``T5TokenizerFast`` with umT5's special ids (``<pad>`` 0, ``</s>`` 1,
``<unk>`` 2): the tiny FLUX.1's T5 vocabulary (whole caption words, single characters) plus the
words of motion captions ("a red circle moving from left to right")."""

from __future__ import annotations

from pathlib import Path

from quant_guard.model.tiny.tokenizers import t5_vocab

# Words of motion captions; order is part of the format.
MOTION_WORDS: tuple[str, ...] = ("moving", "moves", "from", "to", "up", "down", "slowly", "fast", "rotating",
                                 "growing", "shrinking", "bouncing", "camera", "pan", "zoom")


def pieces() -> list[tuple[str, float]]:
    """The unigram vocabulary: (piece, log-probability), id = position."""
    base = t5_vocab()
    known = {piece for piece, _ in base}
    return base + [("\u2581" + w, -1.0) for w in MOTION_WORDS if "\u2581" + w not in known]


def vocab_size() -> int:
    return len(pieces())


def write_tokenizer(dest: Path) -> None:
    from transformers import T5TokenizerFast

    T5TokenizerFast(vocab=pieces(), extra_ids=0).save_pretrained(str(dest))
