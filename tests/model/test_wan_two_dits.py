"""Wan2.2 A14B's two DiTs on the tiny Wan: a checkpoint naming a second DiT file (``dit2``, the
low-noise expert) loads it as ``pipe.dit2``, a scheme quantizes both DiTs alike, a DiT swap between
schemes reloads both, and the scheme check refuses a pipeline where only one is quantized. The
second DiT file is the tiny's DiT with one tensor changed (no second checkpoint write)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from family_support import INT8
from helpers import REAL_CACHE

from quant_guard.config.families import SECOND_DIT
from quant_guard.config.schemes import FLOAT8_E4M3FN, REFERENCE
from quant_guard.store.paths import CACHE_ENV

DIT_LINEARS = 26  # the tiny Wan DiT's linear layers (tiny_wan/FACTS.md)
MARKED = "blocks.0.ffn.0.weight"  # the tensor that tells the second DiT file from the first


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from safetensors.torch import load_file, save_file

    from quant_guard.model.checkpoints import ResolvedCheckpoint
    from quant_guard.model.tiny_wan.build import ensure_tiny_wan

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(REAL_CACHE))
        files = ensure_tiny_wan()
    state = load_file(str(files.dit))
    state[MARKED] = -state[MARKED]
    dit2 = tmp_path_factory.mktemp("a14b") / "low_noise.safetensors"
    save_file(state, str(dit2))
    return ResolvedCheckpoint("tiny-wan-a14b", {**files.components(), SECOND_DIT: dit2}, {}, 512, family="wan")


@pytest.fixture(scope="module")
def bf16(checkpoint: Any) -> Any:
    from quant_guard.model.pipelines import build_pipeline

    return build_pipeline(checkpoint, REFERENCE, "cpu")


def test_the_second_dit_file_loads_as_dit2_after_the_first(checkpoint: Any, bf16: Any) -> None:
    import torch
    from safetensors.torch import load_file

    from quant_guard.model.families import family_of
    from quant_guard.model.render import component_bytes

    assert family_of(checkpoint).model_components == ("dit", SECOND_DIT, "text_encoder", "vae")
    second = load_file(str(checkpoint.files[SECOND_DIT]))[MARKED]
    assert torch.equal(bf16.dit2.blocks[0].ffn[0].weight, second)
    assert not torch.equal(bf16.dit.blocks[0].ffn[0].weight, second)
    sizes = component_bytes(bf16)
    assert sizes[SECOND_DIT] == sizes["dit"] > 0


@pytest.mark.parametrize("scheme", [FLOAT8_E4M3FN, INT8], ids=lambda s: s.id)
def test_a_scheme_quantizes_both_dits_alike(checkpoint: Any, scheme: Any) -> None:
    from quant_guard.model.pipelines import build_pipeline
    from quant_guard.model.scheme_check import inventory

    pipe = build_pipeline(checkpoint, scheme, "cpu")  # the scheme check has run on both
    dit, dit2 = inventory(pipe.dit).formats(), inventory(pipe.dit2).formats()
    assert dit == dit2 and sum(dit.values()) == DIT_LINEARS, (dit, dit2)
    assert all(("int8" in fmt.lower()) if scheme is INT8 else fmt == "float8_e4m3fn" for fmt in dit), dit


def test_a_dit_swap_reloads_both_and_the_check_refuses_one_left_in_bf16(checkpoint: Any) -> None:
    from quant_guard.model.checkpoints import CheckpointError
    from quant_guard.model.families import family_of
    from quant_guard.model.pipelines import (build_pipeline, changed_components, check_components, default_plan,
                                             swap_components)
    from quant_guard.model.scheme_check import inventory

    pipe = build_pipeline(checkpoint, REFERENCE, "cpu")  # its own: swapped below
    bf16_dit2 = pipe.dit2
    changed = changed_components(checkpoint, REFERENCE, FLOAT8_E4M3FN)
    assert changed == ("dit", SECOND_DIT)
    swap_components(pipe, checkpoint, FLOAT8_E4M3FN, default_plan(FLOAT8_E4M3FN, "cpu", family_of(checkpoint)), changed)
    assert inventory(pipe.dit2).formats() == {"float8_e4m3fn": DIT_LINEARS}
    pipe.dit2 = bf16_dit2  # only the high-noise DiT quantized
    with pytest.raises(CheckpointError, match=r"second DiT \(dit2\) is not what the scheme says"):
        check_components(pipe, checkpoint, FLOAT8_E4M3FN)


def test_a_checkpoint_without_a_second_dit_has_no_dit2_component() -> None:
    """Wan2.1 (and the embedded tiny Wan): ``dit2`` is optional, so nothing loads, plans or checks it."""
    from quant_guard.model.checkpoints import ResolvedCheckpoint
    from quant_guard.model.families import family, family_of

    files = {name: Path(name) for name in ("dit", "text_encoder", "vae", "tokenizer")}
    wan21 = family_of(ResolvedCheckpoint("wan21", files, {}, 512, family="wan"))
    assert wan21.model_components == ("dit", "text_encoder", "vae")
    assert family("wan").model_components == ("dit", SECOND_DIT, "text_encoder", "vae")
    assert family_of(ResolvedCheckpoint("flux", {}, {}, 512)) is family("flux")  # nothing optional: the same one


def test_a_prequantized_dit_file_without_one_for_the_second_dit_is_refused(checkpoint: Any) -> None:
    """The configuration refuses it; a caller building the pipeline directly gets the same answer
    before DiffSynth registers the bf16 second DiT as pre-quantized."""
    import dataclasses

    from quant_guard.config.schemes import Quantization, Scheme
    from quant_guard.model.checkpoints import CheckpointError
    from quant_guard.model.pipelines import build_pipeline

    scheme = Scheme("pre", quantization=Quantization("torchao_int8_w8a16", load_prequantized=True))
    own_dit = dataclasses.replace(checkpoint, scheme_dits={"pre": checkpoint.files["dit"]})
    with pytest.raises(CheckpointError, match="loads a pre-quantized file, but gives none for dit2"):
        build_pipeline(own_dit, scheme, "cpu")
