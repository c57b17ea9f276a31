"""The sweep's layer groups (``model/layer_groups.py``) on each model family's tiny DiT: within a
block the parts a user would keep in bf16 (attention, the image-stream MLP, the text-stream MLP,
modulation), outside the blocks the embedders, the final layer and a family's shared modulation,
all from the family's ``LayerNaming`` tables. The layer names are the tiny DiT files' linear
weights (what DiffSynth's ``QuantizeConfig`` and the scheme check name)."""

from __future__ import annotations

import re

import pytest
from safetensors import safe_open

from quant_guard.model.families import family
from quant_guard.model.layer_groups import LayerGroup, diffusers_patterns, group_layers


def _linears(name: str) -> list[str]:
    """The tiny DiT's linear layers of family ``name``: its 2-D ``.weight`` tensors, without the suffix."""
    tiny = family(name).tiny
    assert tiny is not None
    with safe_open(str(tiny.built().dit), "pt") as f:
        return [k.removesuffix(".weight") for k in f.keys()
                if k.endswith(".weight") and len(f.get_slice(k).get_shape()) == 2]


def _by_name(groups: list[LayerGroup]) -> dict[str, tuple[str, set[str]]]:
    return {g.name: (g.kind, set(g.layers)) for g in groups}


def _in_block(prefix: str, kind: str, roles: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, set[str]]]:
    """The layer-granularity groups of one block: role -> the layers (after ``prefix``) it holds."""
    return {f"{prefix}/{role}": (kind, {f"{prefix}.{layer}" for layer in layers}) for role, layers in roles.items()}


QWEN_BLOCK = {
    "attn": ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
             "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"),
    "img-mlp": ("img_mlp.net.0.proj", "img_mlp.net.2"),
    "txt-mlp": ("txt_mlp.net.0.proj", "txt_mlp.net.2"),
    "modulation": ("img_mod.1", "txt_mod.1"),
}
Z_IMAGE_ATTENTION = ("attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0")
Z_IMAGE_MLP = ("feed_forward.w1", "feed_forward.w2", "feed_forward.w3")
FLUX2_DOUBLE = {
    "attn": ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
             "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"),
    "img-mlp": ("ff.linear_in", "ff.linear_out"),
    "txt-mlp": ("ff_context.linear_in", "ff_context.linear_out"),
}
FLUX2_SINGLE = {"qkv-mlp": ("attn.to_qkv_mlp_proj",), "out": ("attn.to_out",)}

EXPECTED_LAYER_GROUPS = {
    "qwen-image": {
        **{k: v for i in range(3) for k, v in _in_block(f"transformer_blocks.{i}", "joint block", QWEN_BLOCK).items()},
        "img_in": ("embedders", {"img_in"}),
        "txt_in": ("embedders", {"txt_in"}),
        "time_text_embed": ("embedders", {"time_text_embed.timestep_embedder.linear_1",
                                          "time_text_embed.timestep_embedder.linear_2"}),
        "final/modulation": ("final layer", {"norm_out.linear"}),
        "final/proj": ("final layer", {"proj_out"}),
    },
    "z-image": {
        **{k: v for i in range(3) for k, v in _in_block(f"layers.{i}", "block", {
            "attn": Z_IMAGE_ATTENTION, "mlp": Z_IMAGE_MLP, "modulation": ("adaLN_modulation.0",)}).items()},
        **_in_block("noise_refiner.0", "image refiner", {
            "attn": Z_IMAGE_ATTENTION, "mlp": Z_IMAGE_MLP, "modulation": ("adaLN_modulation.0",)}),
        **_in_block("context_refiner.0", "text refiner", {"attn": Z_IMAGE_ATTENTION, "mlp": Z_IMAGE_MLP}),
        "all_x_embedder": ("embedders", {"all_x_embedder.2-1"}),
        "cap_embedder": ("embedders", {"cap_embedder.1"}),
        "t_embedder": ("embedders", {"t_embedder.mlp.0", "t_embedder.mlp.2"}),
        "final/modulation": ("final layer", {"all_final_layer.2-1.adaLN_modulation.1"}),
        "final/proj": ("final layer", {"all_final_layer.2-1.linear"}),
    },
    "flux2": {
        **{k: v for i in range(2) for k, v in _in_block(f"transformer_blocks.{i}", "joint block", FLUX2_DOUBLE).items()},
        **{k: v for i in range(2)
           for k, v in _in_block(f"single_transformer_blocks.{i}", "single block", FLUX2_SINGLE).items()},
        "double_stream_modulation_img": ("modulation", {"double_stream_modulation_img.linear"}),
        "double_stream_modulation_txt": ("modulation", {"double_stream_modulation_txt.linear"}),
        "single_stream_modulation": ("modulation", {"single_stream_modulation.linear"}),
        "x_embedder": ("embedders", {"x_embedder"}),
        "context_embedder": ("embedders", {"context_embedder"}),
        "time_guidance_embed": ("embedders", {"time_guidance_embed.timestep_embedder.linear_1",
                                              "time_guidance_embed.timestep_embedder.linear_2"}),
        "final/modulation": ("final layer", {"norm_out.linear"}),
        "final/proj": ("final layer", {"proj_out"}),
    },
}
# at block granularity: the blocks, then one group per kind outside them
OUTSIDE_BLOCK_GROUPS = {"embedders": "embedders", "final": "final layer", "modulation": "modulation"}


