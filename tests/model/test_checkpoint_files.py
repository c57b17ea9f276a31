"""Checkpoint files as the gate resolves them: shard order that does not depend on the file
system, and a reference DiT stored in float8 refused with the file and its dtype."""

from __future__ import annotations

import dataclasses
import glob
import shutil
from pathlib import Path

import pytest

from helpers import spec_for
from quant_guard.model.checkpoints import CheckpointError, ResolvedCheckpoint, checkpoint_hashes, resolve_checkpoint
from quant_guard.cli import main as cli_main
from quant_guard.config.project import ComponentSource
from quant_guard.config.schemes import Scheme
from quant_guard.store.paths import CACHE_ENV


SHARDS = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]


@pytest.fixture
def sharded_t5(tiny_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model folder as DiffSynth downloads it, with the T5 in three shard files (copies of
    safetensors files; only their names, order and hashes matter here)."""
    base = tmp_path / "models"
    folder = base / "org" / "flux" / "text_encoder_2"
    folder.mkdir(parents=True)
    for i, name in enumerate(SHARDS):
        source = (tiny_files["text_encoder_t5"], tiny_files["vae"], tiny_files["text_encoder_clip"])[i]
        shutil.copyfile(source, folder / name)
    monkeypatch.setenv("DIFFSYNTH_MODEL_BASE_PATH", str(base))
    monkeypatch.setenv("DIFFSYNTH_SKIP_DOWNLOAD", "True")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # hash cache of this test only
    return folder


@pytest.mark.parametrize("order", [SHARDS, SHARDS[::-1], [SHARDS[1], SHARDS[2], SHARDS[0]]])
def test_shards_come_back_sorted_whatever_the_file_system_order(
        tiny_files: dict[str, Path], sharded_t5: Path, monkeypatch: pytest.MonkeyPatch, order: list[str]) -> None:
    import diffsynth.core.loader.config as loader_config

    real_glob = glob.glob

    def file_system_order(pattern: str, **kwargs: object) -> list[str]:
        found = real_glob(pattern, **kwargs)  # type: ignore[arg-type]
        if pattern.endswith("*.safetensors") and len(found) == len(order):
            return [str(Path(pattern).parent / name) for name in order]
        return found

    monkeypatch.setattr(loader_config.glob, "glob", file_system_order)
    spec = spec_for(tiny_files)
    t5 = ComponentSource(model_id="org/flux", origin_file_pattern="text_encoder_2/*.safetensors")
    resolved = resolve_checkpoint(dataclasses.replace(spec, components={**spec.components, "text_encoder_t5": t5}))
    assert resolved.files["text_encoder_t5"] == [sharded_t5 / name for name in SHARDS]
    assert checkpoint_hashes(resolved)["text_encoder_t5"] == _reference_hash(tiny_files, sharded_t5)


def _reference_hash(tiny_files: dict[str, Path], folder: Path) -> str:
    files: dict[str, Path | list[Path]] = dict(tiny_files)
    files["text_encoder_t5"] = [folder / name for name in SHARDS]
    return checkpoint_hashes(ResolvedCheckpoint("x", files, {}, 8))["text_encoder_t5"]


def test_shard_hash_does_not_depend_on_the_list_order(tiny_files: dict[str, Path], sharded_t5: Path) -> None:
    shards = [sharded_t5 / name for name in SHARDS]
    hashes = set()
    for order in (shards, shards[::-1], shards[1:] + shards[:1]):
        files: dict[str, Path | list[Path]] = {**tiny_files, "text_encoder_t5": order}
        hashes.add(checkpoint_hashes(ResolvedCheckpoint("x", files, {}, 8))["text_encoder_t5"])
    assert len(hashes) == 1
    files = {**tiny_files, "text_encoder_t5": shards[:2]}  # a missing shard is another checkpoint
    assert checkpoint_hashes(ResolvedCheckpoint("x", files, {}, 8))["text_encoder_t5"] not in hashes


@pytest.mark.parametrize("dtype, header_name", [("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2")])
def test_float8_reference_dit_is_refused_with_file_and_dtype(tiny_files: dict[str, Path], tmp_path: Path,
                                                             dtype: str, header_name: str) -> None:
    fp8 = tmp_path / "dit-fp8.safetensors"
    assert cli_main(["quantize", str(tiny_files["dit"]), str(fp8), "--dtype", dtype]) == 0
    files = {**tiny_files, "dit": fp8}
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint(spec_for(files))
    message = str(info.value)
    assert message.startswith(f"checkpoint 'broken' component dit: {fp8} is stored in float8 (")
    assert f" {header_name} of " in message and "candidate = { dit" in message
    # the same file is fine as the candidate of its own float8 format, beside the bf16 reference
    scheme = Scheme(dtype, storage_dtype=dtype, dit=ComponentSource(path=fp8))
    assert resolve_checkpoint(dataclasses.replace(spec_for(tiny_files), schemes=(scheme,))).scheme_dits == {dtype: fp8}
