"""Write a pre-quantized DiT file: every floating tensor of a safetensors checkpoint stored in
float8. This is the same cast DiffSynth applies on load under the float8 scheme, done ahead of
time so the file itself is half the size and can be shipped and tested as the candidate."""

from __future__ import annotations

from pathlib import Path

from quant_guard.atomic import atomic_path
from quant_guard.checkpoints import CheckpointError, file_sha256

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

