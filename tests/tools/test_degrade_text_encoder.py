"""``quant-guard degrade --kind text-encoder-noise``: one block of the family's text encoder
damaged in its own file, and the scheme entry that uses it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from quant_guard.cli import main
from quant_guard.config.project import parse_scheme


def test_text_encoder_noise_damages_one_t5_block_and_prints_a_component_entry(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tiny", str(tmp_path / "t"), "--seeded"]) == 0
    t5, damaged = tmp_path / "t" / "text_encoder_t5.safetensors", tmp_path / "t5-noise.safetensors"
    capsys.readouterr()
    assert main(["degrade", str(t5), str(damaged), "--kind", "text-encoder-noise", "--block", "1"]) == 0
    before, after = load_file(str(t5)), load_file(str(damaged))
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    # every weight matrix of block 1, nothing else (its norms and block 0 untouched)
    assert changed == sorted(k for k, v in before.items() if k.startswith("encoder.block.1.") and v.ndim == 2
                             and "relative_attention_bias" not in k) and len(changed) == 7
    printed = capsys.readouterr().out.splitlines()[-1]
    entry = tomllib.loads(printed.split(": ", 1)[1].split(", then")[0])["schemes"][0]
    scheme = parse_scheme(entry, file=tmp_path / "pyproject.toml", where="w", key="schemes[0]")
    assert scheme.targets == ("text_encoder_t5",) and scheme.component("text_encoder_t5").file is not None
    assert scheme.component("text_encoder_t5").file.path == damaged  # type: ignore[union-attr]
    # given the DiT instead: an error that says which file the kind needs
    dit = tmp_path / "t" / "dit.safetensors"
    assert main(["degrade", str(dit), str(tmp_path / "d2.safetensors"), "--kind", "text-encoder-noise"]) == 1
    assert "damages the text_encoder_t5 file, so give it that file" in capsys.readouterr().err
