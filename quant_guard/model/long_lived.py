"""Keep Python's garbage collector off the objects that torch and DiffSynth leave on import.

Importing them creates about 550,000 objects the collector tracks (modules, classes, functions,
registries) that live until the process ends and can never be garbage. Every full collection
walks all of them, about 0.3 s on a CPU, and a pytest session makes several: pytest (9.2 here)
collects twice at its end to report unraisable exceptions, each DiT swap collects to hand the
old weights back (``pipelines.release_memory``), and the interpreter collects on its own as
objects pile up. ``gc.freeze()`` moves the objects alive at that moment into the permanent
generation, which collections skip; objects made afterwards (pipelines, tensors, images) are
collected as before.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_frozen = False


@contextmanager
def frozen_after() -> Iterator[None]:
    """Run the heavy imports in the ``with`` block, then freeze what they created; once per process.

    Before the block a full collection (cheap while the heap is small) frees the garbage that
    earlier tests left, then everything alive is frozen; after it, what the imports created is
    frozen too. A pipeline built afterwards is never frozen, so releasing it still frees its memory.
    """
    global _frozen
    if _frozen:
        yield
        return
    gc.collect()
    gc.freeze()
    yield
    gc.freeze()
    _frozen = True

