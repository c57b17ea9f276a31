"""The sensitivity sweep's parts that need no render: layer groups, their diffusers names, the
margin, the greedy recommendation and the printed scheme entry."""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quant_guard.model.layer_groups import diffusers_name, diffusers_patterns, group_layers
from quant_guard.judge.metrics import ImageMetrics
from quant_guard.config.schemes import Quantization, Scheme
from quant_guard.tools.sweep import (Answer, CaseMeasure, GroupResult, SweepError, Variant, _recommend, metric_margins,
                               parse_entry, scheme_entry, sweep_scheme)
from quant_guard.tools.sweep_text import toml_entry
from quant_guard.config.thresholds import ThresholdOverrides, Thresholds

# The tiny DiT's linear layers in module order (quant_guard/model/tiny/architecture.py).
TINY_LINEARS = [
    "time_embedder.timestep_embedder.0", "time_embedder.timestep_embedder.2",
    "guidance_embedder.timestep_embedder.0", "guidance_embedder.timestep_embedder.2",
    "pooled_text_embedder.0", "pooled_text_embedder.2", "context_embedder", "x_embedder",
    *(f"blocks.{i}.{n}" for i in range(2) for n in (
        "norm1_a.linear", "norm1_b.linear", "attn.a_to_qkv", "attn.b_to_qkv", "attn.a_to_out", "attn.b_to_out",
        "ff_a.0", "ff_a.2", "ff_b.0", "ff_b.2")),
    *(f"single_blocks.{i}.{n}" for i in range(2) for n in ("norm.linear", "to_qkv_mlp", "proj_out")),
    "final_norm_out.linear", "final_proj_out",
]
# FluxTransformer2DModel's linear layers of the same parts (diffusers' module names).
DIFFUSERS_LINEARS = [
    "time_text_embed.timestep_embedder.linear_1", "time_text_embed.guidance_embedder.linear_2",
    "time_text_embed.text_embedder.linear_1", "context_embedder", "x_embedder",
    "transformer_blocks.1.norm1.linear", "transformer_blocks.1.norm1_context.linear",
    "transformer_blocks.1.attn.to_q", "transformer_blocks.1.attn.to_k", "transformer_blocks.1.attn.to_v",
    "transformer_blocks.1.attn.add_q_proj", "transformer_blocks.1.attn.to_out.0",
    "transformer_blocks.1.attn.to_add_out", "transformer_blocks.1.ff.net.0.proj", "transformer_blocks.1.ff.net.2",
    "transformer_blocks.1.ff_context.net.0.proj", "transformer_blocks.10.attn.to_q",
    "single_transformer_blocks.0.norm.linear", "single_transformer_blocks.0.attn.to_q",
    "single_transformer_blocks.0.proj_mlp", "single_transformer_blocks.0.proj_out", "norm_out.linear", "proj_out",
]


def test_block_groups_are_the_blocks_the_embedders_and_the_final_layer() -> None:
    groups = group_layers(TINY_LINEARS, "block")
    assert [(g.name, g.kind, len(g.layers)) for g in groups] == [
        ("embedders", "embedders", 8), ("blocks.0", "joint block", 10), ("blocks.1", "joint block", 10),
        ("single_blocks.0", "single block", 3), ("single_blocks.1", "single block", 3), ("final", "final layer", 2)]
    assert sorted(n for g in groups for n in g.layers) == sorted(TINY_LINEARS)  # a partition


def test_layer_groups_split_blocks_by_role() -> None:
    groups = {g.name: g.layers for g in group_layers(TINY_LINEARS, "layer")}
    assert groups["blocks.1/attn-qkv"] == ("blocks.1.attn.a_to_qkv", "blocks.1.attn.b_to_qkv")
    assert groups["blocks.1/attn-out"] == ("blocks.1.attn.a_to_out", "blocks.1.attn.b_to_out")
    assert groups["blocks.1/ff"] == ("blocks.1.ff_a.0", "blocks.1.ff_a.2", "blocks.1.ff_b.0", "blocks.1.ff_b.2")
    assert groups["blocks.1/modulation"] == ("blocks.1.norm1_a.linear", "blocks.1.norm1_b.linear")
    assert groups["single_blocks.0/qkv-mlp"] == ("single_blocks.0.to_qkv_mlp",)
    assert groups["single_blocks.0/out"] == ("single_blocks.0.proj_out",)
    assert groups["single_blocks.0/modulation"] == ("single_blocks.0.norm.linear",)
    assert groups["x_embedder"] == ("x_embedder",) and groups["final/proj"] == ("final_proj_out",)
    assert len(groups) == 5 + 2 * 4 + 2 * 3 + 2
    with pytest.raises(ValueError, match="granularity"):
        group_layers(TINY_LINEARS, "head")


