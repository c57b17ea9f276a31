"""Semantic checks for the scorecard's "meaning": does an image still show what its prompt asks for?

A scorer judges one image against a prompt; ``judge`` runs it on the golden and the candidate.
Scorers are looked up by name in ``SCORERS`` (``register`` adds one):

- ``tiny-scene`` (also ``tiny-colours``, its former name): for the embedded tiny checkpoint, the
  read-back of its dataset (``quant_guard.judge.scenes.read_scene``): the shape, its colour, the
  background colour, the position and the size agree with the caption.
- ``clip``: a CLIP-type text-image score (Hessel et al.'s CLIPScore, 2.5 x max(cosine, 0)) with
  a model the user installed locally (``QG_CLIP_MODEL`` or ``ClipScorer(path)``: a folder that
  transformers' ``CLIPModel.from_pretrained`` reads offline). An image agrees with its prompt when
  the prompt outscores unrelated control captions; the candidate keeps the meaning when it agrees
  and its score is at least the golden's minus ``CLIP_MARGIN``; a golden that does not agree is
  an error (the model cannot vouch).

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
CLIP_CONTROL_MARGIN = 0.05  # CLIPScore units: how far an image's prompt must score above unrelated captions
# Unrelated captions ("controls"), scenes few prompts ask for: a model that scores every caption alike
# cannot get a prompt above them. (How far a real CLIP model puts a matching caption above them was
# not measured here: no CLIP weights on this machine; pass ``controls`` for prompts that are these.)
CLIP_CONTROLS: tuple[str, ...] = (
    "a page of printed text", "a bowl of soup on a table", "a car parked on a street", "a dog lying on grass",
    "an empty room with white walls",
)
_CLIP_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_CLIP_PROCESSOR = ("preprocessor_config.json", "processor_config.json")  # the name transformers 5 writes, and before


class ScorerUnavailable(RuntimeError):
    """A semantic scorer was asked for and cannot run (unknown name, package or weights missing)."""


@dataclass(frozen=True)
class Verdict:
    """One image against its prompt: what was read, and a score where the scorer has one."""

    agrees: bool
    detail: str
    score: float | None = None
    reading: tuple[tuple[str, str], ...] = ()  # (attribute, word read), for a scorer that reads named ones
    misses: tuple[str, ...] = ()  # the attributes of ``reading`` that disagree with the prompt


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


class TinySceneScorer:
    """The tiny dataset's own read-back (``quant_guard.judge.scenes.read_scene``): shape, colour,
    background, position and size, each against the caption.

    The score is the share of those five attributes read as the caption says; an image agrees with
    its caption at 1.0 (every one). A candidate keeps the golden's meaning when every attribute
    it reads otherwise than the caption is read the same way in the golden: where the model cannot
    draw the caption (a blob for a cross), it must draw what its golden drew."""

    name = "tiny-scene"

    def verdict(self, image: np.ndarray, prompt: str) -> Verdict:
        from quant_guard.judge.scenes import parse_caption, read_scene

        try:
            scene = parse_caption(prompt)
        except ValueError:
            raise ScorerUnavailable(f"scorer {self.name!r} reads only the tiny dataset's captions "
                                    f"('a red circle on a blue background at the top left'), not {prompt!r}") from None
        reading = read_scene(image)
        words = reading.attributes()
        misses = reading.misses(scene)
        detail = reading.describe() + (f" (not as asked: {', '.join(misses)})" if misses else "")
        return Verdict(not misses, detail, 1.0 - len(misses) / len(words), tuple(words.items()), misses)

    def candidate_agrees(self, golden: Verdict, candidate: Verdict) -> bool:
        kept = dict(golden.reading)
        return all(value == kept.get(key) for key, value in candidate.reading if key in candidate.misses)


class ClipScorer:
    """CLIPScore of image and prompt with a locally installed CLIP model (never downloaded).

    A model that scores every caption alike would keep every candidate's meaning, so each image
    is also scored against ``controls``, captions unrelated to it: an image agrees with its prompt
    when the prompt's CLIPScore is at least ``CLIP_CONTROL_MARGIN`` above the controls' mean. A
    golden that does not is a golden the model cannot read: the scorer refuses to vouch
    (``ScorerUnavailable``, an error) rather than pass or fail its candidates."""

    name = "clip"

    def __init__(self, path: str | Path | None = None, controls: tuple[str, ...] = CLIP_CONTROLS) -> None:
        where = path if path is not None else os.environ.get(CLIP_ENV)
        if not where:
            raise ScorerUnavailable(f"scorer 'clip' needs a local CLIP model folder: set {CLIP_ENV} or pass its path")
        self.path = Path(where)
        if not self.path.is_dir():
            raise ScorerUnavailable(f"scorer 'clip': model folder {self.path} does not exist")
        if not controls:
            raise ScorerUnavailable("scorer 'clip' needs control captions to tell a reading model from a constant one")
        self.controls = controls
        wanted = ("config.json", _CLIP_PROCESSOR, ("tokenizer.json", "vocab.json"), _CLIP_WEIGHTS)
        missing = [" or ".join(names) for names in (((w,) if isinstance(w, str) else w) for w in wanted)
                   if not any((self.path / name).is_file() for name in names)]
        if missing:
            raise ScorerUnavailable(f"scorer 'clip': {self.path} lacks {', '.join(missing)}")
        try:
            from transformers import CLIPModel, CLIPProcessor
        except ImportError as exc:
            raise ScorerUnavailable(f"scorer 'clip' needs the transformers package ({exc})") from None
        self._model = CLIPModel.from_pretrained(str(self.path), local_files_only=True).eval()
        self._processor = CLIPProcessor.from_pretrained(str(self.path), local_files_only=True)

    def scores(self, image: np.ndarray, captions: list[str]) -> list[float]:
        """CLIPScore (2.5 x max(cosine, 0)) of ``image`` with each caption."""
        import torch

        inputs = self._processor(text=captions, images=[image], return_tensors="pt", padding=True, truncation=True)
        with torch.no_grad():
            out = self._model(**inputs)
        cos = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds)
        return [2.5 * max(float(c), 0.0) for c in cos]

    def verdict(self, image: np.ndarray, prompt: str) -> Verdict:
        score, *controls = self.scores(image, [prompt, *self.controls])
        control = sum(controls) / len(controls)
        agrees = score >= control + CLIP_CONTROL_MARGIN
        return Verdict(agrees, f"CLIPScore {score:.3f} (unrelated captions {control:.3f})", score)

    def candidate_agrees(self, golden: Verdict, candidate: Verdict) -> bool:
        if not golden.agrees:
            raise ScorerUnavailable(
                f"scorer 'clip' cannot vouch for this case's meaning: on the golden, {golden.detail}: its prompt scores "
                f"less than {CLIP_CONTROL_MARGIN} above unrelated captions, so the model in {self.path} does not "
                "tell what the picture shows")
        return candidate.agrees and (candidate.score or 0.0) >= (golden.score or 0.0) - CLIP_MARGIN


SCORERS: dict[str, Callable[[], SemanticScorer]] = {
    TinySceneScorer.name: TinySceneScorer,
    "tiny-colours": TinySceneScorer,  # its name before it read shape, position and size
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
