"""Where a model file comes from: a local path, or a DiffSynth model id and file pattern."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ComponentSource:
    """One model file or folder: a local path, or a DiffSynth ``model_id`` + ``origin_file_pattern``
    that DiffSynth downloads where there is network."""

    path: Path | None = None
    model_id: str | None = None
    origin_file_pattern: str | None = None

    def describe(self) -> str:
        return str(self.path) if self.path else f"{self.model_id}:{self.origin_file_pattern}"
