"""Before any test runs: can each selected quantization scheme run here?

A scheme whose backend is not installed, or whose kernels need another device (torchao's
``torchao_fp8_w8a8`` needs CUDA compute capability 8.9, ``torchao_int4_w4a16`` the ``mslk``
package), would otherwise fail every one of its tests after the pipeline load. The probe builds
the method's ``QuantizeConfig`` (which checks the backend) and quantizes and runs one small
linear layer on the checkpoint's device, in milliseconds; the plugin turns a problem into a usage
error at collection that names the scheme and what it needs.
"""

from __future__ import annotations

import contextlib
import io

from quant_guard.config.schemes import SCHEMES_EXTRA, Scheme

# The backends the project's "schemes" extra installs (pyproject.toml).
EXTRA_BACKENDS = ("torchao", "bitsandbytes")
_PROBE_FEATURES = 256  # a multiple of every block size the methods use


def probe(scheme: Scheme, device: str) -> str | None:
    """Why ``scheme`` cannot run on ``device``, or None when it can (storage schemes always can):
    the method of each component it quantizes is tried."""
    for name in scheme.targets:
        why = _probe_method(scheme.only(name), device)
        if why:
            return why if scheme.others == () else f"{name}: {why}"
    return None


def _probe_method(scheme: Scheme, device: str) -> str | None:
    if scheme.quantization is None:
        return None
    from diffsynth.core.quant import QUANT_METHODS, backends

    method = scheme.quantization.method
    backends.load_all_backends()
    if method not in QUANT_METHODS:
        return f"unknown quantization method {method!r}; diffsynth.core.quant knows: {', '.join(sorted(QUANT_METHODS))}"
    backend = QUANT_METHODS[method].backend
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            config = scheme.quantization.build()
    except ImportError as exc:
        hint = f"; {SCHEMES_EXTRA} installs it" if backend in EXTRA_BACKENDS else ""
        return f"its backend {backend} is not installed ({exc}){hint}"
    except Exception as exc:  # noqa: BLE001 - a bad backend_config_kwargs, an unknown option
        return f"DiffSynth refuses its settings: {type(exc).__name__}: {exc}"
    if scheme.quantization.load_prequantized:
        return None  # nothing to quantize: the file holds the weights
    return _trial(config, device, method)


def _trial(config: object, device: str, method: str) -> str | None:
    import torch

    layer = torch.nn.Sequential(torch.nn.Linear(_PROBE_FEATURES, _PROBE_FEATURES, dtype=torch.bfloat16))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            layer = layer.to(device)
            config.quantize_model(layer, compute_device=device, model_device=device)  # type: ignore[attr-defined]
            config.dequantize_model(layer, compute_dtype=torch.bfloat16)  # type: ignore[attr-defined]
            with torch.no_grad():
                layer(torch.ones(2, _PROBE_FEATURES, dtype=torch.bfloat16, device=device))
    except Exception as exc:  # noqa: BLE001 - whatever the backend raises is the answer
        first = str(exc).splitlines()[0] if str(exc) else ""
        return f"{method} cannot run on {device}: {type(exc).__name__}: {first}"
    return None
