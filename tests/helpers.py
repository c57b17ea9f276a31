"""Constants and plain functions shared by the plugin's own tests (fixtures live in
``conftest.py``): the throw-away project's configuration and visual test, stand-in goldens, and
the tiny checkpoint given as component files."""

from __future__ import annotations

import hashlib
import shutil
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from quant_guard.config.project import CheckpointSpec, ComponentSource, RenderDefaults
from quant_guard.store.golden import GoldenStore
from quant_guard.store.paths import cache_dir
from quant_guard.config.schemes import DEFAULT_SCHEMES, FLOAT8_E4M3FN
from quant_guard.config.thresholds import ThresholdOverrides
from quant_guard.config.tiny_settings import T5_SEQUENCE_LENGTH

if TYPE_CHECKING:
    import numpy as np

    from quant_guard.run.cases import CaseResult

# pytester points HOME at a temporary folder; the inner runs must still find the tiny checkpoint
# and the LPIPS weights in the real cache instead of rebuilding (or missing) them.
REAL_CACHE = cache_dir()
REPO_GOLDEN = Path(__file__).resolve().parents[1] / "golden"

VISUAL_TEST = '''
def test_visual(qg_case, qg_gate):
    qg_gate.check(qg_case)
'''

# A case no candidate can pass (PSNR >= 150 dB): a deterministic failure beside passing cases.
STRICT_CASE = '''
[[tool.quant_guard.cases]]
id = "strict"
prompt = "a yellow triangle on a black background"
seeds = [0]
checkpoints = ["tiny"]
thresholds = { psnr = 150.0 }
'''

def project_toml(*, steps: int = 4, seeds: str = "[0]", extra_checkpoint: str = "", extra_case: str = "",
                 checkpoint_extra: str = "") -> str:
    """A [tool.quant_guard] configuration with one tiny checkpoint and one case."""
    return textwrap.dedent(f"""
        [tool.quant_guard]
        golden_dir = "golden"
        report_dir = "qg-report"

        [[tool.quant_guard.checkpoints]]
        id = "tiny"
        embedded = "tiny"
        device = "cpu"
        render = {{ steps = {steps}, size = "64x64" }}
        {checkpoint_extra}
        {extra_checkpoint}

        [[tool.quant_guard.cases]]
        id = "red-circle"
        prompt = "a red circle on a blue background at the top left"
        seeds = {seeds}
        checkpoints = ["tiny"]
        {extra_case}
        """)


def make_goldens(text: str, root: Path) -> list[CaseResult]:
    """The goldens of the configuration ``text`` (a pyproject.toml, its golden_dir relative to
    ``root``), made in this process by the gate's own update path (what ``--update-golden``
    writes, without a pytest run and its report); the result of every case."""
    import tomllib

    import pytest

    from quant_guard.config.project import parse_config
    from quant_guard.run.cases import TestOverrides, expand_cases
    from quant_guard.run.gate import run_case
    from quant_guard.run.session import QuantGuardSession, RunSettings
    from quant_guard.store.paths import CACHE_ENV

    config = parse_config(tomllib.loads(text)["tool"]["quant_guard"], file=root / "pyproject.toml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(REAL_CACHE))
        session = QuantGuardSession(config, RunSettings(update_golden=True))
        try:
            return [run_case(session, vc, TestOverrides()) for vc in expand_cases(config)]
        finally:
            session.release_pipelines()


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path (names, contents, nothing else)."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def gradient(width: int = 64, height: int = 64) -> np.ndarray:
    """A uint8 RGB image with every pixel level used: a stand-in golden."""
    import numpy as np

    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 4 % 256, y * 4 % 256, (x + y) * 2 % 256], axis=2).astype(np.uint8)


# Thresholds every render meets: for tests about something other than image quality that render
# the tiny checkpoint far from its measured setting (a few steps), where its own limits would fail.
ANY_IMAGE = ThresholdOverrides(lpips=2.0, ssim=-1.0, psnr=0.0, colour_delta_e_p95=200.0)


def install_goldens(baseline_dir: Path, project: Path) -> GoldenStore:
    """Copy baseline goldens into a pytester project; the store of the copy."""
    shutil.copytree(baseline_dir, project / "golden", dirs_exist_ok=True)
    return GoldenStore(project / "golden")


def spec_for(files: dict[str, Path], *, candidate: Path | None = None, checkpoint_id: str = "broken") -> CheckpointSpec:
    """A checkpoint named ``broken`` given by these component files (and candidate DiT)."""
    return CheckpointSpec(id=checkpoint_id, embedded=None,
                          components={k: ComponentSource(path=v) for k, v in files.items()},
                          schemes=(replace(FLOAT8_E4M3FN, dit=ComponentSource(path=candidate)),) if candidate
                          else DEFAULT_SCHEMES, device="cpu",
                          t5_sequence_length=T5_SEQUENCE_LENGTH, render=RenderDefaults(steps=4, width=64, height=64))


