"""The quantization method names the installed DiffSynth knows, read without importing it.

``diffsynth.core.quant.QUANT_METHODS`` is filled when DiffSynth's backend modules are imported,
which imports torch (tens of seconds on a cold start). A scheme name is checked while the
configuration is parsed, before any of that, so the names are read from the backend sources'
``register_quant_method("name", ...)`` calls instead; ``tests/config/test_schemes.py`` checks the two
agree. A name a typo away from a known one gets a "did you mean".
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import re
from pathlib import Path

_REGISTER = re.compile(r"""^register_quant_method\(\s*["']([A-Za-z0-9_.-]+)["']""", re.MULTILINE)


@functools.cache
def known_methods() -> frozenset[str] | None:
    """Every method DiffSynth's backends register, or None when DiffSynth is not installed or its
    layout is not the one this reads (then names are left to the scheme probe at collection)."""
    spec = importlib.util.find_spec("diffsynth")  # a top-level find_spec imports nothing
    if spec is None or not spec.submodule_search_locations:
        return None
    names: set[str] = set()
    for root in spec.submodule_search_locations:
        for source in sorted((Path(root) / "core" / "quant" / "backends").glob("*.py")):
            names.update(_REGISTER.findall(source.read_text(encoding="utf-8")))
    return frozenset(names) or None


def did_you_mean(name: str, choices: tuple[str, ...] | frozenset[str]) -> str:
    """``'; did you mean X?'`` for the closest choice, or "" when none is close."""
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""
