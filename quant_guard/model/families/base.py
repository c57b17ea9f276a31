"""The interface of a model family: what differs between DiffSynth pipelines, as plain data.

Nothing here imports torch or DiffSynth: classes are dotted paths, imported when asked for.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Any

# The component every family files its DiT under, and the pipeline attribute DiffSynth loads it
# into (every DiffSynth image and video pipeline calls it ``dit``): a scheme that names no
# components applies to it alone.
DIT = "dit"


# The render request fields every DiffSynth image pipeline takes under the same keywords; a family
# adds its guidance (and FLUX.1 its T5 length).
IMAGE_CALL_ARGUMENTS: tuple[tuple[str, str], ...] = (
    ("prompt", "prompt"), ("seed", "seed"), ("steps", "num_inference_steps"), ("width", "width"), ("height", "height"))
# ... for a family whose guidance is true classifier-free guidance
CFG_CALL_ARGUMENTS = IMAGE_CALL_ARGUMENTS + (("guidance", "cfg_scale"),)
# ``LayerNaming.diffusers_names`` of a DiT whose layers already carry diffusers' module names
DIFFUSERS_NAMES_AS_THEY_ARE: tuple[tuple[str, str], ...] = ((r"(.+)", r"\1"),)


def import_dotted(dotted: str) -> Any:
    """The object a dotted path names ("package.module.Class")."""
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def importable(dotted: str) -> bool:
    """Whether ``dotted`` names an object that imports (a class another library version renamed does not)."""
    try:
        import_dotted(dotted)
    except (ImportError, AttributeError):
        return False
    return True


@dataclass(frozen=True)
class Component:
    """A model file of a checkpoint (its key in the configuration and in ``ResolvedCheckpoint.files``)."""

    name: str  # "text_encoder_t5"
    attribute: str  # the pipeline attribute DiffSynth loads it into ("text_encoder_2")
    disk_offload: bool = False  # left in its file by ``disk_offload`` (the big ones)
    # (pipeline attribute, DiffSynth ``model_name``) of each model its file provides, what swapping
    # the component between schemes fetches from DiffSynth's model pool (FLUX.1's VAE file gives
    # the encoder and the decoder); () = not known yet: a scheme cannot swap it (the DiT falls
    # back on ``ModelFamily.dit_registry_name``)
    models: tuple[tuple[str, str], ...] = ()
    # a checkpoint may leave it out (Wan2.1 has no second DiT); ``families.family_of`` drops it then
    optional: bool = False


@dataclass(frozen=True)
class Tokenizer:
    """A tokenizer folder of a checkpoint, given to ``from_pretrained`` as a ``ModelConfig``."""

    name: str  # "tokenizer_clip"
    argument: str  # the ``from_pretrained`` keyword ("tokenizer_1_config")
    estimated_bytes: int  # the doctor's estimate for a folder not downloaded yet


@dataclass(frozen=True)
class VramLayers:
    """DiffSynth's VRAM-management wrappers of a DiT's linear layers (``diffsynth/core/vram/layers.py``),
    by class name: the scheme check tells a managed or quantized layer by them."""

    storage: str = "AutoWrappedLinear"  # casts its stored weight to the computation dtype per forward
    quantized: str = "AutoWrappedQuantizedModule"  # holds the quantized layer as ``.module``
    # casts a whole module (its ``.module``) per forward: a model class's map may wrap a block holding
    # linear layers (T5's feed-forward), whose layers are then managed without being ``storage``
    module: str = "AutoWrappedModule"


def _match_prefix(pattern: str, name: str) -> re.Match[str] | None:
    """``pattern`` matched against the whole of ``name`` or a dotted prefix of it."""
    return re.match(rf"(?:{pattern})(?=\.|$)", name)


@dataclass(frozen=True)
class LayerNaming:
    """How the sweep groups the DiT's linear layers (``layer_groups.py``) and names them for diffusers."""

    block_lists: tuple[tuple[str, str], ...]  # DiT block list attribute -> kind ("blocks", "joint block")
    diffusers_class: str  # the diffusers transformer whose module names ``skip_modules_pattern`` uses
    diffusers_blocks: tuple[tuple[str, str], ...]  # DiffSynth block list -> diffusers block list
    # (regex of a DiffSynth layer name, its diffusers module name with \1 for the block index);
    # a fused layer as an alternation of the diffusers modules it holds
    diffusers_names: tuple[tuple[str, str], ...] = ()
    # (regex of a layer's name after its block prefix, its role in the block: what a sweep at
    # ``layer`` granularity keeps in bf16 together, e.g. "attn", "img-mlp", "modulation"); the
    # regex matches the whole name or a dotted prefix of it; the first entry that matches wins; a
    # layer none matches is a role of its own (its name)
    block_roles: tuple[tuple[str, str], ...] = ()
    # the layers outside the blocks: (regex of the layer's name or of a dotted prefix of it, the
    # group's kind ("embedders", "final layer", "modulation"), its group at ``block`` granularity,
    # at ``layer`` granularity with \1 for the regex's first group); first match wins; a layer
    # none matches is grouped by its name's first part, kind "other"
    outside_groups: tuple[tuple[str, str, str, str], ...] = ()

    def block_kind(self, block_list: str) -> str | None:
        return dict(self.block_lists).get(block_list)

    def role(self, rest: str) -> str:
        """The role of a block's layer, ``rest`` its name after the block prefix ("attn.to_q")."""
        for pattern, role in self.block_roles:
            if _match_prefix(pattern, rest):
                return role
        return rest

    def outside_group(self, layer: str, granularity: str) -> tuple[str, str]:
        """(group, kind) of a layer outside the blocks at ``granularity`` ("block" or "layer")."""
        for pattern, kind, block_group, layer_group in self.outside_groups:
            found = _match_prefix(pattern, layer)
            if found:
                return (block_group if granularity == "block" else found.expand(layer_group)), kind
        return layer.split(".")[0], "other"

    def diffusers_block(self, block_list: str) -> str | None:
        return dict(self.diffusers_blocks).get(block_list)

    def diffusers_name(self, layer: str) -> str | None:
        for pattern, name in self.diffusers_names:
            if re.match(f"^{pattern}$", layer):
                return re.sub(f"^{pattern}$", name, layer)
        return None


