"""Semantic checks for the scorecard's "meaning": does an image still show what its prompt asks for?

A scorer judges one image against a prompt; ``judge`` runs it on the golden and the candidate.
Scorers are looked up by name in ``SCORERS`` (``register`` adds one):

- ``tiny-colours``: for the embedded tiny checkpoint, the colour read-back of its dataset
  (``quant_guard.tiny.dataset``): shape colour and background colour agree with the caption.
- ``clip``: a CLIP-type text-image score (Hessel et al.'s CLIPScore, 2.5 x max(cosine, 0)) with
  a model the user installed locally (``QG_CLIP_MODEL`` or ``ClipScorer(path)``: a folder that
  transformers' ``CLIPModel.from_pretrained`` reads offline). The candidate agrees when its score
  is at least the golden's minus ``CLIP_MARGIN``.

A scorer that is asked for and cannot run raises ``ScorerUnavailable`` naming what is missing:
a meaning check never passes silently.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

CLIP_ENV = "QG_CLIP_MODEL"
CLIP_MARGIN = 0.05  # CLIPScore units: a candidate may score this much below its golden
_CLIP_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


class ScorerUnavailable(RuntimeError):
    """A semantic scorer was asked for and cannot run (unknown name, package or weights missing)."""


@dataclass(frozen=True)
class Verdict:
    """One image against its prompt: what was read, and a score where the scorer has one."""

    agrees: bool
    detail: str
    score: float | None = None


@runtime_checkable
class SemanticScorer(Protocol):
    name: str

    def verdict(self, image: np.ndarray, prompt: str) -> Verdict: ...

    def candidate_agrees(self, golden: Verdict, candidate: Verdict) -> bool: ...


@dataclass(frozen=True)
class MeaningScore:
    scorer: str
    golden: Verdict
    candidate: Verdict
    agrees: bool  # the candidate keeps the golden's meaning (the scorer's own rule)

    def describe(self) -> str:
        g, c = self.golden, self.candidate
        if self.agrees and g.agrees and c.agrees:
            return f"{c.detail}: golden and candidate agree with the prompt ({self.scorer})"
        if self.agrees:
            return f"candidate {c.detail}, golden {g.detail}: the golden's reading is kept ({self.scorer})"
        return f"LOST: candidate {c.detail}, golden {g.detail} ({self.scorer})"


def judge(scorer: SemanticScorer, golden: np.ndarray, candidate: np.ndarray, prompt: str) -> MeaningScore:
    g, c = scorer.verdict(golden, prompt), scorer.verdict(candidate, prompt)
    return MeaningScore(scorer=scorer.name, golden=g, candidate=c, agrees=scorer.candidate_agrees(g, c))


class TinyColourScorer:
    """Shape and background colour read back from the image (the tiny dataset's own check)."""

    name = "tiny-colours"

    def verdict(self, image: np.ndarray, prompt: str) -> Verdict:
        from quant_guard.tiny.dataset import parse_caption, read_colours

        try:
            scene = parse_caption(prompt)
        except ValueError:
            raise ScorerUnavailable(f"scorer {self.name!r} reads only the tiny dataset's captions "
                                    f"('a red circle on a blue background at the top left'), not {prompt!r}") from None
        shape, background = read_colours(image)
        agrees = shape == scene.colour and background == scene.background
        return Verdict(agrees, f"shape {shape or 'missing'}, background {background}")

    def candidate_agrees(self, golden: Verdict, candidate: Verdict) -> bool:
        return candidate.agrees or candidate.detail == golden.detail


class ClipScorer:
    """CLIPScore of image and prompt with a locally installed CLIP model (never downloaded)."""

    name = "clip"

    def __init__(self, path: str | Path | None = None) -> None:
        where = path if path is not None else os.environ.get(CLIP_ENV)
        if not where:
            raise ScorerUnavailable(f"scorer 'clip' needs a local CLIP model folder: set {CLIP_ENV} or pass its path")
        self.path = Path(where)
        if not self.path.is_dir():
            raise ScorerUnavailable(f"scorer 'clip': model folder {self.path} does not exist")
        missing = [f for f in ("config.json", "preprocessor_config.json") if not (self.path / f).is_file()]
        if not any((self.path / t).is_file() for t in ("tokenizer.json", "vocab.json")):
            missing.append("tokenizer.json or vocab.json")
        if not any((self.path / w).is_file() for w in _CLIP_WEIGHTS):
            missing.append(" or ".join(_CLIP_WEIGHTS))
        if missing:
            raise ScorerUnavailable(f"scorer 'clip': {self.path} lacks {', '.join(missing)}")
        try:
            from transformers import CLIPModel, CLIPProcessor
        except ImportError as exc:
            raise ScorerUnavailable(f"scorer 'clip' needs the transformers package ({exc})") from None
        self._model = CLIPModel.from_pretrained(str(self.path), local_files_only=True).eval()
        self._processor = CLIPProcessor.from_pretrained(str(self.path), local_files_only=True)

    def verdict(self, image: np.ndarray, prompt: str) -> Verdict:
        import torch

        inputs = self._processor(text=[prompt], images=[image], return_tensors="pt", padding=True, truncation=True)
        with torch.no_grad():
            out = self._model(**inputs)
        cos = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds).item()
        score = 2.5 * max(cos, 0.0)
        return Verdict(score > 0.0, f"CLIPScore {score:.3f}", score)

    def candidate_agrees(self, golden: Verdict, candidate: Verdict) -> bool:
        return (candidate.score or 0.0) >= (golden.score or 0.0) - CLIP_MARGIN


SCORERS: dict[str, Callable[[], SemanticScorer]] = {
    TinyColourScorer.name: TinyColourScorer,
    ClipScorer.name: ClipScorer,
}


def register(name: str, factory: Callable[[], SemanticScorer]) -> None:
    """Make a scorer available by name (a factory: it may raise ``ScorerUnavailable`` when built)."""
    SCORERS[name] = factory


def get_scorer(name: str) -> SemanticScorer:
    """Build the scorer ``name``; ``ScorerUnavailable`` names what is missing."""
    try:
        factory = SCORERS[name]
    except KeyError:
        raise ScorerUnavailable(f"unknown semantic scorer {name!r}; known: {', '.join(sorted(SCORERS))}") from None
    return factory()
