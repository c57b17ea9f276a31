"""Checkpoints as concrete local files: the embedded tiny one is built into the cache, a
``model_id`` component is fetched by DiffSynth, a path is checked. Also the file hashes that
goldens record, computed once per file and reused while its size and mtime are unchanged
(a real DiT is 12-24 GB)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quant_guard.store.atomic import atomic_write
from quant_guard.config.project import CheckpointSpec, ComponentSource
from quant_guard.model.families import embedded_family, family_of
from quant_guard.store.paths import cache_dir

if TYPE_CHECKING:
    from collections.abc import Mapping

    from quant_guard.config.schemes import Scheme
    from quant_guard.model.tiny.build import TinyCheckpointFiles, TinyFamilyFiles

PICKLE_SUFFIXES = (".ckpt", ".pth", ".pt", ".bin", ".pkl", ".pickle")


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, unreadable or not what the architecture expects."""


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """Local paths of every component (a list when a component spans several files)."""

    id: str
    files: dict[str, Path | list[Path]]  # component name -> file(s) or folder
    scheme_dits: dict[str, Path]  # scheme id -> its pre-quantized DiT file
    t5_sequence_length: int
    # scheme id -> why its own DiT file is unusable: only that scheme's tests fail, the reference
    # and the other schemes still run (a typo in one path must not take down the checkpoint)
    scheme_problems: dict[str, str] = field(default_factory=dict)
    family: str | None = None  # its model family's name (None: the default family)
    # scheme id -> component -> its own file, for the components other than the DiT a scheme gives
    # a file of their own (``components = { text_encoder_t5 = { ..., file = ... } }``)
    scheme_files: dict[str, dict[str, Path]] = field(default_factory=dict)

    def weight_files(self) -> list[Path]:
        out: list[Path] = []
        for name in family_of(self).model_components:
            value = self.files[name]
            out.extend(value if isinstance(value, list) else [value])
        return out

    def scheme_dit(self, scheme_id: str) -> Path | None:
        """The scheme's own DiT file (None: it uses the checkpoint's bf16 DiT); a
        ``CheckpointError`` when that file was found unusable."""
        if scheme_id in self.scheme_problems:
            raise CheckpointError(self.scheme_problems[scheme_id])
        return self.scheme_dits.get(scheme_id)

    def scheme_file(self, scheme_id: str, component: str) -> Path | None:
        """The scheme's own file of ``component`` (the DiT's: ``scheme_dit``); None: the checkpoint's."""
        if component == "dit":
            return self.scheme_dit(scheme_id)
        if scheme_id in self.scheme_problems:
            raise CheckpointError(self.scheme_problems[scheme_id])
        return self.scheme_files.get(scheme_id, {}).get(component)


def tiny_resolved(tiny: TinyCheckpointFiles | TinyFamilyFiles, scheme_dits: Mapping[str, Path] | None = None, *,
                  vae: Path | None = None, embedded: str = "tiny",
                  scheme_files: Mapping[str, Mapping[str, Path]] | None = None) -> ResolvedCheckpoint:
    """An embedded tiny checkpoint's files as ``model.pipelines.build_pipeline`` takes a checkpoint
    (``embedded`` names which, and so its family): ``scheme_dits`` gives schemes a DiT file of their
    own (pre-quantized or damaged, by scheme id), ``vae`` replaces the VAE (the benchmarks' decoder
    damage)."""
    from quant_guard.config.families import EMBEDDED

    files: dict[str, Path | list[Path]] = dict(tiny.components())
    if vae is not None:
        files["vae"] = vae
    own = EMBEDDED[embedded]
    return ResolvedCheckpoint(embedded, files, dict(scheme_dits or {}), own.t5_sequence_length or 512,
                              family=own.family,
                              scheme_files={k: dict(v) for k, v in (scheme_files or {}).items()})


