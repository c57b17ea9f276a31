"""Bad input and faults: pickle checkpoints (``.ckpt``, ``.pth``, ``.bin``, ``.pt``)
are refused by name and never unpickled, neither by the plugin nor by its CLI; a pickle named
``.safetensors`` is refused by its header; and no code in the package can unpickle freely
(LPIPS weight conversion uses an allow-list, tested in test_lpips_weights.py).
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

from helpers import replace_file, spec_for
from quant_guard.model.checkpoints import CheckpointError, resolve_checkpoint

PACKAGE = Path(__file__).resolve().parents[2] / "quant_guard"


class _WritesMarker:
    """Unpickling this creates a file: proof that something unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({"state_dict": _WritesMarker(marker)}, protocol=4)


# ---- pickle checkpoints: refused, never unpickled ---------------------------------------------

@pytest.mark.parametrize("suffix", [".ckpt", ".pth", ".bin", ".pt"])
@pytest.mark.parametrize("slot", ["dit", "text_encoder_t5", "candidate"])
def test_pickle_checkpoint_is_refused_unopened(tiny_files: dict[str, Path], tmp_path: Path,
                                               suffix: str, slot: str) -> None:
    """A pickle checkpoint: refused by name, and the pickle is never loaded (unpickling
    this one would create a file)."""
    marker = tmp_path / "unpickled"
    if slot == "candidate":
        bad = tmp_path / f"dit{suffix}"
        bad.write_bytes(evil_pickle(marker))
        spec, what = spec_for(tiny_files, candidate=bad), "scheme 'float8_e4m3fn' DiT"
    else:
        bad = replace_file(tiny_files, slot, evil_pickle(marker), suffix)
        spec, what = spec_for(tiny_files), f"component {slot}"
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint(spec).scheme_dit(spec.schemes[0].id)  # a scheme's file fails that scheme's tests
    assert str(info.value) == (f"checkpoint 'broken' {what}: {bad} is a pickle checkpoint; quant_guard loads only "
                               ".safetensors (pickles can run code when loaded). Convert it to safetensors first.")
    assert not marker.exists()


@pytest.mark.parametrize("command", [
    "resolve", "quantize",
    "degrade",
])
def test_pickle_named_safetensors_is_not_unpickled(tiny_files: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str], command: str) -> None:
    """A pickle checkpoint, disguised as .safetensors: refused with the file named (by its
    header, before any loader sees it), and never unpickled by quant_guard or its CLI."""
    from quant_guard.cli import main as cli_main

    marker = tmp_path / "unpickled"
    bad = replace_file(tiny_files, "dit", evil_pickle(marker))
    if command == "resolve":
        with pytest.raises(CheckpointError, match=f"{bad} is not a safetensors file"):
            resolve_checkpoint(spec_for(tiny_files))
    else:
        extra = ["--kind", "noise"] if command == "degrade" else []
        try:
            assert cli_main([command, str(bad), str(tmp_path / "out.safetensors"), *extra]) == 1
            assert f"error: {bad}" in capsys.readouterr().err
        finally:
            assert not marker.exists()
    assert not marker.exists()


@pytest.mark.parametrize("command", ["quantize", "degrade"])
def test_cli_refuses_pickle_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    """A pickle checkpoint: the CLI's file commands read only .safetensors."""
    from quant_guard.cli import main as cli_main

    marker = tmp_path / "unpickled"
    source = tmp_path / "dit.ckpt"
    source.write_bytes(evil_pickle(marker))
    extra = ["--kind", "noise"] if command == "degrade" else []
    assert cli_main([command, str(source), str(tmp_path / "out.safetensors"), *extra]) == 1
    assert f"error: {source}: only .safetensors files are read (no pickles)" in capsys.readouterr().err
    assert not marker.exists()


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _unsafe_loads(tree: ast.AST) -> list[str]:
    """Calls that can unpickle arbitrary data: pickle.load(s)/Unpickler, torch.load without
    weights_only=True, numpy.load with allow_pickle=True, dill/joblib/cloudpickle loads."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        if name in {"pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "dill.loads", "joblib.load",
                    "cloudpickle.load", "cloudpickle.loads", "torch.serialization.load", "_pickle.loads"}:
            found.append(name)
        elif name == "torch.load" and not _is_true(keywords.get("weights_only")):
            found.append("torch.load without weights_only=True")
        elif name in {"np.load", "numpy.load"} and "allow_pickle" in keywords:
            found.append(f"{name}(allow_pickle=...)")
    return found


def test_nothing_in_quant_guard_unpickles_untrusted_data() -> None:
    """A pickle checkpoint: no code path in the package unpickles freely. The only
    unpickler is lpips_weights' allow-list (numpy arrays only; tested in test_lpips_weights.py)."""
    problems = {}
    for file in sorted(PACKAGE.rglob("*.py")):
        found = _unsafe_loads(ast.parse(file.read_text(encoding="utf-8")))
        if found:
            problems[file.relative_to(PACKAGE).as_posix()] = found
    assert problems == {}
    allow_list = ast.parse((PACKAGE / "judge" / "lpips_weights.py").read_text(encoding="utf-8"))
    unpicklers = [n for n in ast.walk(allow_list) if isinstance(n, ast.ClassDef)
                  and any(ast.unparse(b) == "pickle.Unpickler" for b in n.bases)]
    assert [c.name for c in unpicklers] == ["_NumpyOnlyUnpickler"]
    assert "find_class" in {f.name for f in unpicklers[0].body if isinstance(f, ast.FunctionDef)}
    assert _unsafe_loads(ast.parse("torch.load(p)\npickle.loads(b)\nnp.load(p, allow_pickle=True)")) == [
        "torch.load without weights_only=True", "pickle.loads", "np.load(allow_pickle=...)"]