@dataclass(frozen=True)
class DamageTargets:
    """The tensors ``tools/degrade.py`` damages, by their names in DiffSynth's state dicts."""

    block: str  # a transformer block's prefix, with {block} for its index ("blocks.{block}.")
    attention_out: tuple[str, ...]  # in a block: the attention output projection's tensors
    feed_forward_in: str  # in a block: the feed-forward input's weight
    text_embedders: tuple[str, ...]  # prefixes of the DiT's text-conditioning embedders
    # the final projection's bias (None: it has none, so COLOUR_SHIFT cannot be planted); latent
    # channel c's patch positions are c * patch_positions + k, or with ``channel_last`` k * channels + c
    final_bias: str | None
    patch_positions: int  # latent positions per patch (2x2 -> 4)
    decoder_out_bias: str  # the VAE file's last decoder convolution's bias: R, G, B
    channel_last: bool = False  # the DiT's output features are ordered (patch position, channel)
    # (component, block prefix with {block}) of the text encoder ``text-encoder-noise`` damages in
    # that component's file; None: not named for this family
    text_encoder: tuple[str, str] | None = None

    def channel_positions(self, channel: int, features: int) -> list[int]:
        """Indices of latent channel ``channel`` in the final bias of ``features`` entries."""
        if self.channel_last:
            channels = features // self.patch_positions
            return [k * channels + channel for k in range(self.patch_positions)]
        return list(range(channel * self.patch_positions, (channel + 1) * self.patch_positions))


