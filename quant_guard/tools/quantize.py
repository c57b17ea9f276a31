"""Write a pre-quantized DiT file: every floating tensor of a safetensors checkpoint stored in
float8. This is the same cast DiffSynth applies on load under the float8 scheme, done ahead of
time so the file itself is half the size and can be shipped and tested as the candidate."""

from __future__ import annotations

from pathlib import Path

from quant_guard.store.atomic import atomic_path
from quant_guard.model.checkpoints import CheckpointError, file_sha256

DTYPES = ("float8_e4m3fn", "float8_e5m2")


def quantize_file(source: Path, dest: Path, *, dtype: str = "float8_e4m3fn") -> dict[str, int]:
    """Cast ``source``'s floating tensors to ``dtype`` and write ``dest`` atomically.
    Returns {"tensors": n, "cast": m, "bytes_in": ..., "bytes_out": ...}."""
    import torch
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import save_file

    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if source.suffix != ".safetensors":
        raise CheckpointError(f"{source}: only .safetensors files are read (no pickles)")
    target = getattr(torch, dtype)
    tensors: dict[str, torch.Tensor] = {}
    cast = 0
    try:
        with safe_open(str(source), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            for name in f.keys():
                t = f.get_tensor(name)
                if t.is_floating_point() and t.dtype != target:
                    t, cast = t.to(target), cast + 1
                tensors[name] = t.contiguous()
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{source}: cannot read safetensors file ({exc}); is it truncated?") from None
    metadata.update({"quant_guard.dtype": dtype, "quant_guard.source_sha256": file_sha256(source)})
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return {"tensors": len(tensors), "cast": cast, "bytes_in": source.stat().st_size, "bytes_out": dest.stat().st_size}



def quantize_file_with_method(source: Path, dest: Path, *, method: str, device: str = "cpu") -> dict[str, int]:
    """Quantize ``source`` (a bf16 DiT DiffSynth recognises) with a ``diffsynth.core.quant`` method
    and write DiffSynth's pre-quantized file (``save_quantized_model``): the file a scheme
    ``{ method = ..., dit = "..." }`` loads with ``load_prequantized``."""
    import contextlib
    import io

    from diffsynth.core import ModelConfig
    from diffsynth.utils.quant.serialization import save_quantized_model

    from quant_guard.config.schemes import Quantization
    from quant_guard.model.families import families
    from quant_guard.model.pipelines import prepare_diffsynth

    if source.suffix != ".safetensors":
        raise CheckpointError(f"{source}: only .safetensors files are read (no pickles)")
    prepare_diffsynth()
    for family in families().values():  # any family's embedded tiny DiT must be known to DiffSynth's registry
        if family.tiny is not None:
            family.tiny.register_with_diffsynth()
    dest.parent.mkdir(parents=True, exist_ok=True)
    # DiffSynth hashes the written file back, choosing its reader by the suffix
    with atomic_path(dest, suffix=".tmp.safetensors") as tmp, contextlib.redirect_stdout(io.StringIO()):
        config = ModelConfig(path=str(source), skip_download=True, quantize=Quantization(method).build())
        save_quantized_model(config, str(tmp), device=device)
    return {"bytes_in": source.stat().st_size, "bytes_out": dest.stat().st_size}
