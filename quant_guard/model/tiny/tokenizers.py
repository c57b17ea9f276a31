"""Tokenizers for the tiny checkpoint, built in memory (no download) and saved with
``save_pretrained`` so the pipeline loads them from local paths like a real checkpoint's.

- CLIP: byte-level BPE with no merges: every UTF-8 byte is a token, so any text (Chinese too)
  tokenizes. The end-of-text token has the highest id because the CLIP encoder pools at
  ``argmax(input_ids)``.
- T5: a unigram vocabulary of whole words for the captions the tiny model is trained on, plus
  single characters; anything else maps to ``<unk>``.
"""

from __future__ import annotations

from pathlib import Path

# Words of the procedural captions (see quant_guard.judge.scenes); order is part of the format.
CAPTION_WORDS: tuple[str, ...] = (
    "a", "an", "the", "on", "in", "of", "with", "and", "at", "background",
    "red", "green", "blue", "yellow", "white", "black", "purple", "orange", "pink", "cyan", "gray",
    "circle", "square", "triangle", "ring", "cross", "bar", "sign",
    "top", "bottom", "left", "right", "center", "small", "large", "big",
    "neon", "city", "street", "night", "rain", "light", "lights", "car", "cars", "sky",
)
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-:;()\"/"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def clip_vocab() -> dict[str, int]:
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # highest id: CLIP pools at argmax(input_ids)
    return vocab


def t5_vocab() -> list[tuple[str, float]]:
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -5.0)]
    pieces += [("▁" + w, -1.0) for w in CAPTION_WORDS]
    pieces += [(c, -8.0) for c in _CHARS]
    pieces += [("▁" + c, -7.0) for c in _CHARS if c not in CAPTION_WORDS]
    return pieces


def write_tokenizers(clip_dir: Path, t5_dir: Path) -> None:
    from transformers import CLIPTokenizer, T5TokenizerFast

    CLIPTokenizer(vocab=clip_vocab(), merges=[]).save_pretrained(str(clip_dir))
    T5TokenizerFast(vocab=t5_vocab(), extra_ids=0).save_pretrained(str(t5_dir))