def resolve_checkpoint(spec: CheckpointSpec) -> ResolvedCheckpoint:
    family = family_of(spec)
    if spec.embedded:
        tiny = embedded_family(spec.embedded).tiny
        assert tiny is not None
        files: dict[str, Path | list[Path]] = tiny.files()
    else:
        files = {name: _local(spec.components[name], f"{spec.id}.{name}") for name in family.component_names}
    for name, value in files.items():
        for path in value if isinstance(value, list) else [value]:
            what = f"checkpoint {spec.id!r} component {name}"
            header = _check_file(path, what, folder=name in family.tokenizer_names)
            if name == "dit":
                _refuse_float8_reference(header, path, what)
    scheme_dits: dict[str, Path] = {}
    scheme_files: dict[str, dict[str, Path]] = {}
    problems: dict[str, str] = {}
    for scheme in spec.schemes:
        try:
            if scheme.dit is not None:
                scheme_dits[scheme.id] = scheme_dit_file(spec, scheme)
            for name, _ in scheme.others:
                if scheme.component(name).file is not None:
                    scheme_files.setdefault(scheme.id, {})[name] = scheme_dit_file(spec, scheme.only(name), name)
        except CheckpointError as exc:
            problems[scheme.id] = str(exc)
    return ResolvedCheckpoint(spec.id, files, scheme_dits, spec.t5_sequence_length, problems, family=spec.family,
                              scheme_files=scheme_files)


def scheme_dit_file(spec: CheckpointSpec, scheme: Scheme, component: str = "dit") -> Path:
    """A scheme's own DiT file (or, with ``component`` and ``scheme = scheme.only(component)``,
    another component's), fetched (a ``model_id`` source) and checked: it exists, is a whole
    safetensors file, and a storage scheme's holds that float8 dtype."""
    assert scheme.dit is not None
    local = _local(scheme.dit, f"{spec.id}.{scheme.id}.{component}")
    what = f"checkpoint {spec.id!r} scheme {scheme.id!r} {'DiT' if component == 'dit' else component}"
    if isinstance(local, list):
        raise CheckpointError(f"{what} must be one file, got {local}")
    header = _check_file(local, what, folder=False)
    if scheme.quantization is None:
        _check_float8_file(header, local, what, scheme.storage_dtype)
    return local


def _local(source: ComponentSource, what: str) -> Path | list[Path]:
    if source.path is not None:
        return source.path
    from diffsynth.core import ModelConfig

    config = ModelConfig(model_id=source.model_id, origin_file_pattern=source.origin_file_pattern)
    try:
        config.download_if_necessary()
    except Exception as exc:  # DiffSynth raises whatever its hub client raises
        raise CheckpointError(f"{what}: could not fetch {source.describe()}: {exc}") from exc
    paths = config.path if isinstance(config.path, list) else [config.path]
    if not paths:
        raise CheckpointError(f"{what}: no file matches {source.describe()} (DIFFSYNTH_SKIP_DOWNLOAD set?)")
    # DiffSynth globs the pattern; the file system decides that order. Sorted, the shards load
    # and hash the same way everywhere.
    return sorted(Path(p) for p in paths) if len(paths) > 1 else Path(paths[0])


def _check_file(path: Path, what: str, *, folder: bool) -> dict[str, Any]:
    """Check a component file (or tokenizer folder); the safetensors header of a file ({} for a folder)."""
    if folder:
        if not path.is_dir():
            raise CheckpointError(f"{what}: tokenizer folder {path} does not exist")
        return {}
    if not path.exists():
        raise CheckpointError(f"{what}: file {path} does not exist")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{what}: {path} is a pickle checkpoint; quant_guard loads only .safetensors "
                              "(pickles can run code when loaded). Convert it to safetensors first.")
    if path.suffix.lower() != ".safetensors":
        raise CheckpointError(f"{what}: {path} is not a .safetensors file")
    if not path.is_file():
        raise CheckpointError(f"{what}: {path} is not a file")
    return _check_safetensors_layout(path, what)


# safetensors' own limit on the JSON header
_MAX_HEADER_BYTES = 100_000_000


def _check_safetensors_layout(path: Path, what: str) -> dict[str, Any]:
    """Read only the header of a safetensors file (8-byte little-endian length, JSON table of
    tensors with their byte ranges) and check that the file holds every byte it declares, so a
    truncated download or a file that is not safetensors at all is named before loading."""
    size = path.stat().st_size
    expected = ("expected a safetensors file: an 8-byte header length, a JSON header, then the tensor data")
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{what}: {path} is truncated: {size} bytes, too short for a safetensors header")
        header_len = int.from_bytes(prefix, "little")
        if header_len > _MAX_HEADER_BYTES:
            raise CheckpointError(f"{what}: {path} is not a safetensors file (header length {header_len}); {expected}")
        if 8 + header_len > size:
            raise CheckpointError(f"{what}: {path} is truncated: its header needs {header_len} bytes, the file has "
                                  f"{size - 8} after the length; download or copy it again")
        raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        ends = [int(entry["data_offsets"][1]) for name, entry in header.items() if name != "__metadata__"]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise CheckpointError(f"{what}: {path} is not a safetensors file (bad header: {exc}); {expected}") from None
    data = size - 8 - header_len
    needed = max(ends, default=0)
    if needed > data:
        raise CheckpointError(f"{what}: {path} is truncated: its header declares {needed} bytes of tensor data, the "
                              f"file holds {data}; download or copy it again")
    return header


