"""Start-up messages of the libraries under DiffSynth that tell a quant_guard user nothing they
can act on. Left alone they print on every start and land, as captured stderr, under the first
failure of a run; each is lowered to errors only, by logger name (no torch import here)."""

from __future__ import annotations

import logging

NOISY_LOGGERS = {
    # torchao registers its enums (KernelPreference, ScaleCalculationMode) with torch.compile the
    # deprecated way; torch warns once per enum at import
    "torch.utils._pytree": "torchao's enum registration is deprecated in torch",
    # on CPUs with AVX512-BF16, bitsandbytes tries to fetch an optional NF4 kernel from a model
    # hub (never reachable for the gate) and falls back to its own
    "bitsandbytes.backends.cpu.ops": "bitsandbytes' optional hub kernel for NF4 on CPU",
}


def quiet_library_noise() -> None:
    """Show only errors from the loggers in ``NOISY_LOGGERS``; call before torch is imported."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
