"""The embedded tiny Wan checkpoint (quant_guard/model/tiny_wan/): DiffSynth recognises its files as
the tiny classes, DiffSynth's own ``WanVideoPipeline`` renders a clip on a CPU, its DiT can be stored
in float8 and quantized by a ``diffsynth.core.quant`` method (and really is: the scheme check), and
a damaged DiT moves the frames far more than float8 does. Built the product's way
(``build_pipeline`` of the registered ``wan`` family, through ``tiny_wan.clip``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from family_support import INT8, digests
from helpers import REAL_CACHE

from quant_guard.config.schemes import FLOAT8_E4M3FN, REFERENCE
from quant_guard.store.paths import CACHE_ENV

# Measured on this tiny (random weights; 5 frames at 64x64, 3 steps, cfg 1; FACTS.md "Measured"):
# float8 against bf16 per frame LPIPS <= 0.0005, PSNR >= 45 dB; int8 LPIPS <= 0.0002, PSNR >= 48 dB;
# noise x2 on block 0: see FACTS.md.
FLOAT8_LPIPS_MAX = 0.005
FLOAT8_PSNR_MIN = 38.0
DAMAGE_NOISE = 2.0  # degrade's noise fraction on block 0
DAMAGE_OVER_FLOAT8 = 5.0  # damaged worst-frame LPIPS at least this many times float8's
# tiny_wan.damage.latent_frame_offset: 0.1 per latent frame and channel (benchmark: worst frame
# LPIPS 0.0008-0.0017, PSNR 40-42 dB; exposure flicker 0.18-0.22 against float8's 0.04-0.07, 9 frames)
FRAME_OFFSET = 0.1


@pytest.fixture(scope="module")
def files() -> Any:
    from quant_guard.model.tiny_wan.build import ensure_tiny_wan

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(REAL_CACHE))
        return ensure_tiny_wan()


@pytest.fixture(scope="module")
def bf16(files: Any) -> tuple[Any, np.ndarray]:
    from quant_guard.model.tiny_wan import clip

    pipe = clip.build(files, REFERENCE)
    return pipe, clip.render(pipe).frames


@pytest.fixture(scope="module")
def float8(files: Any) -> tuple[Any, np.ndarray]:
    from quant_guard.model.tiny_wan import clip

    pipe = clip.build(files, FLOAT8_E4M3FN)
    return pipe, clip.render(pipe).frames


def per_frame(golden: np.ndarray, candidate: np.ndarray) -> list[Any]:
    from quant_guard.judge.metrics import compare_images

    assert golden.shape == candidate.shape
    return [compare_images(g, c) for g, c in zip(golden, candidate)]


def test_the_build_is_deterministic_and_in_bf16(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from quant_guard.model.tiny_wan.build import write_tiny_wan

    first, second = write_tiny_wan(tmp_path / "a"), write_tiny_wan(tmp_path / "b")
    assert digests(first.root) == digests(second.root)
    for name in ("dit", "text_encoder", "vae"):
        assert {str(t.dtype) for t in load_file(str(getattr(first, name))).values()} == {"torch.bfloat16"}, name
    other = write_tiny_wan(tmp_path / "c", seed=1)
    assert digests(other.root)["dit.safetensors"] != digests(first.root)["dit.safetensors"]


def test_the_tokenizer_pads_and_ends_prompts_as_umt5_does(files: Any) -> None:
    from diffsynth.models.wan_video_text_encoder import HuggingfaceTokenizer

    from quant_guard.model.tiny_wan.clip import PROMPT
    from quant_guard.model.tiny_wan.tokenizers import vocab_size

    tokenizer = HuggingfaceTokenizer(name=str(files.tokenizer), seq_len=512, clean="whitespace")  # as the pipeline
    ids, mask = tokenizer(PROMPT, return_mask=True, add_special_tokens=True)
    words = len(PROMPT.split())
    assert ids.shape == (1, 512) and int(mask.sum()) == words + 1  # whole-word pieces, then </s>
    assert int(ids[0, words]) == 1 and not ids[0, words + 1:].any()  # umT5: </s> = 1, <pad> = 0
    assert 2 not in ids[0, :words].tolist()  # no <unk>: every caption and motion word is a piece
    assert int(ids.max()) < vocab_size()


def test_diffsynth_loads_the_files_as_the_tiny_classes(bf16: tuple[Any, np.ndarray]) -> None:
    from quant_guard.model.tiny_wan.architecture import SIZES

    pipe, _ = bf16
    assert type(pipe).__name__ == "WanVideoPipeline"
    assert type(pipe.dit).__name__ == "WanModel" and pipe.dit2 is None  # Wan2.1: one DiT
    assert pipe.dit.dim == SIZES.dit_dim and len(pipe.dit.blocks) == SIZES.layers
    assert type(pipe.text_encoder).__name__ == "WanTextEncoder" and pipe.text_encoder.dim == SIZES.text_dim
    assert type(pipe.vae).__name__ == "TinyWanVideoVAE" and pipe.vae.model.dim == SIZES.vae_dim
    from quant_guard.model.render import component_bytes

    assert set(component_bytes(pipe)) == {"dit", "text_encoder", "vae"}  # no second DiT: no dit2 column


def test_an_offloaded_tiny_vae_is_managed_layer_by_layer_like_diffsynths(bf16: tuple[Any, np.ndarray]) -> None:
    """What DiffSynth's loader wraps when a plan offloads the VAE (on a GPU; a CPU plan offloads
    nothing): the real ``WanVideoVAE``'s layer map, not the whole subclass as one module (the
    fallback for a class without a map, whose ``decode`` would then bypass the wrapper)."""
    import torch
    from diffsynth.models.model_loader import ModelPool
    from diffsynth.models.wan_video_vae import CausalConv3d

    from quant_guard.model.tiny_wan.architecture import VAE_CLASS, TinyWanVideoVAE

    offloaded = {"offload_dtype": torch.bfloat16, "offload_device": "cpu"}
    module_map = ModelPool().fetch_module_map(VAE_CLASS, offloaded)
    assert module_map is not None and CausalConv3d in module_map and TinyWanVideoVAE not in module_map


def test_bf16_renders_a_clip_of_the_expected_shape(bf16: tuple[Any, np.ndarray]) -> None:
    from quant_guard.model.tiny_wan.clip import FRAMES, SIZE

    _, frames = bf16
    assert frames.shape == (FRAMES, SIZE, SIZE, 3) and frames.dtype == np.uint8
    assert all(frame.std() > 2 for frame in frames)  # no flat frame (a NaN latent decodes to one colour)
    assert not np.array_equal(frames[0], frames[-1])  # the time axis is decoded, not one frame repeated


def test_float8_storage_keeps_every_dit_linear_in_float8(float8: tuple[Any, np.ndarray]) -> None:
    import torch

    from quant_guard.model.scheme_check import inventory

    pipe, _ = float8
    found = inventory(pipe.dit)
    linears = sum(isinstance(m, torch.nn.Linear) for m in pipe.dit.modules())
    assert linears and found.formats() == {"float8_e4m3fn": linears}, found.describe()
    assert all(layer.managed and layer.activations == "bfloat16" for layer in found.layers), found.describe()
    # DiffSynth's map wraps Wan's Head whole (AutoWrappedModule): its linear is float8 too
    assert type(pipe.dit.head).__name__ == "AutoWrappedModule"
    assert pipe.dit.head.module.head.weight.dtype == torch.float8_e4m3fn


def test_the_scheme_check_refuses_a_float8_linear_no_wrapper_casts(files: Any, float8: tuple[Any, np.ndarray]) -> None:
    from quant_guard.model.checkpoints import CheckpointError
    from quant_guard.model.scheme_check import check_scheme_applied
    from quant_guard.model.tiny_wan import clip

    pipe = clip.build(files, FLOAT8_E4M3FN)  # its own copy: the head is unwrapped below
    pipe.dit.head = pipe.dit.head.module  # a float8 Head outside DiffSynth's cast: a float8 matmul
    with pytest.raises(CheckpointError, match=r"head\.head"):
        check_scheme_applied(pipe.dit, FLOAT8_E4M3FN, "tiny-wan")


def test_float8_storage_of_a_dit_class_without_a_vram_map_is_refused(files: Any, float8: tuple[Any, np.ndarray],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """DiffSynth wraps a DiT class without a VRAM map whole; the Wan pipeline calls its blocks
    directly, so nothing casts the float8 weights: the scheme check must refuse it."""
    from diffsynth.configs import VRAM_MANAGEMENT_MODULE_MAPS

    from quant_guard.model.checkpoints import CheckpointError
    from quant_guard.model.tiny_wan import clip
    from quant_guard.model.tiny_wan.architecture import DIT_CLASS

    monkeypatch.delitem(VRAM_MANAGEMENT_MODULE_MAPS, DIT_CLASS)  # registered by the float8 fixture's build
    with pytest.raises(CheckpointError, match="did not apply float8 storage to this"):
        clip.build(files, FLOAT8_E4M3FN)


def test_a_per_frame_offset_moves_exposure_flicker_while_frames_stay_within_float8_limits(
        bf16: tuple[Any, np.ndarray], float8: tuple[Any, np.ndarray]) -> None:
    """The temporal-only damage (benchmarks/wan_temporal.py): each frame stays within the float8
    limits, the frame-to-frame change of the frames' mean colour does not."""
    from quant_guard.judge.temporal import compare_clips
    from quant_guard.model.tiny_wan import clip, damage

    pipe, _ = float8
    with damage.latent_frame_offset(pipe.dit, FRAME_OFFSET):
        shaken = clip.render(pipe).frames
    honest, broken = compare_clips(bf16[1], float8[1]), compare_clips(bf16[1], shaken)
    assert broken.worst_lpips[0] < FLOAT8_LPIPS_MAX and broken.worst_psnr[0] > FLOAT8_PSNR_MIN, broken
    assert broken.exposure_flicker > 2 * honest.exposure_flicker, (honest, broken)
    assert type(pipe.dit).unpatchify is pipe.dit.unpatchify.__func__  # the damage is gone afterwards


