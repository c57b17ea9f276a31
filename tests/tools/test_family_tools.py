"""``quant-guard degrade`` and ``quant-guard quantize`` on every model family's tiny checkpoint: each
damage kind changes exactly the tensors written out here for that family (or is a clear error
naming the family), the colour shift moves one latent channel as the family's DiT unpatchifies
it, and a tiny DiT of any family can be quantized by a ``diffsynth.core.quant`` method."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from quant_guard.cli import main
from quant_guard.model.families import embedded_family, family
from quant_guard.tools.degrade import COLOUR_SHIFT_CHANNEL, COLOUR_SHIFT_OFFSET, Degradation, degrade

State = dict[str, torch.Tensor]

# The tensors each kind damages, per family, by name in the tiny DiT (block 0 for the per-block kinds).
ZERO_ATTN_OUT = {
    "flux": {"blocks.0.attn.a_to_out.weight", "blocks.0.attn.a_to_out.bias"},
    "qwen-image": {"transformer_blocks.0.attn.to_out.0.weight", "transformer_blocks.0.attn.to_out.0.bias"},
    "z-image": {"layers.0.attention.to_out.0.weight"},
    "flux2": {"transformer_blocks.0.attn.to_out.0.weight"},
}
SCALE = {
    "flux": {"blocks.0.ff_a.0.weight"},
    "qwen-image": {"transformer_blocks.0.img_mlp.net.0.proj.weight"},
    "z-image": {"layers.0.feed_forward.w1.weight"},
    "flux2": {"transformer_blocks.0.ff.linear_in.weight"},
}
DROP_TEXT = {
    "flux": {"context_embedder.weight", "context_embedder.bias", "pooled_text_embedder.0.weight",
             "pooled_text_embedder.0.bias", "pooled_text_embedder.2.weight", "pooled_text_embedder.2.bias"},
    "qwen-image": {"txt_in.weight", "txt_in.bias"},
    "z-image": {"cap_embedder.0.weight", "cap_embedder.1.weight", "cap_embedder.1.bias"},
    "flux2": {"context_embedder.weight"},
}
NOISE_BLOCK = {"flux": "blocks.0.", "qwen-image": "transformer_blocks.0.", "z-image": "layers.0.",
               "flux2": "transformer_blocks.0."}
# (final projection bias, the indices of latent channel 1): channel first (c * 4 + k) for FLUX.1 and
# Qwen-Image, channel last (k * 16 + c) for Z-Image; FLUX.2's final projection has no bias
COLOUR_SHIFT = {"flux": ("final_proj_out.bias", [4, 5, 6, 7]), "qwen-image": ("proj_out.bias", [4, 5, 6, 7]),
                "z-image": ("all_final_layer.2-1.linear.bias", [1, 17, 33, 49])}
FAMILIES = sorted(ZERO_ATTN_OUT)


def _tiny(name: str) -> Any:
    tiny = family(name).tiny
    assert tiny is not None
    return tiny.built()


@pytest.fixture(scope="module")
def states() -> dict[str, tuple[State, State]]:
    """Family name -> (its tiny's DiT state dict, its VAE's)."""
    return {name: (load_file(str(_tiny(name).dit)), load_file(str(_tiny(name).vae))) for name in FAMILIES}


def _changed(before: State, after: State) -> dict[str, int]:
    return {k: int((before[k] != after[k]).sum()) for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("name", FAMILIES)
def test_each_kind_damages_the_tensors_of_the_family(name: str, states: dict[str, tuple[State, State]]) -> None:
    dit, vae = states[name]
    fam = family(name)

    def changed(kind: Degradation, state: State = dit) -> dict[str, int]:
        return _changed(state, degrade(state, kind, family=fam))

    assert set(changed(Degradation.ZERO_ATTN_OUT)) == ZERO_ATTN_OUT[name]
    assert set(changed(Degradation.SCALE)) == SCALE[name]
    assert set(changed(Degradation.DROP_TEXT)) == {k for k in DROP_TEXT[name] if dit[k].any()}
    block_matrices = {k for k, v in dit.items() if k.startswith(NOISE_BLOCK[name]) and k.endswith(".weight")
                      and v.ndim == 2}
    assert block_matrices and set(changed(Degradation.NOISE)) == block_matrices
    assert set(changed(Degradation.ROUND)) == {k for k, v in dit.items() if k.endswith(".weight") and v.ndim == 2}
    assert changed(Degradation.COLOUR_CAST, vae) == {"decoder.conv_out.bias": 1}
    if name in COLOUR_SHIFT:
        bias, positions = COLOUR_SHIFT[name]
        assert changed(Degradation.COLOUR_SHIFT) == {bias: 4}
        shifted = degrade(dit, Degradation.COLOUR_SHIFT, family=fam)[bias].float() - dit[bias].float()
        assert shifted.nonzero().flatten().tolist() == positions
    else:
        with pytest.raises(ValueError, match=rf"colour-shift .* a {fam.label} DiT's final projection has no bias"):
            degrade(dit, Degradation.COLOUR_SHIFT, family=fam)


def _one_channel(latent: torch.Tensor) -> None:
    """``latent`` (channels, ..., H, W) is COLOUR_SHIFT_OFFSET everywhere in the shifted channel, 0 elsewhere."""
    others = torch.cat([latent[:COLOUR_SHIFT_CHANNEL], latent[COLOUR_SHIFT_CHANNEL + 1:]])
    assert torch.count_nonzero(others) == 0
    assert torch.allclose(latent[COLOUR_SHIFT_CHANNEL], torch.tensor(COLOUR_SHIFT_OFFSET), atol=0.02)


def _bias_shift(states: dict[str, tuple[State, State]], name: str) -> torch.Tensor:
    """What colour-shift adds to every token's output features on the family's tiny DiT."""
    bias, _ = COLOUR_SHIFT[name]
    dit = states[name][0]
    return degrade(dit, Degradation.COLOUR_SHIFT, family=family(name))[bias].float() - dit[bias].float()


def test_the_z_image_colour_shift_moves_one_latent_channel_as_z_image_unpatchifies(
        states: dict[str, tuple[State, State]]) -> None:
    """ZImageDiT.unpatchify reads the output features as (pf, ph, pw, channel): the shifted
    positions are one latent channel at every pixel."""
    from diffsynth.models.z_image_dit import ZImageDiT

    delta = _bias_shift(states, "z-image")
    frames, height, width = 1, 6, 4  # latent size; 2x2 patches, one frame
    tokens = (height // 2) * (width // 2)
    latent, = ZImageDiT.unpatchify(SimpleNamespace(out_channels=16), [delta.repeat(tokens, 1)],  # type: ignore[arg-type]
                                   [(frames, height, width)])
    assert latent.shape == (16, frames, height, width)
    _one_channel(latent)


def test_the_channel_first_colour_shift_moves_one_latent_channel_as_the_dit_unpatchifies(
        states: dict[str, tuple[State, State]]) -> None:
    """FLUX.1 (FluxDiT.unpatchify) and Qwen-Image (the rearrange of model_fn_qwen_image) read the
    output features as (channel, ph, pw)."""
    import einops
    from diffsynth.models.flux_dit import FluxDiT
    from diffsynth.pipelines import qwen_image

    latent = FluxDiT.unpatchify(None, _bias_shift(states, "flux").repeat(1, 6, 1), 6, 4)  # type: ignore[arg-type]
    assert latent.shape == (1, 16, 6, 4)
    _one_channel(latent[0])
    pattern = "B (N H W) (C P Q) -> (B N) C (H P) (W Q)"
    assert pattern in inspect.getsource(qwen_image.model_fn_qwen_image)
    latent = einops.rearrange(_bias_shift(states, "qwen-image").repeat(1, 6, 1), pattern, H=3, W=2, P=2, Q=2, B=1)
    assert latent.shape == (1, 16, 6, 4)
    _one_channel(latent[0])


def test_a_state_dict_without_the_familys_tensors_is_an_error_naming_the_family(
        states: dict[str, tuple[State, State]]) -> None:
    z_image, qwen = states["z-image"][0], family("qwen-image")
    with pytest.raises(ValueError, match=r"no block 0 of a Qwen-Image DiT \(no key starts with 'transformer_blocks\.0\.'\)"):
        degrade(z_image, Degradation.NOISE, family=qwen)  # another family's DiT
    without = {k: v for k, v in z_image.items() if k != "layers.0.attention.to_out.0.weight"}
    with pytest.raises(ValueError, match=r"zero-attn-out damages 'layers\.0\.attention\.to_out\.0\.weight' of a Z-Image DiT"):
        degrade(without, Degradation.ZERO_ATTN_OUT, family=family("z-image"))
    with pytest.raises(ValueError, match=r"scale damages 'layers\.0\.feed_forward\.w1\.weight' of a Z-Image DiT"):
        degrade({k: v for k, v in z_image.items() if "w1" not in k}, Degradation.SCALE, family=family("z-image"))
    no_text = {k: v for k, v in z_image.items() if not k.startswith("cap_embedder.")}
    with pytest.raises(ValueError, match=r"drop-text zeroes the Z-Image DiT's text embedders \(cap_embedder\.\*\)"):
        degrade(no_text, Degradation.DROP_TEXT, family=family("z-image"))
    no_bias = {k: v for k, v in z_image.items() if k != "all_final_layer.2-1.linear.bias"}
    with pytest.raises(ValueError, match=r"colour-shift damages 'all_final_layer\.2-1\.linear\.bias' of a Z-Image DiT"):
        degrade(no_bias, Degradation.COLOUR_SHIFT, family=family("z-image"))


def test_degrade_family_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dit = embedded_family("tiny-z-image").tiny.files()["dit"]  # type: ignore[union-attr]
    out = tmp_path / "d.safetensors"
    assert main(["degrade", str(dit), str(out), "--family", "z-image", "--kind", "zero-attn-out"]) == 0
    assert "zero-attn-out, Z-Image, block 0" in capsys.readouterr().out
    assert set(_changed(load_file(str(dit)), load_file(str(out)))) == ZERO_ATTN_OUT["z-image"]
    flux2 = _tiny("flux2").dit
    assert main(["degrade", str(flux2), str(tmp_path / "e.safetensors"), "--family", "flux2",
                 "--kind", "colour-shift"]) == 1
    assert "a FLUX.2 DiT's final projection has no bias" in capsys.readouterr().err
    assert not (tmp_path / "e.safetensors").exists()
    # without --family the file is read as the default family's: a Z-Image DiT has none of its blocks
    assert main(["degrade", str(dit), str(tmp_path / "f.safetensors"), "--kind", "noise"]) == 1
    assert f"no block 0 of a {family('flux').label} DiT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["degrade", str(dit), str(out), "--family", "sd15", "--kind", "noise"])
    assert "invalid choice: 'sd15'" in capsys.readouterr().err


@pytest.mark.slow
def test_quantize_writes_a_prequantized_dit_of_any_familys_tiny(tmp_path: Path) -> None:
    """In a fresh process (DiffSynth's registry starts empty there), ``quant-guard quantize --method``
    on each tiny family's DiT writes a file every layer of which loads quantized."""
    from quant_guard.config.schemes import Quantization, Scheme
    from quant_guard.model.checkpoints import tiny_resolved
    from quant_guard.model.pipelines import build_pipeline
    from quant_guard.model.scheme_check import inventory

    names = [n for n in FAMILIES if not family(n).default]
    outputs = {n: tmp_path / f"{n}-nf4.safetensors" for n in names}
    script = "import sys; from quant_guard.cli import main\n" + "".join(
        f"assert main(['quantize', {str(_tiny(n).dit)!r}, {str(out)!r}, '--method', 'bitsandbytes_nf4']) == 0, {n!r}\n"
        for n, out in outputs.items())
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    scheme = Scheme("nf4-file", quantization=Quantization("bitsandbytes_nf4", load_prequantized=True))
    name = "z-image"  # one of them loaded back through the product path
    tiny = family(name).tiny
    assert tiny is not None
    pipe = build_pipeline(tiny_resolved(_tiny(name), {scheme.id: outputs[name]}, embedded=tiny.name), scheme, "cpu")
    formats = inventory(pipe.dit).formats()
    assert set(formats) == {"BitsAndBytesLinear4bit/Params4bit(nf4)"}, formats