def _skipped(patterns: tuple[str, ...]) -> list[str]:
    """What diffusers' layerwise casting leaves in bf16: it tests every prefix of a name."""
    def hit(name: str) -> bool:
        parts = name.split(".")
        return any(re.search(p, ".".join(parts[:i])) for i in range(1, len(parts) + 1) for p in patterns)

    return [name for name in DIFFUSERS_LINEARS if hit(name)]


def test_diffusers_patterns_name_exactly_the_kept_layers() -> None:
    blocks = {g.name: g for g in group_layers(TINY_LINEARS, "block")}
    patterns, unknown = diffusers_patterns([blocks["blocks.1"]])
    assert patterns == (r"^transformer_blocks\.1$",) and unknown == ()
    assert _skipped(patterns) == [n for n in DIFFUSERS_LINEARS if n.startswith("transformer_blocks.1.")]
    layers = {g.name: g for g in group_layers(TINY_LINEARS, "layer")}
    patterns, _ = diffusers_patterns([layers["blocks.1/attn-qkv"], layers["single_blocks.0/qkv-mlp"],
                                      layers["final/modulation"]])
    assert _skipped(patterns) == [
        "transformer_blocks.1.attn.to_q", "transformer_blocks.1.attn.to_k", "transformer_blocks.1.attn.to_v",
        "transformer_blocks.1.attn.add_q_proj", "single_transformer_blocks.0.attn.to_q",
        "single_transformer_blocks.0.proj_mlp", "norm_out.linear"]
    patterns, _ = diffusers_patterns([blocks["embedders"], blocks["final"]])
    assert _skipped(patterns) == [n for n in DIFFUSERS_LINEARS if not n.startswith(("transformer", "single"))]
    assert diffusers_name("blocks.3.some_new_layer") is None
    assert diffusers_patterns([group_layers(["blocks.0.lora_up"], "layer")[0]]) == ((), ("blocks.0.lora_up",))


def test_margins_measure_distance_inside_the_target_in_the_same_units() -> None:
    target = Thresholds(lpips_max=0.01, ssim_min=0.9, psnr_min=30.0)
    m = metric_margins(ImageMetrics(lpips=0.001, ssim=0.99, psnr=40.0), target)
    # ten times less error than allowed is the same margin for every metric: ln 10
    assert m["LPIPS"] == pytest.approx(math.log(10)) and m["SSIM"] == pytest.approx(math.log(10))
    assert m["PSNR"] == pytest.approx(math.log(10))
    outside = metric_margins(ImageMetrics(lpips=0.02, ssim=0.8, psnr=20.0), target)
    assert all(v < 0 for v in outside.values())
    identical = metric_margins(ImageMetrics(lpips=0.0, ssim=1.0, psnr=math.inf), target)
    assert all(v == math.inf for v in identical.values())
    assert metric_margins(ImageMetrics(lpips=math.nan, ssim=0.99, psnr=40.0), target)["LPIPS"] == -math.inf


NF4 = Scheme("nf4", quantization=Quantization("bitsandbytes_nf4", exclude_modules=("x_embedder",)))


def _variant(label: str, psnr: float, target: float = 38.0) -> Variant:
    metrics = ImageMetrics(lpips=0.001, ssim=0.99, psnr=psnr)
    margin = (psnr - target) * math.log(10) / 10
    return Variant(label, Quantization("bitsandbytes_nf4"), 1000, (CaseMeasure("c-s0", metrics, psnr >= target, margin),),
                   0.1)


def _group(name: str, kept_psnr: float, extra: int, full: Variant) -> GroupResult:
    from quant_guard.model.layer_groups import LayerGroup

    kept = _variant(f"{name} kept", kept_psnr)
    return GroupResult(LayerGroup(name, "joint block", (f"{name}.a", f"{name}.b")), extra * 2, extra, kept,
                       _variant(f"{name} alone", 45.0), kept.margin - full.margin)


@dataclass
class _FakeRun:
    """Stands in for the sweep's run: a greedy step's result is looked up by how many groups it keeps."""

    step_psnr: dict[int, float]
    scheme: Scheme = NF4
    measured: list[tuple[str, Quantization]] = field(default_factory=list)

    def quantization(self, *, exclude: tuple[str, ...] = (), target: tuple[str, ...] | None = None) -> Quantization:
        return Quantization("bitsandbytes_nf4", exclude_modules=NF4.quantization.exclude_modules + exclude)

    def measure(self, label: str, quantization: Quantization, *, keep_images: bool = False) -> Variant:
        self.measured.append((label, quantization))
        kept = (len(quantization.exclude_modules) - 1) // 2
        return _variant(label, self.step_psnr.get(kept, 39.0))


