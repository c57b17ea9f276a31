"""The scorecard on real renders of the tiny checkpoint: colour-shift damage moves the colour
dimension beyond what honest float8 does, and the meaning check reads the caption back from both."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file

from quant_guard.checkpoints import ResolvedCheckpoint
from quant_guard.degrade import Degradation, degrade
from quant_guard.schemes import FLOAT8_E4M3FN, REFERENCE, Scheme
from quant_guard.pipelines import build_pipeline
from quant_guard.render import RenderRequest, render
from quant_guard.scorecard import compute_scorecard
from quant_guard.semantic import TinyColourScorer
from quant_guard.tiny import dataset as ds
from quant_guard.tiny.build import ensure_tiny_checkpoint

CAPTION = "a red circle on a blue background at the top left"


def _render(candidate: Path | None, scheme: Scheme) -> np.ndarray:
    t = ensure_tiny_checkpoint()
    files = {"dit": t.dit, "text_encoder_clip": t.text_encoder_clip, "text_encoder_t5": t.text_encoder_t5,
             "vae": t.vae, "tokenizer_clip": t.tokenizer_clip, "tokenizer_t5": t.tokenizer_t5}
    pipe = build_pipeline(ResolvedCheckpoint("tiny", dict(files), {scheme.id: candidate} if candidate else {},
                                             ds.T5_SEQUENCE_LENGTH), scheme, "cpu")
    request = RenderRequest(CAPTION, 0, ds.RECOMMENDED_STEPS, ds.IMAGE_SIZE, ds.IMAGE_SIZE, ds.EMBEDDED_GUIDANCE,
                            ds.T5_SEQUENCE_LENGTH)
    return render(pipe, request).image


def test_colour_shift_damage_moves_colour_beyond_honest_float8(tmp_path: Path) -> None:
    golden = _render(None, REFERENCE)
    honest = compute_scorecard(golden, _render(None, FLOAT8_E4M3FN), prompt=CAPTION,
                               scorer=TinyColourScorer())
    damaged_dit = tmp_path / "dit.safetensors"
    save_file(degrade(load_file(str(ensure_tiny_checkpoint().dit)), Degradation.COLOUR_SHIFT), str(damaged_dit))
    damaged = compute_scorecard(golden, _render(damaged_dit, FLOAT8_E4M3FN), prompt=CAPTION,
                                scorer=TinyColourScorer())
    # benchmarks/tiny_scorecard.py, 24 other pairs: honest ΔE p95 at most 1.57, colour-shift 1.43 to 9.55
    assert honest.colour.delta_e_p95 < 1.6
    assert damaged.colour.delta_e_p95 > max(2.0, 3 * honest.colour.delta_e_p95)
    assert honest.meaning is not None and honest.meaning.agrees and honest.meaning.golden.agrees
    assert damaged.meaning is not None and damaged.meaning.agrees  # the shape and background keep their colour names
