"""The quant-guard command line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from quant_guard.cli import main
from quant_guard.config.project import parse_scheme
from quant_guard.tools.degrade import COLOUR_CAST_CHANNEL, COLOUR_SHIFT_CHANNEL
from quant_guard.model.tiny.build import TinyCheckpointFiles
from quant_guard.model.checkpoints import tiny_resolved


def test_tiny_writes_a_checkpoint_diffsynth_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from quant_guard.config.schemes import FLOAT8_E4M3FN
    from quant_guard.model.pipelines import build_pipeline

    assert main(["tiny", str(tmp_path / "tiny")]) == 0
    files = TinyCheckpointFiles(tmp_path / "tiny")
    for path in (files.dit, files.text_encoder_clip, files.text_encoder_t5, files.vae):
        assert path.is_file() and all(t.dtype == torch.bfloat16 for t in load_file(str(path)).values())
    assert (files.tokenizer_clip / "tokenizer.json").is_file() and (files.tokenizer_t5 / "tokenizer.json").is_file()
    pipe = build_pipeline(tiny_resolved(files), FLOAT8_E4M3FN, "cpu")
    assert type(pipe.dit).__name__ == "TinyFluxDiT"
    assert main(["tiny", str(tmp_path / "tiny")]) == 2  # refuses to overwrite
    assert "exists and is not empty" in capsys.readouterr().err


def test_quantize_and_degrade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tiny", str(tmp_path / "t"), "--seeded"]) == 0
    dit = tmp_path / "t" / "dit.safetensors"
    assert main(["quantize", str(dit), str(tmp_path / "q.safetensors")]) == 0
    assert "tensors in float8_e4m3fn" in capsys.readouterr().out
    q = load_file(str(tmp_path / "q.safetensors"))
    assert {t.dtype for t in q.values()} == {torch.float8_e4m3fn}
    assert main(["degrade", str(dit), str(tmp_path / "d.safetensors"), "--kind", "zero-attn-out"]) == 0
    d = load_file(str(tmp_path / "d.safetensors"))
    assert torch.count_nonzero(d["blocks.0.attn.a_to_out.weight"]) == 0
    # the printed configuration line is a scheme entry the configuration accepts, naming the file
    printed = capsys.readouterr().out.splitlines()[-1]
    assert printed.startswith("use it as a candidate: schemes = [")
    entry = tomllib.loads(printed.split(": ", 1)[1].split(" (")[0])["schemes"][0]
    scheme = parse_scheme(entry, file=tmp_path / "pyproject.toml", where="tool.quant_guard.checkpoints[0]",
                          key="schemes[0]")
    assert scheme.dit is not None and scheme.dit.path == tmp_path / "d.safetensors"
    assert scheme.storage_dtype == "float8_e4m3fn"


def _degraded(tmp_path: Path, component: str, kind: str, strength: str) -> tuple[list[str], torch.Tensor]:
    """``quant-guard degrade`` on a fresh tiny checkpoint's ``component`` file: the keys it changed
    and the change of the first one."""
    assert main(["tiny", str(tmp_path / "t"), "--seeded"]) == 0
    source, damaged = tmp_path / "t" / f"{component}.safetensors", tmp_path / "d.safetensors"
    assert main(["degrade", str(source), str(damaged), "--kind", kind, "--strength", strength]) == 0
    before, after = load_file(str(source)), load_file(str(damaged))
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    return changed, after[changed[0]].float() - before[changed[0]].float()


def test_colour_cast_offsets_one_rgb_output_of_the_vae_decoder(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    changed, delta = _degraded(tmp_path, "vae", "colour-cast", "0.25")
    assert changed == ["decoder.conv_out.bias"]
    assert torch.allclose(delta[COLOUR_CAST_CHANNEL], torch.tensor(0.25), atol=0.01)
    assert torch.count_nonzero(delta) == 1
    # given the DiT instead: an error that says which file the kind needs
    dit = tmp_path / "t" / "dit.safetensors"
    assert main(["degrade", str(dit), str(tmp_path / "d2.safetensors"), "--kind", "colour-cast"]) == 1
    assert "give it the VAE file, not the DiT" in capsys.readouterr().err
    assert not (tmp_path / "d2.safetensors").exists()


def test_colour_shift_offsets_one_latent_channel_of_the_final_projection(tmp_path: Path) -> None:
    changed, delta = _degraded(tmp_path, "dit", "colour-shift", "1.5")
    assert changed == ["final_proj_out.bias"]
    delta = delta.view(-1, 4)  # latent channel x 2x2 patch
    assert torch.allclose(delta[COLOUR_SHIFT_CHANNEL], torch.full((4,), 1.5), atol=0.05)
    assert torch.count_nonzero(delta) == 4


def test_pickle_and_missing_inputs_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pickle_file = tmp_path / "dit.pth"
    pickle_file.write_bytes(b"\x80\x04K\x01.")
    assert main(["quantize", str(pickle_file), str(tmp_path / "out.safetensors")]) == 1
    assert "only .safetensors files are read (no pickles)" in capsys.readouterr().err
    assert main(["degrade", str(pickle_file), str(tmp_path / "o.safetensors"), "--kind", "noise"]) == 1
    missing = tmp_path / "missing.safetensors"
    assert main(["quantize", str(missing), str(tmp_path / "out.safetensors")]) == 1
    assert "missing.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "out.safetensors").exists()
