"""quant_guard: a pytest plugin that guards quantized diffusion checkpoints against visual regressions.

Importing this package is cheap on purpose: pytest imports the plugin on every run, so torch,
diffsynth, lpips and PIL are only imported inside the functions that need them.
"""

__version__ = "0.1.0"
