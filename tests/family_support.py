"""Support for the tiny family tests (tests/model/test_tiny_qwen_image.py, test_tiny_z_image.py,
test_tiny_flux2.py): build an embedded tiny's pipeline the product's way
(``model.pipelines.build_pipeline``: the memory plan's float8 storage, a ``diffsynth.core.quant``
method, then the scheme check), render one image, damage its DiT with ``quant-guard degrade``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant_guard.config.schemes import Quantization, Scheme

if TYPE_CHECKING:
    import numpy as np

PROMPT = "a red circle on a blue background at the top left"
INT8 = Scheme("torchao_int8_w8a16", quantization=Quantization("torchao_int8_w8a16"))


@dataclass(frozen=True)
class FamilyLimits:
    """What the shared render tests (``family_render_tests``) need of one tiny family."""

    embedded: str  # the embedded tiny's name ("tiny-qwen-image"): its family and files
    float8_lpips_max: float  # float8 (and int8) against bf16, measured on the tiny (FACTS.md)
    float8_psnr_min: float
    damage_noise: float  # degrade's noise fraction on block 0
    damage_over_float8: float  # damaged LPIPS at least this many times float8's
SIZE = 64
STEPS = 3


def build(embedded: str, files: Any, scheme: Scheme, *, dit: Path | None = None) -> Any:
    """``build_pipeline`` of the embedded tiny ``embedded`` from ``files``, the DiT (``dit``, a
    damaged or pre-quantized file, or the checkpoint's) in ``scheme``, on the CPU; the scheme check
    has run."""
    from quant_guard.model.checkpoints import tiny_resolved
    from quant_guard.model.pipelines import build_pipeline

    own = {scheme.id: dit} if dit is not None else None
    return build_pipeline(tiny_resolved(files, own, embedded=embedded), scheme, "cpu")


def render(pipe: Any, *, seed: int = 0, steps: int = STEPS, **kwargs: Any) -> np.ndarray:
    """One 64x64 image of ``PROMPT`` as a uint8 HxWx3 array."""
    import numpy as np

    image = pipe(PROMPT, seed=seed, height=SIZE, width=SIZE, num_inference_steps=steps,
                 progress_bar_cmd=lambda steps: steps, **kwargs)
    return np.asarray(image.convert("RGB"))


def damaged_dit(embedded: str, source: Path, dest: Path, *, kind: str = "noise", strength: float | None = None) -> Path:
    """A copy of the DiT file with ``quant-guard degrade``'s ``kind`` applied to block 0 of the
    embedded tiny's family."""
    from safetensors.torch import load_file, save_file

    from quant_guard.model.families import embedded_family
    from quant_guard.tools.degrade import degrade

    state = load_file(str(source))
    save_file(degrade(state, kind, strength=strength, family=embedded_family(embedded)), str(dest))
    return dest


def count_loads(monkeypatch: Any, embedded: str) -> Counter[str]:
    """Component name -> how many times DiffSynth loads its file from now on (builds and swaps
    alike), for the embedded tiny ``embedded``'s pipeline class (``monkeypatch`` undoes it)."""
    from quant_guard.model.families import embedded_family

    family = embedded_family(embedded)
    assert family.tiny is not None
    by_path = {str(path): name for name, path in family.tiny.files().items()}
    pipeline = family.pipeline_type()
    counter: Counter[str] = Counter()
    real = pipeline.download_and_load_models

    def counting(self: Any, model_configs: Any = (), vram_limit: Any = None) -> Any:
        counter.update(by_path[str(c.path)] for c in model_configs)
        return real(self, model_configs, vram_limit)

    monkeypatch.setattr(pipeline, "download_and_load_models", counting)
    return counter


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    import hashlib

    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
