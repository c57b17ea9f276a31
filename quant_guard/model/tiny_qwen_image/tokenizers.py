"""The Qwen tokenizer of the tiny Qwen-Image checkpoint (and, with a chat template, of the tiny
Z-Image one), built in memory (no download) with transformers' own ``Qwen2Tokenizer`` (the
byte-level BPE of Qwen2/2.5/3) and saved with ``save_pretrained``.

The vocabulary: the 256 byte symbols (so any text tokenizes), one token per word of the
pipelines' prompt templates and of the caption dataset (with and without the leading space,
spelled by a chain of merges), and Qwen's special tokens. With whole-word tokens the Qwen-Image
system prompt is 34 tokens as with the real tokenizer: ``QwenImageUnit_PromptEmbedder`` drops
exactly the first 34 hidden states (``drop_idx = 34``), so the prompt's embedding starts where
the real pipeline's does.
"""

from __future__ import annotations

from pathlib import Path

from quant_guard.model.tiny.tokenizers import CAPTION_WORDS, _bytes_to_unicode

# Words of DiffSynth's Qwen-Image prompt template (pipelines/qwen_image.py, encode_prompt) and of
# the chat roles; order is part of the format.
TEMPLATE_WORDS: tuple[str, ...] = (
    "system", "user", "assistant", "Describe", "the", "image", "by", "detailing", "color", "shape", "size",
    "texture", "quantity", "text", "spatial", "relationships", "of", "objects", "and", "background",
)
# Qwen's special tokens, in the real vocabulary's order (ids 151643...), here after the words.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)
# The Qwen-Image system prompt up to the user's text: DiffSynth drops this many hidden states.
QWEN_IMAGE_DROP_IDX = 34
QWEN_IMAGE_TEMPLATE_PREFIX = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial "
    "relationships of the objects and background:<|im_end|>\n<|im_start|>user\n"
)


def _words() -> list[str]:
    seen: dict[str, None] = {}
    for word in (*TEMPLATE_WORDS, *CAPTION_WORDS):
        seen.setdefault(word, None)
    return list(seen)


def vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte symbols, then every word (bare and space-prefixed) as one token reached by merging
    its symbols left to right; the prefixes the chain passes through are tokens too."""
    byte_char = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(byte_char.values())}
    merges: list[tuple[str, str]] = []
    # Space-prefixed words first: their merges then outrank every merge of a bare word, and "Ġ"
    # occurs only at a word's start, so no chain can take a piece out of a space-prefixed word.
    for text in [" " + w for w in _words()] + _words():
        symbols = [byte_char[b] for b in text.encode("utf-8")]
        left = symbols[0]
        for right in symbols[1:]:
            merged = left + right
            if merged not in vocab:
                vocab[merged] = len(vocab)
                merges.append((left, right))
            left = merged
    return vocab, merges


def vocab_size() -> int:
    """Ids the text encoder's embedding must cover: the BPE vocabulary plus the special tokens."""
    vocab, _ = vocab_and_merges()
    return len(vocab) + len(SPECIAL_TOKENS)


def build_tokenizer(chat_template: str | None = None):  # -> transformers.Qwen2Tokenizer
    from transformers import Qwen2Tokenizer

    vocab, merges = vocab_and_merges()
    for token in SPECIAL_TOKENS:  # fixed ids after the BPE vocabulary
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", extra_special_tokens=list(SPECIAL_TOKENS[1:]))
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def write_tokenizer(dest: Path, chat_template: str | None = None) -> None:
    build_tokenizer(chat_template).save_pretrained(str(dest))
