"""Does the tiny checkpoint's meaning check see a picture of something else? Before and after it
read shape, position and size.

Every caption of the tiny dataset is rendered in bf16 (the golden) and in float8_e4m3fn (the
candidates), one seed, through ``quant_guard.model.pipelines.build_pipeline`` and
``quant_guard.model.render.render``. Each golden is judged (``quant_guard.judge.semantic.judge``, the rule the
gate applies) against:

- right: the float8 render of its own caption (must be kept);
- wrong shape: the float8 renders of the same caption with each other shape;
- wrong position: the same with each other position;
- half size, 1.8x size: its float8 render magnified about its position
  (``quant_guard.tools.degrade.zoom_image``);
- speck: a 5x5 px square of the caption's colour at its position on its background.

"before" is the rule the scorer had as ``tiny-colours``: the candidate's shape and background
colours (``dataset.read_colours``) are the caption's, or the golden's. "after" is
``TinySceneScorer``. It prints, per kind of candidate, how many were judged "meaning kept" before
and after, split by the caption's shape; the read-back's margins on the right renders; and what
the scorer said on the issue's three examples.

Usage: python benchmarks/tiny_meaning.py [--seed 0] [--steps 8]
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from dataclasses import replace
from typing import Any

import numpy as np

os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")

from quant_guard.tools.degrade import zoom_image  # noqa: E402
from quant_guard.model.pipelines import build_pipeline  # noqa: E402
from quant_guard.model.render import RenderRequest, render  # noqa: E402
from quant_guard.config.schemes import FLOAT8_E4M3FN, REFERENCE  # noqa: E402
from quant_guard.judge.semantic import TinySceneScorer, Verdict  # noqa: E402
from quant_guard.judge import scenes as ds  # noqa: E402
from quant_guard.model.tiny.build import ensure_tiny_checkpoint  # noqa: E402
from quant_guard.model.checkpoints import tiny_resolved

KINDS = ("right", "wrong shape", "wrong position", "half size", "1.8x size", "speck")
ZOOMS = {"half size": 0.5, "1.8x size": 1.8}
SPECK = 5  # px
EXAMPLES = (  # the issue's: a golden caption and a candidate that is not it
    ("a red circle on a blue background at the top left", "a red square on a blue background at the bottom right"),
    ("a red circle on a blue background at the top left", "a red triangle on a blue background in the center"),
    ("a red circle on a blue background at the top left", "speck"),
)


def render_all(scheme: Any, seed: int, steps: int) -> dict[str, np.ndarray]:
    pipe = build_pipeline(tiny_resolved(ensure_tiny_checkpoint()), scheme, "cpu")
    out = {}
    for scene in ds.all_scenes():
        request = RenderRequest(scene.caption, seed, steps, ds.IMAGE_SIZE, ds.IMAGE_SIZE, ds.EMBEDDED_GUIDANCE,
                                ds.T5_SEQUENCE_LENGTH)
        out[scene.caption] = render(pipe, request).image
    return out


def speck(scene: ds.Scene) -> np.ndarray:
    """A ``SPECK`` px square of the caption's colour at its position, on its background."""
    image = np.empty((ds.IMAGE_SIZE, ds.IMAGE_SIZE, 3), dtype=np.uint8)
    image[:] = ds.BACKGROUNDS[scene.background]
    cx, cy = ds.POSITIONS[scene.position]
    image[cy - SPECK // 2:cy + SPECK // 2 + 1, cx - SPECK // 2:cx + SPECK // 2 + 1] = ds.COLOURS[scene.colour]
    return image


def candidates(scene: ds.Scene, float8: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    own = float8[scene.caption]
    return {
        "right": [own],
        "wrong shape": [float8[replace(scene, shape=s).caption] for s in ds.SHAPES if s != scene.shape],
        "wrong position": [float8[replace(scene, position=p).caption] for p in ds.POSITIONS if p != scene.position],
        **{kind: [zoom_image(own, factor, ds.POSITIONS[scene.position])] for kind, factor in ZOOMS.items()},
        "speck": [speck(scene)],
    }


def kept_before(golden: np.ndarray, candidate: np.ndarray, scene: ds.Scene) -> bool:
    """The former ``tiny-colours`` rule: the candidate's colours are the caption's or the golden's."""
    read = ds.read_colours(candidate)
    return read == (scene.colour, scene.background) or read == ds.read_colours(golden)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=ds.RECOMMENDED_STEPS)
    args = parser.parse_args(argv)

    bf16, float8 = render_all(REFERENCE, args.seed, args.steps), render_all(FLOAT8_E4M3FN, args.seed, args.steps)
    scorer = TinySceneScorer()
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])  # (kind, shape) -> before, after, n
    scores: dict[str, list[float]] = defaultdict(list)
    for scene in ds.all_scenes():
        golden = bf16[scene.caption]
        g = scorer.verdict(golden, scene.caption)
        for kind, images in candidates(scene, float8).items():
            for image in images:
                c = scorer.verdict(image, scene.caption)
                for key in ((kind, scene.shape), (kind, "all")):
                    counts[key][0] += kept_before(golden, image, scene)
                    counts[key][1] += scorer.candidate_agrees(g, c)
                    counts[key][2] += 1
                scores[kind].append(c.score or 0.0)
    print_tables(counts, scores)
    print_margins(bf16, float8)
    print_examples(scorer, bf16, float8)
    return 0