@dataclass(frozen=True)
class ModelClass:
    """One DiffSynth model class of a synthetic checkpoint, and the registry entry that makes
    DiffSynth recognise its tensors (``tools/synthetic.py``)."""

    component: str  # the file it goes into
    model_class: str  # dotted path, built with ``kwargs``
    registry_name: str  # DiffSynth's ``model_name`` (what ``fetch_model`` asks for)
    kwargs: tuple[tuple[str, Any], ...] = ()  # constructor keywords, also the registry's ``extra_kwargs``
    prefix: str = ""  # its tensor names' prefix in a file shared with another class ("encoder.")
    converter: str | None = None  # the registry's ``state_dict_converter`` (dotted path)
    # the file has its own tensor names, so every tensor is stored once: a tied one (T5's shared
    # embedding table) by its first name
    untied: bool = True
    # dotted path of a function returning more constructor keywords (for values DiffSynth's
    # constructors need as lists, which a frozen ModelClass cannot hold: the tinies' ``vae_kwargs``)
    kwargs_factory: str | None = None
    # dotted path of a function renaming the module's state dict to the file's layout (a released
    # file in Hugging Face layout that ``converter`` maps back: Qwen-Image's text encoder)
    to_file: str | None = None

    def constructor_kwargs(self) -> dict[str, Any]:
        """What the class is built with, also the registry entry's ``extra_kwargs``."""
        made = import_dotted(self.kwargs_factory)() if self.kwargs_factory else {}
        return {**made, **dict(self.kwargs)}


@dataclass(frozen=True)
class Anchor:
    """A published figure for orientation (other code, other GPUs), never a limit."""

    precision: str  # "bf16" | "float8_e4m3fn"
    cpu_offload: bool
    figure: str
    source: str


@dataclass(frozen=True)
class Architecture:
    """One size of a family for synthetic checkpoints of random weights (``doctor --shapes``)."""

    name: str  # the ``--shapes`` value ("tiny")
    label: str  # in sentences ("the tiny checkpoint's")
    classes: tuple[ModelClass, ...]
    t5_sequence_length: int = 512
    published: tuple[Anchor, ...] = ()  # figures measured elsewhere at this size


@dataclass(frozen=True)
class EmbeddedTiny:
    """The family's tiny checkpoint shipped in quant_guard (``embedded = NAME`` in the
    configuration; ``config.families.EMBEDDED`` has its render settings)."""

    name: str  # "tiny-qwen-image"
    # dotted path of the function that builds it into the cache once and returns its files (an
    # object whose ``components()`` maps each of the family's component names to its path)
    ensure: str
    # dotted path of the function that registers its classes with DiffSynth (model hashes and
    # VRAM-management entries), so that DiffSynth recognises its files
    register: str

    def built(self) -> Any:
        """Its written files (``TinyFamilyFiles`` or the FLUX.1 tiny's), built first if needed."""
        return import_dotted(self.ensure)()

    def files(self) -> dict[str, Any]:
        """Component name -> path, built first if needed."""
        return dict(self.built().components())

    def register_with_diffsynth(self) -> None:
        import_dotted(self.register)()