def replace_file(files: dict[str, Path], name: str, data: bytes, suffix: str = ".safetensors") -> Path:
    """Put ``data`` where component ``name`` was (a new file, the cached original untouched)."""
    files[name].unlink()
    files[name] = files[name].with_suffix(suffix)
    files[name].write_bytes(data)
    return files[name]


def degraded_dit(path: Path, kind: str, strength: float, *, seed: int = 0) -> Path:
    """Write the tiny checkpoint's DiT damaged by ``quant_guard.tools.degrade`` (kind, strength) to
    ``path``: a candidate DiT file for ``candidate = { dit = ... }``."""
    from safetensors.torch import load_file, save_file

    from quant_guard.tools.degrade import degrade
    from quant_guard.model.tiny.build import ensure_tiny_checkpoint

    save_file(degrade(load_file(str(ensure_tiny_checkpoint().dit)), kind, strength=strength, seed=seed), str(path))
    return path


def fragile_dit(source: Path, target: Path, *, block: int = 0, factor: float = 64.0) -> Path:
    """A copy of a Flux DiT whose joint block ``block`` computes the same in bf16 but is fragile
    under blockwise 4-bit quantization (NF4 scales each run of 64 weights by its largest).

    In every 64-wide run of input channels, one channel of the attention qkv and feed-forward
    input projections (both streams) is multiplied by ``factor``, and the modulation that feeds
    them (AdaLayerNorm's shift and 1 + scale for that channel) divided by it: the product is
    unchanged, but each run of 64 weights now holds an outlier ``factor`` times its size, so the
    other 63 round to the few NF4 levels near zero."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(source))
    prefix = f"blocks.{block}."
    for stream in ("a", "b"):
        norm_w, norm_b = f"{prefix}norm1_{stream}.linear.weight", f"{prefix}norm1_{stream}.linear.bias"
        weight, bias = state[norm_w].float(), state[norm_b].float()
        dim = weight.shape[1]
        channels = torch.arange(0, dim, 64)
        # AdaLayerNorm's chunks: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp
        for projection, shift_chunk, scale_chunk in ((f"{prefix}attn.{stream}_to_qkv.weight", 0, 1),
                                                     (f"{prefix}ff_{stream}.0.weight", 3, 4)):
            proj = state[projection].float()
            proj[:, channels] *= factor
            state[projection] = proj.to(state[projection].dtype)
            shift, scale = channels + shift_chunk * dim, channels + scale_chunk * dim
            weight[shift] /= factor
            bias[shift] /= factor
            weight[scale] /= factor
            bias[scale] = (bias[scale] + 1) / factor - 1  # 1 + scale' = (1 + scale) / factor
        state[norm_w], state[norm_b] = weight.to(state[norm_w].dtype), bias.to(state[norm_b].dtype)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(target))
    return target


def components_toml(files: dict[str, Path]) -> str:
    """``[tool.quant_guard.checkpoints.components]`` lines for a checkpoint given by these files."""
    return "\n".join(f'{name} = "{path.as_posix()}"' for name, path in files.items())


def sparse_safetensors(path: Path, tensors: dict[str, tuple[tuple[int, ...], object]]) -> None:
    """A bf16 safetensors file with this header (name -> (shape, dtype)) and a hole where the data
    would be (no disk used): what DiffSynth hashes to recognise a full-size file."""
    import json

    header: dict[str, object] = {}
    offset = 0
    for name, (shape, _dtype) in tensors.items():
        n = 1
        for d in shape:
            n *= d
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + 2 * n]}
        offset += 2 * n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + offset)


def sparse_safetensors_shards(folder: Path, name: str, tensors: dict[str, tuple[tuple[int, ...], object]],
                              limit: int = 8 * 2**30) -> list[Path]:
    """``sparse_safetensors`` in shards of at most ``limit`` bytes (``name-00001.safetensors``, ...),
    as a large released model is split: a reader maps one shard at a time."""
    groups: list[dict[str, tuple[tuple[int, ...], object]]] = [{}]
    size = 0
    for key, (shape, dtype) in tensors.items():
        n = 2
        for d in shape:
            n *= d
        if groups[-1] and size + n > limit:
            groups.append({})
            size = 0
        groups[-1][key] = (shape, dtype)
        size += n
    paths = [folder / f"{name}-{i + 1:05d}.safetensors" for i in range(len(groups))]
    for path, group in zip(paths, groups):
        sparse_safetensors(path, group)
    return paths