def _refuse_float8_reference(header: dict[str, Any], path: Path, what: str) -> None:
    """The reference DiT renders the bf16 goldens; one stored in float8 would make them upcast
    float8 images, and every float8 candidate would match them trivially."""
    dtypes = Counter(str(entry.get("dtype")) for name, entry in header.items()
                     if name != "__metadata__" and isinstance(entry, dict))
    float8 = {dtype: n for dtype, n in dtypes.items() if dtype.startswith("F8")}
    if float8:
        found = ", ".join(f"{n} {dtype}" for dtype, n in sorted(float8.items()))
        raise CheckpointError(
            f"{what}: {path} is stored in float8 ({found} of {sum(dtypes.values())} tensors); the reference DiT "
            "must be the bf16 (or fp16/fp32) original, which renders the goldens. Give this file as the candidate "
            "instead: candidate = { dit = \"...\" }")


# safetensors' names of the storage dtypes
_SAFETENSORS_FLOAT8 = {"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def _check_float8_file(header: dict[str, Any], path: Path, what: str, storage: str) -> None:
    """A float8 DiT file must hold the scheme's float8 format: DiffSynth would silently re-cast an
    e5m2 file to e4m3fn while the report said e4m3fn. (A bf16 file is cast on load, as the
    reference DiT is.)"""
    found = Counter(_SAFETENSORS_FLOAT8.get(str(entry.get("dtype")), str(entry.get("dtype")))
                    for name, entry in header.items() if name != "__metadata__" and isinstance(entry, dict))
    float8 = {dtype: n for dtype, n in found.items() if dtype in _SAFETENSORS_FLOAT8.values()}
    if float8 and set(float8) != {storage}:
        listed = ", ".join(f"{n} {dtype}" for dtype, n in sorted(found.items()))
        hint = (f"declare its scheme with storage = \"{next(iter(float8))}\"" if len(float8) == 1
                else "a float8 DiT file holds its linear weights in one float8 dtype")
        raise CheckpointError(f"{what}: {path} is not a {storage} file (tensors: {listed}); {hint}")


# ---- file hashes ---------------------------------------------------------------------------

def _hash_cache_file() -> Path:
    return cache_dir() / "file-hashes.json"


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (absolute path, size, mtime_ns)."""
    path = path.resolve()
    stat = path.stat()
    key = str(path)
    cache = _read_hash_cache()
    entry = cache.get(key)
    if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return str(entry["sha256"])
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(16 * 2**20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    cache = _read_hash_cache()  # re-read: another process may have added entries meanwhile
    cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": value}
    _write_hash_cache(cache)
    return value


def folder_sha256(path: Path) -> str:
    """Hash of a tokenizer folder: names and contents of its files."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + file_sha256(file).encode())
    return digest.hexdigest()


def checkpoint_hashes(resolved: ResolvedCheckpoint) -> dict[str, str]:
    """Component name -> sha256, the identity a golden records."""
    out: dict[str, str] = {}
    family = family_of(resolved)
    for name in family.component_names:
        value = resolved.files[name]
        if name in family.tokenizer_names:
            out[name] = folder_sha256(value)  # type: ignore[arg-type]
        elif isinstance(value, list):
            out[name] = hashlib.sha256("".join(file_sha256(p) for p in sorted(value)).encode()).hexdigest()
        else:
            out[name] = file_sha256(value)
    return out


def _read_hash_cache() -> dict[str, dict[str, object]]:
    try:
        data = json.loads(_hash_cache_file().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # a missing or damaged cache only costs a re-hash


def _write_hash_cache(cache: dict[str, dict[str, object]]) -> None:
    target = _hash_cache_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, json.dumps(cache, indent=1, sort_keys=True).encode("utf-8"))
