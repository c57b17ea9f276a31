"""The tiny FLUX.2 checkpoint's tokenizer, built in memory (no download) and saved with
``save_pretrained``, so the pipeline loads it with ``AutoTokenizer.from_pretrained`` from a local
folder like FLUX.2-klein's ``tokenizer/`` (a Qwen2 tokenizer of Qwen3).

- Byte-level BPE like Qwen's: every UTF-8 byte is a token, so any text tokenizes; the caption
  words (``quant_guard.model.tiny.tokenizers.CAPTION_WORDS``) have merges that make each one
  token (with its leading space, "Ġred").
- Qwen3's special tokens (``<|endoftext|>`` pads, ``<|im_start|>``, ``<|im_end|>``, ``<think>``,
  ``</think>``) and a chat template that renders a single user turn the way Qwen3's does, which
  is all ``Flux2Unit_Qwen3PromptEmbedder`` asks of it (``add_generation_prompt=True,
  enable_thinking=False``).
"""

from __future__ import annotations

from pathlib import Path

from quant_guard.model.tiny.tokenizers import CAPTION_WORDS, _bytes_to_unicode

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
# Qwen3's template for one user message, a generation prompt and thinking turned off.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
_SPACE = "Ġ"  # the byte-level character of " "


def vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Every byte, then every prefix of each caption word (with its leading space) that a merge
    produces; special tokens come last (``write_tokenizer`` adds them)."""
    vocab = {c: i for i, c in enumerate(_bytes_to_unicode().values())}
    merges: list[tuple[str, str]] = []
    for word in CAPTION_WORDS:
        piece = _SPACE
        for char in word:
            if piece + char not in vocab:
                merges.append((piece, char))
                vocab[piece + char] = len(vocab)
            piece += char
    return vocab, merges


_VOCAB, _MERGES = vocab_and_merges()
VOCAB_SIZE = len(_VOCAB) + len(SPECIAL_TOKENS)


def build_tokenizer():  # type: ignore[no-untyped-def]
    from transformers import Qwen2Tokenizer

    tok = Qwen2Tokenizer(vocab=dict(_VOCAB), merges=list(_MERGES), unk_token=None, bos_token=None,
                         eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    if "<|endoftext|>" not in tok.get_vocab():
        tok.add_special_tokens({"pad_token": "<|endoftext|>"})
    tok.chat_template = CHAT_TEMPLATE
    tok.model_max_length = 131072
    if len(tok) != VOCAB_SIZE:
        raise RuntimeError(f"tiny FLUX.2 tokenizer has {len(tok)} tokens, the text encoder expects {VOCAB_SIZE}")
    return tok


def write_tokenizer(dest: Path) -> None:
    build_tokenizer().save_pretrained(str(dest))
