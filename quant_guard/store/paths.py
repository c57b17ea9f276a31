"""Where quant_guard keeps files that are not part of a project: caches of built checkpoints,
converted LPIPS weights and file hashes."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "QUANT_GUARD_CACHE"


def cache_dir() -> Path:
    """The cache root: ``$QUANT_GUARD_CACHE`` if set, else ``$XDG_CACHE_HOME/quant_guard``
    (``~/.cache/quant_guard``)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "quant_guard"
