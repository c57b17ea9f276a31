"""The quant-guard command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from quant_guard.cli import main
from quant_guard.degrade import COLOUR_CAST_CHANNEL, COLOUR_SHIFT_CHANNEL
from quant_guard.tiny.build import TinyCheckpointFiles


def test_tiny_writes_a_checkpoint_diffsynth_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from quant_guard.checkpoints import ResolvedCheckpoint
    from quant_guard.schemes import FLOAT8_E4M3FN
    from quant_guard.pipelines import build_pipeline

    assert main(["tiny", str(tmp_path / "tiny")]) == 0
    files = TinyCheckpointFiles(tmp_path / "tiny")
    for path in (files.dit, files.text_encoder_clip, files.text_encoder_t5, files.vae):
        assert path.is_file() and all(t.dtype == torch.bfloat16 for t in load_file(str(path)).values())
    assert (files.tokenizer_clip / "tokenizer.json").is_file() and (files.tokenizer_t5 / "tokenizer.json").is_file()
    resolved = ResolvedCheckpoint("cli-tiny", {
        "dit": files.dit, "text_encoder_clip": files.text_encoder_clip, "text_encoder_t5": files.text_encoder_t5,
        "vae": files.vae, "tokenizer_clip": files.tokenizer_clip, "tokenizer_t5": files.tokenizer_t5}, {}, 16)
    pipe = build_pipeline(resolved, FLOAT8_E4M3FN, "cpu")
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


def test_colour_cast_offsets_one_rgb_output_of_the_vae_decoder(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tiny", str(tmp_path / "t"), "--seeded"]) == 0
    vae = tmp_path / "t" / "vae.safetensors"
    assert main(["degrade", str(vae), str(tmp_path / "v.safetensors"), "--kind", "colour-cast",
                 "--strength", "0.25"]) == 0
    before, after = load_file(str(vae)), load_file(str(tmp_path / "v.safetensors"))
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == ["decoder.conv_out.bias"]
    delta = after[changed[0]].float() - before[changed[0]].float()
    assert torch.allclose(delta[COLOUR_CAST_CHANNEL], torch.tensor(0.25), atol=0.01)
    assert torch.count_nonzero(delta) == 1
    # given the DiT instead: an error that says which file the kind needs
    dit = tmp_path / "t" / "dit.safetensors"
    assert main(["degrade", str(dit), str(tmp_path / "d.safetensors"), "--kind", "colour-cast"]) == 1
    assert "give it the VAE file, not the DiT" in capsys.readouterr().err
    assert not (tmp_path / "d.safetensors").exists()


def test_colour_shift_offsets_one_latent_channel_of_the_final_projection(tmp_path: Path) -> None:
    assert main(["tiny", str(tmp_path / "t"), "--seeded"]) == 0
    dit = tmp_path / "t" / "dit.safetensors"
    assert main(["degrade", str(dit), str(tmp_path / "d.safetensors"), "--kind", "colour-shift",
                 "--strength", "1.5"]) == 0
    before, after = load_file(str(dit)), load_file(str(tmp_path / "d.safetensors"))
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == ["final_proj_out.bias"]
    delta = (after[changed[0]].float() - before[changed[0]].float()).view(-1, 4)  # latent channel x 2x2 patch
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