def print_tables(counts: dict[tuple[str, str], list[int]], scores: dict[str, list[float]]) -> None:
    print("\nmeaning kept, before (colours only) -> after (tiny-scene), golden bf16, candidates float8:")
    print("| candidate | all captions | " + " | ".join(ds.SHAPES) + " | after: score, mean [min, max] |")
    print("|---" * (len(ds.SHAPES) + 3) + "|")
    for kind in KINDS:
        cells = []
        for shape in ("all", *ds.SHAPES):
            before, after, n = counts[(kind, shape)]
            cells.append(f"{before}/{n} -> {after}/{n}")
        s = scores[kind]
        print(f"| {kind} | " + " | ".join(cells) + f" | {np.mean(s):.2f} [{min(s):.1f}, {max(s):.1f}] |")


def print_margins(bf16: dict[str, np.ndarray], float8: dict[str, np.ndarray]) -> None:
    for name, renders in (("bf16", bf16), ("float8", float8)):
        readings = [(ds.parse_caption(c), ds.read_scene(image)) for c, image in renders.items()]
        sizes = [r.size for _, r in readings]
        offsets = [float(np.hypot(r.centre[0] - ds.POSITIONS[s.position][0], r.centre[1] - ds.POSITIONS[s.position][1]))
                   for s, r in readings]
        misread = defaultdict(int)
        for s, r in readings:
            for miss in r.misses(s):
                misread[miss] += 1
        print(f"\n{name} renders of their own caption ({len(readings)}): size read {min(sizes):.2f}-{max(sizes):.2f} "
              f"(accepted {ds.SIZE_RANGE[0]}-{ds.SIZE_RANGE[1]}), centre off its position by at most "
              f"{max(offsets):.1f} px (accepted {ds.POSITION_TOLERANCE}), read otherwise than the caption: "
              f"{dict(misread) or 'none'}")
    for kind, factor in ZOOMS.items():
        sizes = [ds.read_scene(zoom_image(image, factor, ds.POSITIONS[ds.parse_caption(c).position])).size
                 for c, image in float8.items()]
        print(f"{kind} (float8 x{factor}): size read {min(sizes):.2f}-{max(sizes):.2f}")


def print_examples(scorer: TinySceneScorer, bf16: dict[str, np.ndarray], float8: dict[str, np.ndarray]) -> None:
    print("\nthe issue's examples:")
    for caption, other in EXAMPLES:
        scene = ds.parse_caption(caption)
        image = speck(scene) if other == "speck" else float8[other]
        g: Verdict = scorer.verdict(bf16[caption], caption)
        c = scorer.verdict(image, caption)
        verdict = "kept" if scorer.candidate_agrees(g, c) else "LOST"
        print(f"  golden {caption!r}, candidate {other!r}: before "
              f"{'kept' if kept_before(bf16[caption], image, scene) else 'LOST'}, after {verdict} "
              f"(score {c.score:.1f}: {c.detail})")


if __name__ == "__main__":
    raise SystemExit(main())
