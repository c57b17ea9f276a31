"""The settings the embedded ``tiny`` checkpoint was trained and measured with: the one source
for them. Standard library only, so the configuration can use them at plugin import time."""

from __future__ import annotations

IMAGE_SIZE = 64
# The pipeline must be called with the T5 length the model was trained with (the T5 encoder
# sees the padding: another length gives other embeddings). 16 holds every caption (<= 12 tokens).
T5_SEQUENCE_LENGTH = 16
RECOMMENDED_STEPS = 8
EMBEDDED_GUIDANCE = 3.5  # the guidance value the DiT is trained with