def test_float8_differs_from_bf16_but_only_a_little(bf16: tuple[Any, np.ndarray],
                                                    float8: tuple[Any, np.ndarray]) -> None:
    frames = per_frame(bf16[1], float8[1])
    assert not np.array_equal(bf16[1], float8[1])
    assert max(m.lpips for m in frames) < FLOAT8_LPIPS_MAX, frames
    assert min(m.psnr for m in frames) > FLOAT8_PSNR_MIN, frames


def test_an_int8_quantized_dit_is_quantized_and_close(files: Any, bf16: tuple[Any, np.ndarray]) -> None:
    from quant_guard.model.scheme_check import inventory
    from quant_guard.model.tiny_wan import clip

    pipe = clip.build(files, INT8)  # build_pipeline has run quant_guard's scheme check
    formats = inventory(pipe.dit).formats()
    assert formats and all("int8" in fmt.lower() for fmt in formats), formats
    frames = clip.render(pipe).frames
    assert not np.array_equal(bf16[1], frames)
    metrics = per_frame(bf16[1], frames)
    assert max(m.lpips for m in metrics) < FLOAT8_LPIPS_MAX and min(m.psnr for m in metrics) > FLOAT8_PSNR_MIN


def test_a_damaged_dit_moves_the_frames_far_more_than_float8(files: Any, bf16: tuple[Any, np.ndarray],
                                                              float8: tuple[Any, np.ndarray], tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from quant_guard.model.tiny_wan import clip
    from quant_guard.model.families.wan import FAMILY
    from quant_guard.tools.degrade import degrade

    dit = tmp_path / "damaged.safetensors"
    save_file(degrade(load_file(str(files.dit)), "noise", strength=DAMAGE_NOISE, family=FAMILY), str(dit))
    damaged = clip.render(clip.build(files, REFERENCE, dit=dit)).frames
    honest, broken = per_frame(bf16[1], float8[1]), per_frame(bf16[1], damaged)
    assert max(m.lpips for m in broken) > DAMAGE_OVER_FLOAT8 * max(m.lpips for m in honest), (honest, broken)
    assert min(m.psnr for m in broken) < min(m.psnr for m in honest) - 6, (honest, broken)


def test_the_wan_family_groups_and_names_every_dit_linear() -> None:
    """The sweep's layer groups of a Wan DiT (``family.py``'s ``layer_naming``): every linear in a
    block role or a named outside group, none left as "other", each with its diffusers
    (``WanTransformer3DModel``) name; block lists as the diffusers converter has them."""
    import torch

    from quant_guard.model.layer_groups import diffusers_name, diffusers_patterns, group_layers
    from quant_guard.model.tiny_wan.architecture import SIZES, build_dit
    from quant_guard.model.families.wan import FAMILY

    with torch.device("meta"):
        names = [n for n, m in build_dit().named_modules() if isinstance(m, torch.nn.Linear)]
    layers = group_layers(names, "layer", FAMILY)
    assert {g.kind for g in layers} == {"block", "embedders", "modulation", "final layer"}, layers
    roles = {g.name.split("/")[1] for g in layers if g.kind == "block"}
    assert roles == {"self-attn", "cross-attn", "mlp"}
    blocks = group_layers(names, "block", FAMILY)
    assert [g.name for g in blocks if g.kind == "block"] == [f"blocks.{i}" for i in range(SIZES.layers)]
    assert all(diffusers_name(n, FAMILY) for n in names), [n for n in names if not diffusers_name(n, FAMILY)]
    assert diffusers_name("blocks.1.cross_attn.o", FAMILY) == "blocks.1.attn2.to_out.0"
    assert diffusers_name("head.head", FAMILY) == "proj_out"
    _, unknown = diffusers_patterns(blocks, FAMILY)
    assert not unknown


def test_every_degrade_kind_finds_its_tensors_in_the_tiny_wan_files(files: Any) -> None:
    """``quant-guard degrade`` through the wan family's ``DamageTargets``: each kind changes the
    DiT file (the VAE's for colour-cast, the text encoder's for text-encoder-noise) and only what it names."""
    import torch
    from safetensors.torch import load_file

    from quant_guard.model.families.wan import FAMILY
    from quant_guard.tools.degrade import Degradation, degrade

    dit, vae, text = load_file(str(files.dit)), load_file(str(files.vae)), load_file(str(files.text_encoder))
    for kind in Degradation:
        state = {Degradation.COLOUR_CAST: vae, Degradation.TEXT_ENCODER_NOISE: text}.get(kind, dit)
        damaged = degrade(state, kind, family=FAMILY)
        changed = {k for k in state if not torch.equal(state[k], damaged[k])}
        assert changed, kind
        if kind is Degradation.COLOUR_CAST:
            assert changed == {FAMILY.damage.decoder_out_bias}
        if kind is Degradation.COLOUR_SHIFT:
            assert changed == {FAMILY.damage.final_bias}
        if kind is Degradation.TEXT_ENCODER_NOISE:
            assert all(k.startswith("blocks.0.") for k in changed), changed
        if kind is Degradation.DROP_TEXT:
            assert all(k.startswith("text_embedding.") for k in changed), changed


def test_two_dit_files_load_as_dit_and_dit2_and_the_loop_switches_at_the_boundary(files: Any, tmp_path: Path) -> None:
    """Wan2.2 A14B's layout on the tiny: two DiT files (high noise first) become ``pipe.dit`` and
    ``pipe.dit2`` (``fetch_model("wan_video_dit", index=2)``), each in its own ModelConfig's dtype
    (so a scheme must be given to both, and checked on both); the loop runs ``dit`` while the
    timestep is >= ``switch_DiT_boundary`` x 1000 and ``dit2`` after."""
    import torch
    from diffsynth.core import ModelConfig
    from diffsynth.pipelines.wan_video import WanVideoPipeline
    from safetensors.torch import load_file

    from quant_guard.model.pipelines import prepare_diffsynth
    from quant_guard.model.scheme_check import inventory
    from quant_guard.model.tiny_wan import clip
    from quant_guard.model.tiny_wan.build import write_tiny_wan
    from quant_guard.model.families.wan import FAMILY

    prepare_diffsynth(FAMILY)
    low_noise = write_tiny_wan(tmp_path / "low", seed=1).dit
    float8 = {"offload_dtype": torch.float8_e4m3fn, "offload_device": "cpu", "onload_dtype": torch.float8_e4m3fn,
              "onload_device": "cpu", "computation_dtype": torch.bfloat16, "computation_device": "cpu"}
    configs = [ModelConfig(path=str(files.dit), skip_download=True, **float8),
               ModelConfig(path=str(low_noise), skip_download=True),  # bf16: nothing makes both match
               ModelConfig(path=str(files.text_encoder), skip_download=True),
               ModelConfig(path=str(files.vae), skip_download=True)]
    pipe = WanVideoPipeline.from_pretrained(torch_dtype=torch.bfloat16, device="cpu", model_configs=configs,
                                            tokenizer_config=ModelConfig(path=str(files.tokenizer), skip_download=True))
    assert pipe.dit2 is not None and pipe.dit2 is not pipe.dit
    assert inventory(pipe.dit).formats() == {"float8_e4m3fn": 26}
    assert inventory(pipe.dit2).formats() == {"bfloat16": 26}  # the second file keeps its own dtype
    second = load_file(str(low_noise))["blocks.0.ffn.0.weight"]
    assert torch.equal(pipe.dit2.blocks[0].ffn[0].weight, second)  # files in model_configs order
    calls = {"dit": 0, "dit2": 0}
    for name in calls:
        getattr(pipe, name).blocks[0].register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
    clip.render(pipe, steps=3)  # timesteps 1000, 909, 714 (sigma shift 5): the boundary 875 falls before the last
    assert calls == {"dit": 2, "dit2": 1}
