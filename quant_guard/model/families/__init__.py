"""The model-family seam: what differs between DiffSynth pipelines, behind one small interface.

A family (``base.ModelFamily``) says which pipeline class to build; the components of a
checkpoint, which pipeline attribute each lands in and which stay on disk under ``disk_offload``;
the tokenizers; the DiT's DiffSynth registry name (a DiT swap fetches it); the VRAM-management
layer classes the scheme check inspects; the pipeline's call keywords for a render request; the
scheduler recorded in golden metadata; how the sweep groups the DiT's layers and names them for
diffusers; and the sizes of synthetic checkpoints (``doctor --shapes``). The rest of quant_guard
asks the family and never names one: FLUX.1 (``flux.py``, the embedded tiny checkpoint's family)
is the first; Qwen-Image, Z-Image, FLUX.2 or Wan video would each be one more module here.

Every module of this package but ``base`` is a family that exports ``FAMILY``; ``family(name)``
finds it. Importing a family imports neither torch nor DiffSynth.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from quant_guard.model.families.base import ModelFamily


class UnknownModelFamily(ValueError):
    """A family name no module of this package declares."""


@functools.cache
def families() -> dict[str, ModelFamily]:
    """Every family of this package by name (each module but ``base`` exports ``FAMILY``)."""
    found: dict[str, ModelFamily] = {}
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if module == "base":
            continue
        declared = getattr(importlib.import_module(f"{__name__}.{module}"), "FAMILY", None)
        if not isinstance(declared, ModelFamily):
            raise TypeError(f"{__name__}.{module} exports no FAMILY (a ModelFamily)")
        if declared.name in found:
            raise ValueError(f"two model families are named {declared.name!r}")
        found[declared.name] = declared
    defaults = [f.name for f in found.values() if f.default]
    if len(defaults) != 1:
        raise ValueError(f"exactly one model family must be the default, found {defaults or 'none'}")
    return found


def family(name: str) -> ModelFamily:
    """The family called ``name``; an unknown name is an error listing the known ones."""
    known = families()
    if name not in known:
        raise UnknownModelFamily(f"unknown model family {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def default_family() -> ModelFamily:
    """The family of a checkpoint that names none."""
    return next(f for f in families().values() if f.default)


def family_of(checkpoint: object | None = None) -> ModelFamily:
    """The family of a checkpoint (a ``CheckpointSpec``, a ``ResolvedCheckpoint`` or None): the
    one its ``family`` attribute names (the configuration's ``family`` key), else the default,
    without the optional components it does not have. This is the one place that reads it."""
    name = getattr(checkpoint, "family", None)
    found = family(name) if name else default_family()
    # a spec names its components (none when embedded), a resolved checkpoint its files
    present = getattr(checkpoint, "files", None) or getattr(checkpoint, "components", None) or {}
    return found.having(present)


def embedded_family(embedded: str) -> ModelFamily:
    """The family whose embedded tiny checkpoint is called ``embedded``."""
    for candidate in families().values():
        if candidate.tiny is not None and candidate.tiny.name == embedded:
            return candidate
    known = [f.tiny.name for f in families().values() if f.tiny is not None]
    raise UnknownModelFamily(f"no model family ships an embedded checkpoint {embedded!r}; known: {', '.join(known)}")


def family_of_pipeline(pipe: object) -> ModelFamily:
    """The family whose pipeline class ``pipe`` is an instance of."""
    for candidate in families().values():
        if candidate.builds(pipe):
            return candidate
    raise TypeError(f"no model family builds a {type(pipe).__module__}.{type(pipe).__qualname__}; known pipelines: "
                    f"{', '.join(f.pipeline_class for f in families().values())}")
