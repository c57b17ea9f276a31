"""Deterministic kernels for a checkpoint with ``deterministic = true``: what diffusers'
``enable_full_determinism`` applies, before the pipelines are built.

The settings are process-wide (torch has no per-pipeline switch); the fingerprint reads them
back as they are when a golden is written, so a golden records whether it was made with them.
"""

from __future__ import annotations

import os

# cuBLAS needs a fixed workspace to pick deterministic GEMM algorithms; it reads the variable
# when its handle is created, i.e. before the first matmul on the device.
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


def enable_full_determinism() -> None:
    import torch

    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE_CONFIG
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
