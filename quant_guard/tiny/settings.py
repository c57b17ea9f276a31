"""The settings the embedded ``tiny`` checkpoint was trained and measured with: the one source
for them. Standard library only, so the configuration can use them at plugin import time."""

from __future__ import annotations

IMAGE_SIZE = 64
# The pipeline must be called with the T5 length the model was trained with (the T5 encoder
# sees the padding: another length gives other embeddings). 16 holds every caption (<= 12 tokens).
T5_SEQUENCE_LENGTH = 16
RECOMMENDED_STEPS = 8
EMBEDDED_GUIDANCE = 3.5  # the guidance value the DiT is trained with

# What the tiny checkpoint's thresholds (EMBEDDED_THRESHOLDS in quant_guard/thresholds.py) were
# chosen from: per image, (LPIPS, SSIM, PSNR dB) against the bf16 render of the same seed, over
# 24 dataset (caption, seed) pairs (benchmarks/tiny_quality.py --seeds 24; the weights README has
# the whole table). Each threshold lies midway between the two on a log scale. The README, the
# weights README and degrade.py quote these numbers; tests/test_one_source.py checks the quotes.
WORST_HONEST_FLOAT8 = (0.0050, 0.9916, 39.0)  # the worst of float8_e4m3fn storage and an e5m2 file
MILDEST_DAMAGE = (0.0123, 0.9292, 28.7)  # one linear layer x2 (quant-guard degrade --kind scale)
