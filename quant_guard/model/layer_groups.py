"""The layer groups a sensitivity sweep keeps in bf16 one at a time, and their names elsewhere.

A group is a set of the DiT's linear layers (DiffSynth's Flux names, e.g.
``blocks.1.attn.a_to_qkv``). At ``block`` granularity: each joint block, each single block, the
embedders, the final layer; at ``layer`` granularity the blocks split by role: attention qkv,
attention output, feed-forward, modulation (the AdaLayerNorm linear that makes shift, scale and
gate), and each embedder apart. A single block fuses attention qkv with the feed-forward input
(``to_qkv_mlp``) and the attention output with the feed-forward output (``proj_out``), so its
roles are ``qkv-mlp``, ``out`` and ``modulation``.

Also the same layers as a diffusers ``skip_modules_pattern`` (``FluxTransformer2DModel`` module
names, matched with ``re.search`` against each module's dotted name while diffusers walks the
model, so one pattern that names a block keeps the whole block). Plain strings here, no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GRANULARITIES = ("block", "layer")
_BLOCK_LISTS = {"blocks": "joint block", "single_blocks": "single block"}

# DiffSynth Flux DiT linear layer -> diffusers FluxTransformer2DModel module(s); the same table
# as DiffSynth's diffusers converters (diffsynth/utils/lora/flux.py), fused layers as alternations.
_DIFFUSERS_NAMES = tuple((re.compile(f"^{pattern}$"), name) for pattern, name in (
    (r"blocks\.(\d+)\.norm1_a\.linear", r"transformer_blocks.\1.norm1.linear"),
    (r"blocks\.(\d+)\.norm1_b\.linear", r"transformer_blocks.\1.norm1_context.linear"),
    (r"blocks\.(\d+)\.attn\.a_to_qkv", r"transformer_blocks.\1.attn.(to_q|to_k|to_v)"),
    (r"blocks\.(\d+)\.attn\.b_to_qkv", r"transformer_blocks.\1.attn.(add_q_proj|add_k_proj|add_v_proj)"),
    (r"blocks\.(\d+)\.attn\.a_to_out", r"transformer_blocks.\1.attn.to_out.0"),
    (r"blocks\.(\d+)\.attn\.b_to_out", r"transformer_blocks.\1.attn.to_add_out"),
    (r"blocks\.(\d+)\.ff_a\.0", r"transformer_blocks.\1.ff.net.0.proj"),
    (r"blocks\.(\d+)\.ff_a\.2", r"transformer_blocks.\1.ff.net.2"),
    (r"blocks\.(\d+)\.ff_b\.0", r"transformer_blocks.\1.ff_context.net.0.proj"),
    (r"blocks\.(\d+)\.ff_b\.2", r"transformer_blocks.\1.ff_context.net.2"),
    (r"single_blocks\.(\d+)\.norm\.linear", r"single_transformer_blocks.\1.norm.linear"),
    (r"single_blocks\.(\d+)\.to_qkv_mlp", r"single_transformer_blocks.\1.(attn.to_q|attn.to_k|attn.to_v|proj_mlp)"),
    (r"single_blocks\.(\d+)\.proj_out", r"single_transformer_blocks.\1.proj_out"),
    (r"time_embedder\.timestep_embedder\.0", "time_text_embed.timestep_embedder.linear_1"),
    (r"time_embedder\.timestep_embedder\.2", "time_text_embed.timestep_embedder.linear_2"),
    (r"guidance_embedder\.timestep_embedder\.0", "time_text_embed.guidance_embedder.linear_1"),
    (r"guidance_embedder\.timestep_embedder\.2", "time_text_embed.guidance_embedder.linear_2"),
    (r"pooled_text_embedder\.0", "time_text_embed.text_embedder.linear_1"),
    (r"pooled_text_embedder\.2", "time_text_embed.text_embedder.linear_2"),
    (r"context_embedder", "context_embedder"),
    (r"x_embedder", "x_embedder"),
    (r"final_norm_out\.linear", "norm_out.linear"),
    (r"final_proj_out", "proj_out"),
))
_DIFFUSERS_BLOCKS = {"blocks": "transformer_blocks", "single_blocks": "single_transformer_blocks"}


@dataclass(frozen=True)
class LayerGroup:
    name: str  # "blocks.1", "embedders", "blocks.1/attn-qkv", "x_embedder", "final/proj"
    kind: str  # "joint block", "single block", "embedders", "final layer", "other"
    layers: tuple[str, ...]  # the DiT's linear layers, as DiffSynth's QuantizeConfig names them


def group_layers(names: list[str] | tuple[str, ...], granularity: str) -> list[LayerGroup]:
    """The groups of these linear layers, in the order their first layer comes in the DiT."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    members: dict[tuple[str, str], list[str]] = {}
    for name in names:
        members.setdefault(_group_of(name, granularity), []).append(name)
    return [LayerGroup(group, kind, tuple(layers)) for (group, kind), layers in members.items()]


def _group_of(name: str, granularity: str) -> tuple[str, str]:
    parts = name.split(".")
    if parts[0] in _BLOCK_LISTS and len(parts) > 2 and parts[1].isdigit():
        block, kind = f"{parts[0]}.{parts[1]}", _BLOCK_LISTS[parts[0]]
        return (block, kind) if granularity == "block" else (f"{block}/{_role('.'.join(parts[2:]))}", kind)
    if parts[0].startswith("final"):
        if granularity == "block":
            return "final", "final layer"
        return f"final/{'modulation' if 'norm' in parts[0] else 'proj'}", "final layer"
    if "embedder" in parts[0]:
        return ("embedders" if granularity == "block" else parts[0]), "embedders"
    return parts[0], "other"


def _role(rest: str) -> str:
    """A block's layer by its role (DiffSynth's Flux names; other DiTs by the same words)."""
    if "norm" in rest:
        return "modulation"  # AdaLayerNorm's linear: shift, scale and gate of the block
    if "qkv_mlp" in rest:
        return "qkv-mlp"
    if "qkv" in rest or re.search(r"to_[qkv]$", rest):
        return "attn-qkv"
    if "attn" in rest and "out" in rest:
        return "attn-out"
    if rest.startswith("ff") or "mlp" in rest:
        return "ff"
    if "out" in rest:
        return "out"
    return rest


def diffusers_patterns(groups: list[LayerGroup]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(diffusers ``skip_modules_pattern`` for these groups, DiffSynth layers without a known
    diffusers name). A whole block is one pattern; other layers one exact pattern each."""
    patterns: list[str] = []
    unknown: list[str] = []
    for group in groups:
        block_list, _, index = group.name.partition(".")
        if block_list in _DIFFUSERS_BLOCKS and index.isdigit():
            patterns.append(_exact(f"{_DIFFUSERS_BLOCKS[block_list]}.{index}"))
            continue
        for layer in group.layers:
            name = diffusers_name(layer)
            if name is None:
                unknown.append(layer)
            else:
                patterns.append(_exact(name))
    return tuple(dict.fromkeys(patterns)), tuple(unknown)


def diffusers_name(layer: str) -> str | None:
    """The diffusers module name of a DiffSynth Flux linear layer (an alternation for a fused one)."""
    for pattern, name in _DIFFUSERS_NAMES:
        if pattern.match(layer):
            return pattern.sub(name, layer)
    return None


def _exact(name: str) -> str:
    return "^" + name.replace(".", r"\.") + "$"
