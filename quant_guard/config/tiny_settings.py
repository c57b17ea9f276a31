"""The settings the embedded ``tiny`` checkpoint was trained and measured with: the one source
for them. Standard library only, so the configuration can use them at plugin import time."""

from __future__ import annotations

IMAGE_SIZE = 64
# The pipeline must be called with the T5 length the model was trained with (the T5 encoder
# sees the padding: another length gives other embeddings). 16 holds every caption (<= 12 tokens).
T5_SEQUENCE_LENGTH = 16
RECOMMENDED_STEPS = 8
EMBEDDED_GUIDANCE = 3.5  # the guidance value the DiT is trained with

# What the tiny checkpoint's thresholds (EMBEDDED_THRESHOLDS in quant_guard/config/thresholds.py) were
# chosen from: per image, (LPIPS, SSIM, PSNR dB) against the bf16 render of the same seed, over
# 24 dataset (caption, seed) pairs (benchmarks/tiny_quality.py --seeds 24; the weights README has
# the whole table). Each threshold lies midway between the two on a log scale. The README, the
# weights README and degrade.py quote these numbers; tests/test_one_source.py checks the quotes.
WORST_HONEST_FLOAT8 = (0.0050, 0.9916, 39.0)  # the worst of float8_e4m3fn storage and an e5m2 file
MILDEST_DAMAGE = (0.0123, 0.9292, 28.7)  # one linear layer x2 (quant-guard degrade --kind scale)

# The same per quantization method of the tiny checkpoint's schemes (its pyproject.toml entry):
# (worst honest image, mildest damaged image), each damage kind applied to the bf16 DiT before the
# method quantizes it, over 8 dataset pairs (benchmarks/tiny_quality.py --seeds 8). The README's
# scheme table quotes them; tests/test_one_source.py checks it and the thresholds.
SCHEME_MEASUREMENTS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "torchao_int8_w8a16": ((0.0001, 0.9963, 52.9), (0.0984, 0.9021, 25.5)),
    "torchao_fp8_w8a16": ((0.0004, 0.9955, 48.0), (0.1150, 0.8997, 25.5)),
    "torchao_int8_w8a8": ((0.0003, 0.9961, 51.4), (0.0927, 0.9047, 25.7)),
    "bitsandbytes_nf4": ((0.0041, 0.9852, 36.4), (0.1251, 0.8944, 25.3)),
}


# The same per component kind of a scheme quantizing a text encoder or the VAE alone
# (benchmarks/tiny_text_encoder.py --pairs 16, 8 steps): the worst honest image, and the mildest
# image with the T5 damaged by ``text-encoder-noise`` at its default strength (0.75 of each weight's
# std on block 0 or 1) under the same kind (the T5 kinds) or either T5 kind (CLIP and the VAE: no
# damage of their own is measured). The README's component table quotes them;
# tests/config/test_component_thresholds.py checks it and the thresholds.
COMPONENT_MEASUREMENTS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "text_encoder_t5:float8_e4m3fn": ((0.0026, 0.9953, 42.2), (0.0439, 0.9227, 29.5)),
    "text_encoder_t5:torchao_int8_w8a16": ((0.0001, 0.9965, 52.7), (0.0376, 0.9255, 29.7)),
    "text_encoder_clip:float8_e4m3fn": ((0.0001, 0.9964, 52.7), (0.0376, 0.9255, 29.7)),
    "vae:float8_e4m3fn": ((0.0081, 0.9783, 37.2), (0.0376, 0.9255, 29.7)),
}


# What the float8 sharpness limit (TINY_SHARPNESS_MIN in quant_guard/config/thresholds.py) was chosen from
# (benchmarks/tiny_scorecard.py, 72 dataset pairs: --seeds 24, and --seeds 48 --pairs-seed 2): the
# lowest sharpness of honest float8, against its golden or the same golden with cross-CPU drift, and
# the highest of the softened float8 render (soften_image, 0.6 px). The limit is their geometric
# mean rounded down to 2 decimals: towards honest float8, whose drift across machines is the side
# a limit cannot see from one machine. The README quotes them; tests/test_one_source.py checks it.
SHARPNESS_WORST_HONEST = 0.925
SHARPNESS_MILDEST_SOFTEN = 0.853