@pytest.mark.parametrize("name", sorted(EXPECTED_LAYER_GROUPS))
def test_layer_groups_are_the_roles_of_the_familys_blocks(name: str) -> None:
    linears = _linears(name)
    groups = group_layers(linears, "layer", family(name))
    assert _by_name(groups) == EXPECTED_LAYER_GROUPS[name]
    assert sorted(n for g in groups for n in g.layers) == sorted(linears)  # a partition


@pytest.mark.parametrize("name", sorted(EXPECTED_LAYER_GROUPS))
def test_block_groups_merge_each_block_and_each_outside_kind(name: str) -> None:
    """Every layer group of a block merges into that block; the outside ones into their kind's group."""
    expected: dict[str, tuple[str, set[str]]] = {}
    for group, (kind, layers) in EXPECTED_LAYER_GROUPS[name].items():
        merged = group.split("/")[0] if "/" in group and group.split("/")[0] != "final" else None
        key = merged or next(g for g, k in OUTSIDE_BLOCK_GROUPS.items() if k == kind)
        expected.setdefault(key, (kind, set()))[1].update(layers)
    assert _by_name(group_layers(_linears(name), "block", family(name))) == expected


def _kept(patterns: tuple[str, ...], modules: list[str]) -> list[str]:
    """The modules diffusers' layerwise casting leaves in bf16: ``re.search`` of each pattern
    against each dotted prefix of a module's name."""
    def hit(name: str) -> bool:
        parts = name.split(".")
        return any(re.search(p, ".".join(parts[:i])) for i in range(1, len(parts) + 1) for p in patterns)

    return [m for m in modules if hit(m)]


def test_qwen_image_image_stream_mlps_as_a_diffusers_skip_pattern() -> None:
    """The issue's example: keeping Qwen-Image's image-stream MLPs in bf16 is the diffusers pattern
    of every ``transformer_blocks.{i}.img_mlp.net.0.proj`` and ``.net.2`` (DiffSynth's Qwen-Image
    DiT has diffusers' module names), and nothing else."""
    qwen = family("qwen-image")
    linears = _linears("qwen-image")
    mlps = [g for g in group_layers(linears, "layer", qwen) if g.name.endswith("/img-mlp")]
    patterns, unknown = diffusers_patterns(mlps, qwen)
    assert unknown == ()
    assert sorted(_kept(patterns, linears)) == sorted(
        f"transformer_blocks.{i}.img_mlp.{part}" for i in range(3) for part in ("net.0.proj", "net.2"))
    assert patterns[:2] == (r"^transformer_blocks\.0\.img_mlp\.net\.0\.proj$", r"^transformer_blocks\.0\.img_mlp\.net\.2$")


def test_an_unknown_layer_is_a_group_of_its_own() -> None:
    """A layer no table names (an adapter, a new module) still lands in a group: its own role in its
    block, or, outside the blocks, its first name part of kind "other"; a dotted suffix of a known
    layer keeps that layer's role."""
    qwen = family("qwen-image")
    groups = _by_name(group_layers(["transformer_blocks.0.lora_up", "transformer_blocks.0.img_mlp.net.2.lora_A",
                                    "pos_proj.0"], "layer", qwen))
    assert groups == {"transformer_blocks.0/lora_up": ("joint block", {"transformer_blocks.0.lora_up"}),
                      "transformer_blocks.0/img-mlp": ("joint block", {"transformer_blocks.0.img_mlp.net.2.lora_A"}),
                      "pos_proj": ("other", {"pos_proj.0"})}
