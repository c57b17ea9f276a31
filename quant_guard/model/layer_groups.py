"""The layer groups a sensitivity sweep keeps in bf16 one at a time, and their names elsewhere.

A group is a set of the DiT's linear layers (DiffSynth's names, e.g. FLUX.1's
``blocks.1.attn.a_to_qkv``); the DiT's block lists, each block layer's role and the groups of the
layers outside the blocks come from its model family (``ModelFamily.layer_naming``). At ``block``
granularity: each block of each block list, the embedders, the final layer (and a family's
shared modulation); at ``layer`` granularity the blocks split by the family's roles (FLUX.1:
attention qkv, attention output, feed-forward, modulation, the AdaLayerNorm linear that makes
shift, scale and gate; a single block fuses attention qkv with the feed-forward input and the
attention output with the feed-forward output, so its roles are ``qkv-mlp``, ``out`` and
``modulation``; a double-stream family's image-stream and text-stream MLPs apart), and each
embedder apart.

Also the same layers as a diffusers ``skip_modules_pattern`` (module names of the family's
diffusers transformer, e.g. FLUX.1's ``FluxTransformer2DModel``, matched with ``re.search``
against each module's dotted name while diffusers walks the model, so one pattern that names a
block keeps the whole block). Plain strings here, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from quant_guard.model.families import default_family

if TYPE_CHECKING:
    from quant_guard.model.families.base import LayerNaming, ModelFamily

GRANULARITIES = ("block", "layer")


@dataclass(frozen=True)
class LayerGroup:
    name: str  # "blocks.1", "embedders", "blocks.1/attn-qkv", "x_embedder", "final/proj"
    kind: str  # "joint block", "single block", "embedders", "final layer", "other"
    layers: tuple[str, ...]  # the DiT's linear layers, as DiffSynth's QuantizeConfig names them


def _naming(family: ModelFamily | None) -> LayerNaming:
    return (family or default_family()).layer_naming


def group_layers(names: list[str] | tuple[str, ...], granularity: str,
                 family: ModelFamily | None = None) -> list[LayerGroup]:
    """The groups of these linear layers of a DiT of ``family`` (None: the default family), in the
    order their first layer comes in the DiT."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    naming = _naming(family)
    members: dict[tuple[str, str], list[str]] = {}
    for name in names:
        members.setdefault(_group_of(name, granularity, naming), []).append(name)
    return [LayerGroup(group, kind, tuple(layers)) for (group, kind), layers in members.items()]


def _group_of(name: str, granularity: str, naming: LayerNaming) -> tuple[str, str]:
    parts = name.split(".")
    kind = naming.block_kind(parts[0])
    if kind is not None and len(parts) > 2 and parts[1].isdigit():
        block = f"{parts[0]}.{parts[1]}"
        return (block, kind) if granularity == "block" else (f"{block}/{naming.role('.'.join(parts[2:]))}", kind)
    return naming.outside_group(name, granularity)


def diffusers_patterns(groups: list[LayerGroup],
                       family: ModelFamily | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(diffusers ``skip_modules_pattern`` for these groups, DiffSynth layers without a known
    diffusers name). A whole block is one pattern; other layers one exact pattern each."""
    naming = _naming(family)
    patterns: list[str] = []
    unknown: list[str] = []
    for group in groups:
        block_list, _, index = group.name.partition(".")
        block = naming.diffusers_block(block_list)
        if block is not None and index.isdigit():
            patterns.append(_exact(f"{block}.{index}"))
            continue
        for layer in group.layers:
            name = naming.diffusers_name(layer)
            if name is None:
                unknown.append(layer)
            else:
                patterns.append(_exact(name))
    return tuple(dict.fromkeys(patterns)), tuple(unknown)


def diffusers_name(layer: str, family: ModelFamily | None = None) -> str | None:
    """The diffusers module name of a DiffSynth linear layer (an alternation for a fused one)."""
    return _naming(family).diffusers_name(layer)


def _exact(name: str) -> str:
    return "^" + name.replace(".", r"\.") + "$"