def test_greedy_takes_the_cheapest_group_that_is_enough_alone(tmp_path: Path) -> None:
    full = _variant("full", 35.0)
    ranked = (_group("blocks.1", 39.5, 900, full), _group("blocks.0", 38.5, 800, full),
              _group("final", 36.0, 50, full))
    run = _FakeRun({})
    rec = _recommend(run, full, ranked, ThresholdOverrides(psnr=38.0), tmp_path / "pyproject.toml")  # type: ignore[arg-type]
    assert rec.answer is Answer.KEEP and rec.groups == ("blocks.0",) and rec.extra_bytes == 800
    assert rec.exclude_modules == ("x_embedder", "blocks.0.a", "blocks.0.b")  # the scheme's own exclusions kept
    assert [label for label, _ in run.measured] == ["confirming run"] and rec.confirmed
    assert rec.entry == {"id": "nf4-mixed", "method": "bitsandbytes_nf4",
                         "exclude_modules": ["x_embedder", "blocks.0.a", "blocks.0.b"], "thresholds": {"psnr": 38.0}}


def test_greedy_grows_the_set_by_gain_per_byte_until_it_meets_the_target(tmp_path: Path) -> None:
    full = _variant("full", 30.0)
    ranked = (_group("blocks.1", 36.0, 1000, full), _group("final", 31.0, 10, full),
              _group("blocks.0", 34.0, 1000, full), _group("embedders", 29.0, 1, full))  # embedders: no gain
    run = _FakeRun({2: 37.0, 3: 38.5})
    rec = _recommend(run, full, ranked, ThresholdOverrides(psnr=38.0), tmp_path / "pyproject.toml")  # type: ignore[arg-type]
    assert rec.answer is Answer.KEEP and rec.groups == ("final", "blocks.1", "blocks.0")
    assert [s.label for s in rec.steps] == ["greedy: 2 groups kept in bf16", "greedy: 3 groups kept in bf16"]
    assert [s.meets for s in rec.steps] == [False, True] and rec.confirm is not None


def test_no_subset_is_said_when_the_greedy_search_runs_out(tmp_path: Path) -> None:
    full = _variant("full", 30.0)
    ranked = (_group("blocks.1", 36.0, 1000, full), _group("blocks.0", 34.0, 1000, full),
              _group("final", 30.0, 10, full))
    rec = _recommend(_FakeRun({2: 37.0}), full, ranked, ThresholdOverrides(psnr=38.0),  # type: ignore[arg-type]
                     tmp_path / "pyproject.toml")
    assert rec.answer is Answer.NO_SUBSET and rec.confirm is None and not rec.confirmed
    assert "no subset of the 3 groups reaches the target (greedy search)" in rec.note
    assert "still misses on 1 of 1 cases" in rec.note
    everything = (_group("blocks.1", 36.0, 1000, full), _group("blocks.0", 34.0, 1000, full))
    rec = _recommend(_FakeRun({}), full, everything, ThresholdOverrides(psnr=38.0),  # type: ignore[arg-type]
                     tmp_path / "pyproject.toml")
    assert rec.answer is Answer.NO_SUBSET and "only keeping every group, i.e. no quantization" in rec.note
    already = _recommend(_FakeRun({}), _variant("full", 40.0), ranked, ThresholdOverrides(psnr=38.0),  # type: ignore[arg-type]
                         tmp_path / "pyproject.toml")
    assert already.answer is Answer.ALREADY_MEETS and already.confirmed


def test_the_printed_entry_parses_back_into_the_same_scheme(tmp_path: Path) -> None:
    base = Scheme("my-nf4", quantization=Quantization("bitsandbytes_nf4", mode="dequant_once",
                                                      target_modules=("blocks.0.ff_a.0", "blocks.1.ff_a.0"),
                                                      backend_config_kwargs=(("blocksize", 128), ("odd key", True))),
                  thresholds=ThresholdOverrides(lpips=0.02))
    entry = scheme_entry(base, ("blocks.1.ff_a.0",), ThresholdOverrides(psnr=38.0))
    text = toml_entry(entry)
    parsed = tomllib.loads(f"schemes = [\n{text}\n]")["schemes"][0]
    assert parsed == entry
    scheme = parse_entry(parsed, tmp_path / "pyproject.toml")
    assert scheme.quantization == Quantization("bitsandbytes_nf4", mode="dequant_once",
                                               target_modules=("blocks.0.ff_a.0", "blocks.1.ff_a.0"),
                                               exclude_modules=("blocks.1.ff_a.0",),
                                               backend_config_kwargs=(("blocksize", 128), ("odd key", True)))
    assert scheme.thresholds == ThresholdOverrides(lpips=0.02, psnr=38.0) and scheme.id == "my-nf4-mixed"