@dataclass(frozen=True)
class ModelFamily:
    """What one DiffSynth pipeline family needs that others do not. A new family is a module in
    this package exporting ``FAMILY``; nothing outside it changes."""

    name: str  # "flux"
    label: str  # in sentences ("FLUX.1")
    pipeline_class: str  # dotted path of the DiffSynth pipeline
    components: tuple[Component, ...]  # model files, in the order their ModelConfigs are given
    tokenizers: tuple[Tokenizer, ...]
    dit_registry_name: str  # DiffSynth's model_pool name of the DiT (a DiT swap fetches it)
    # RenderRequest field -> the pipeline's ``__call__`` keyword, in golden-metadata order; a
    # family that takes more (negative_prompt, cfg_scale, num_frames) maps those request fields too
    call_arguments: tuple[tuple[str, str], ...]
    scheduler_name: str  # recorded in golden metadata: another scheduler makes a golden stale
    layer_naming: LayerNaming
    damage: DamageTargets
    architectures: tuple[Architecture, ...] = ()  # the first is the full size
    vram_layers: VramLayers = field(default_factory=VramLayers)
    decode_method: str = "vae_output_to_image"  # the pipeline method that turns the VAE output into the image
    # dotted path of a function writing the tokenizer folders of a synthetic checkpoint (one path
    # per tokenizer, in ``tokenizers`` order), with ids that fit any architecture size
    tokenizer_writer: str = ""
    # the family of a checkpoint that names none (one family says so; ``family_of``)
    default: bool = False
    tiny: EmbeddedTiny | None = None  # its embedded tiny checkpoint
    # (class path a DiffSynth VRAM-management map names, the same class's path in newer
    # transformers): a map entry that no longer imports fails every offloaded build
    # (``pipelines.repair_vram_maps``)
    module_renames: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if DIT not in self.model_components:
            raise ValueError(f"model family {self.name!r}: no {DIT!r} component")

    @property
    def model_components(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components)

    def having(self, present: Collection[str]) -> ModelFamily:
        """This family without the optional components a checkpoint does not name (``present``:
        the names it does)."""
        kept = tuple(c for c in self.components if not c.optional or c.name in present)
        return self if kept == self.components else replace(self, components=kept)

    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        raise ValueError(f"model family {self.name!r} has no component {name!r}; known: "
                         f"{', '.join(self.model_components)}")

    def loaded_models(self, name: str) -> tuple[tuple[str, str], ...]:
        """(pipeline attribute, DiffSynth model name) of each model component ``name``'s file
        provides; a ``ValueError`` when the family does not say (it cannot be swapped then)."""
        c = self.component(name)
        if c.models:
            return c.models
        if name == DIT:
            return ((c.attribute, self.dit_registry_name),)
        raise ValueError(f"model family {self.name!r} does not name DiffSynth's model name of its {name!r} "
                         f"component (Component.models in its family module), so a scheme cannot load it "
                         "on its own; quantize the DiT only, or add the name")

    @property
    def disk_components(self) -> tuple[str, ...]:
        """What ``disk_offload`` leaves in the files."""
        return tuple(c.name for c in self.components if c.disk_offload)

    @property
    def tokenizer_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tokenizers)

    @property
    def component_names(self) -> tuple[str, ...]:
        """Every file or folder of a checkpoint: the model components, then the tokenizers."""
        return self.model_components + self.tokenizer_names

    def pipeline_type(self) -> type:
        """The DiffSynth pipeline class (imports DiffSynth)."""
        return import_dotted(self.pipeline_class)

    def builds(self, pipe: object) -> bool:
        """Whether ``pipe`` is (a subclass of) this family's pipeline, by dotted name (no import)."""
        return any(f"{c.__module__}.{c.__qualname__}" == self.pipeline_class for c in type(pipe).__mro__)

    def call_kwargs(self, request: object) -> dict[str, Any]:
        """The pipeline's call keywords for a ``model.render.RenderRequest``."""
        return {keyword: getattr(request, field_name) for field_name, keyword in self.call_arguments}

    def golden_parameters(self, request: object) -> dict[str, Any]:
        """What a golden is rendered with, by request field name, and the scheduler."""
        return {**{name: getattr(request, name) for name, _ in self.call_arguments},
                "scheduler": self.scheduler_name}

    @property
    def full_size(self) -> Architecture:
        return self.architectures[0]

    def architecture(self, name: str) -> Architecture:
        for arch in self.architectures:
            if arch.name == name:
                return arch
        raise ValueError(f"model family {self.name!r} has no architecture {name!r}; known: "
                       f"{', '.join(a.name for a in self.architectures)}")
