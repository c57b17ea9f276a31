"""The tokenizer of the tiny Z-Image checkpoint: the tiny Qwen tokenizer (byte-level BPE, whole
words of the captions, Qwen's special tokens; ``quant_guard.model.tiny_qwen_image.tokenizers``)
with a chat template. ``ZImagePipeline`` loads it with ``AutoTokenizer`` and formats each prompt
with ``apply_chat_template(messages, add_generation_prompt=True, enable_thinking=True)``.
"""

from __future__ import annotations

from pathlib import Path

# Qwen3's chat template reduced to what the pipeline asks of it: each message as
# "<|im_start|>{role}\n{content}<|im_end|>\n", then the assistant's turn; with thinking disabled,
# Qwen3 opens the turn with an empty think block (the real tokenizer's template does the same).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)


def write_tokenizer(dest: Path) -> None:
    from quant_guard.model.tiny_qwen_image.tokenizers import write_tokenizer as write_qwen

    write_qwen(dest, chat_template=CHAT_TEMPLATE)