def test_only_quantization_methods_can_be_swept() -> None:
    from quant_guard.config.project import CheckpointSpec
    from quant_guard.config.schemes import FLOAT8_E4M3FN

    spec = CheckpointSpec(id="tiny", embedded="tiny", components={}, schemes=(FLOAT8_E4M3FN, NF4))
    assert sweep_scheme(spec, "nf4") is NF4
    assert sweep_scheme(spec, "torchao_int8_w8a16").quantization == Quantization("torchao_int8_w8a16")
    with pytest.raises(SweepError, match="needs a quantization method applied on load"):
        sweep_scheme(spec, "float8_e4m3fn")
    with pytest.raises(SweepError, match="storage scheme"):
        sweep_scheme(spec, "float8_e5m2")


# ---- the sweep's judgement is the gate's: a scorecard limit decides ------------------------------------

class _Dit:
    """A DiT of two joint blocks of one linear layer each (built in the test: torch is heavy)."""

    def __new__(cls) -> object:
        import torch

        dit = torch.nn.Module()
        dit.blocks = torch.nn.ModuleList(torch.nn.ModuleDict({"ff_a": torch.nn.Linear(4, 4)}) for _ in range(2))
        return dit


def _textured(size: int = 64) -> np.ndarray:
    """Shapes on a gradient with fine grain: an image with detail for the sharpness score."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:size, 0:size]
    image = np.stack([x * 3, y * 3, (x + y) * 2], axis=-1).astype(np.float32)
    image[16:40, 12:36] = (220, 40, 40)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def test_a_scorecard_limit_alone_decides_the_recommendation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep judges as the gate does: a candidate that only a sharpness limit fails (LPIPS, SSIM
    and PSNR within theirs) misses the target, and the block whose quantization softens the image
    is the one kept in bf16. Renders are stand-ins: quantizing blocks.0 softens the golden."""
    from types import SimpleNamespace

    from quant_guard.model import render
    from quant_guard.run import gate
    from quant_guard.config.project import parse_config
    from quant_guard.tools.degrade import soften_image
    from quant_guard.judge.judgement import judge
    from quant_guard.tools.sweep import run_sweep
    from quant_guard.tools.sweep_text import format_sweep

    golden = _textured()
    limits = {"lpips": 0.5, "ssim": 0.5, "psnr": 15.0, "sharpness_min": 0.9}
    config = parse_config({"checkpoints": [{"id": "t", "embedded": "tiny", "schemes": ["bitsandbytes_nf4"]}],
                           "cases": [{"id": "c", "prompt": "p", "thresholds": limits}]}, file=tmp_path / "qg.toml")
    dit = _Dit()

    def fake_render(pipe: Any, request: Any, on_step: Any = None) -> Any:
        q = pipe.quantization
        quantized = [n for n in ("blocks.0.ff_a", "blocks.1.ff_a")
                     if (q.target_modules is None or n in q.target_modules) and n not in q.exclude_modules]
        return SimpleNamespace(image=soften_image(golden) if "blocks.0.ff_a" in quantized else golden)

    session = SimpleNamespace(config=config, progress=None, require_lpips_weights=lambda: None,
                              resolved=lambda spec: SimpleNamespace(t5_sequence_length=16),
                              pipeline=lambda spec, scheme: SimpleNamespace(dit=dit, quantization=scheme.quantization))
    monkeypatch.setattr(gate, "golden_for", lambda s, vc: (SimpleNamespace(image=golden), None))
    monkeypatch.setattr(render, "render", fake_render)

    # the softened image is within the LPIPS, SSIM and PSNR limits: only the scorecard's sharpness fails it
    soft = judge(golden, soften_image(golden), config.cases[0].thresholds.apply(config.thresholds), prompt="p")
    assert [c.key for c in soft.failed] == ["sharpness_min"]
    result = run_sweep(session, "t", "bitsandbytes_nf4")  # type: ignore[arg-type]
    assert not result.full.meets and result.full.failed_limits == ("sharpness",)
    assert [g.group.name for g in result.groups][0] == "blocks.0" and result.groups[0].kept.meets
    rec = result.recommendation
    assert rec.answer is Answer.KEEP and rec.groups == ("blocks.0",) and rec.confirmed
    text = format_sweep(result)
    assert "sharpness >= 0.9" in text.splitlines()[1]  # the target line names the scorecard limit
    assert "misses the target on 1 of 1 cases (sharpness)" in text
    assert result.as_dict()["full"]["cases"][0]["failed"][0].startswith("sharpness")
